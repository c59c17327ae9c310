"""SVG snapshots of every tqmon view at 160x48, from the recording with a frozen clock.

Deterministic: a fixed recording (``tui_helpers.RECORDING``), the clock frozen at its last
item, UTC, a pinned theme, no blinking cursor. Accept changes with ``--snapshot-update`` only
after looking at the report (pytest-textual-snapshot writes an HTML diff on failure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tests.tqmon.tui_helpers import SIZE, FakeGate, link, make_app, press_keys, settle
from tqmon.app import TqmonApp

Before = Callable[[Pilot[Any]], Coroutine[Any, Any, None]]
SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def keys(app: TqmonApp, *pressed: str) -> Before:
    """A ``run_before`` that waits for the recording, then presses ``pressed``."""
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot, app)
        await press_keys(pilot, app, *pressed)
        for field in app.screen.query(Input):
            field.cursor_blink = False
        app.action_force_refresh()
        await pilot.pause()
    return before


def snap(snap_compare: SnapCompare, *pressed: str, **kwargs: Any) -> bool:
    app = make_app(**kwargs)
    return snap_compare(app, terminal_size=SIZE, run_before=keys(app, *pressed))


class TestMainViews:
    """One snapshot per main view (keys 1-7)."""

    def test_overview(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "1")

    def test_workers(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "2")

    def test_queues(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "3")

    def test_tasks(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "4")

    def test_failures(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "5")

    def test_flows(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "6")

    def test_events(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "7")


class TestDrillDowns:
    """Detail views and the flow graph."""

    def test_task_detail(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "4", "slash", *"state:FAILURE", "enter", "enter")

    def test_worker_detail(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "2", "enter")

    def test_flow_graph(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "6", "slash", *"state:FAILURE", "enter", "enter")

    def test_flow_tree(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "6", "slash", *"state:FAILURE", "enter", "enter", "t")


class TestOverlays:
    """Prompts, help, the blast-radius modal, read-only and an outage."""

    def test_filter_error_inline(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "4", "slash", *"state:FAILURE age>>5m")

    def test_help_read_only(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "4", "question_mark", read_only=True)

    def test_bulk_revoke_modal(self, snap_compare: SnapCompare) -> None:
        assert snap(snap_compare, "4", "slash", *"state:FAILURE", "enter", "space", "space",
                    "space", "x", gate=FakeGate())

    def test_disconnected(self, snap_compare: SnapCompare) -> None:
        probe = make_app()
        now = probe.cluster.now()
        outage = link("disconnected", detail="connection refused", retry_in=8.0, since=now - 42)
        assert snap(snap_compare, "2", extra=[outage])
