"""Collect every scenario's Markdown row and print the table at the end of the session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

ROWS = pytest.StashKey[list[Any]]()


@pytest.fixture()
def record_row(request: pytest.FixtureRequest) -> Callable[[Any], None]:
    """Append a scenario :class:`~bench.reliability.report.Result` to the session table."""
    rows = request.config.stash.setdefault(ROWS, [])
    return rows.append


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if rows:
        from bench.reliability import report

        terminalreporter.section("reliability fault suite (CI tier)")
        terminalreporter.write_line(report.table(rows))
