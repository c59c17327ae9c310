"""Root test configuration: load every server plugin in ``tests/servers``."""

from __future__ import annotations

import pathlib

pytest_plugins = sorted(
    f"tests.servers.{path.stem}"
    for path in (pathlib.Path(__file__).parent / "servers").glob("*.py")
    if path.stem != "__init__"
)
