"""Shared pieces of tqmon's UI tests: a source replaying a recording, a fake command gate, and
helpers to build the app with a frozen clock and wait until the recording is folded.

The recording is the data side's ``incident.jsonl`` (a real ``tqmon demo`` session) when it
exists, else ``synthetic.jsonl`` (``make_synthetic.py``). Hostile-string tests always use
``synthetic.jsonl``, which carries terminal escapes and Rich markup in real events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from tqmon.app import TqmonApp
from tqmon.contracts import Action, ActionResult, EventBatch, LinkStatus
from tqmon.record import read_recording
from tqmon.screens.base import ViewScreen

DATA = Path(__file__).parent / "data"
INCIDENT = DATA / "incident.jsonl"
SYNTHETIC = DATA / "synthetic.jsonl"
RECORDING = INCIDENT if INCIDENT.exists() else SYNTHETIC
SIZE = (160, 48)


class FakeSource:
    """Posts a recording's items at once, as they were recorded (link states included), then
    returns; ``hold=True`` keeps running until cancelled (a live source that went quiet)."""

    def __init__(self, items: Sequence[tuple[float, object]], hold: bool = False) -> None:
        self.items = list(items)
        self.hold = hold
        self.done = threading.Event()

    def run(self, post: Callable[[object], None], cancelled: Callable[[], bool]) -> None:
        for _, item in self.items:
            if cancelled():
                return
            post(item)
        self.done.set()
        while self.hold and not cancelled():
            threading.Event().wait(0.02)


class FakeGate:
    """Records every call; tiers follow ``tqmon.gate.CommandGate``'s rules."""

    def __init__(self, read_only: bool = False) -> None:
        self.calls: list[Action] = []
        self.described: list[Action] = []
        self.reasons: list[str] = []
        self.read_only = read_only

    def describe(self, action: Action) -> str:
        self.described.append(action)
        return f"tqcore control {action.kind} {' '.join(action.targets)}".strip()

    def tier(self, action: Action) -> int:
        n = len(action.targets)
        if action.kind == "purge":
            return 3
        if action.kind in ("revoke", "retry", "rate_limit"):
            return 1 if n == 1 else 2
        if action.kind in ("pool_grow", "pool_shrink"):
            return 1
        return 2

    def run(self, action: Action, *, reason: str = "") -> ActionResult:
        self.calls.append(action)
        self.reasons.append(reason)
        if self.read_only:
            return ActionResult(action, False, "refused", refused=f"read-only: {action.kind}")
        return ActionResult(action, True, "1 ok, 1 no reply",
                            replies={"demo1@vm": {"ok": "done"}}, no_reply=("demo2@vm",))

    def set_read_only(self) -> None:
        self.read_only = True


def load(path: Path = RECORDING) -> list[tuple[float, object]]:
    """The recording's items."""
    return list(read_recording(path))


def make_app(path: Path = RECORDING, *, gate: Any = None, read_only: bool = False,
             extra: Sequence[object] = (), hold: bool = False) -> TqmonApp:
    """The app replaying ``path`` (plus ``extra`` items) with the clock frozen at its end."""
    items = load(path)
    last = items[-1][0]
    items += [(last, item) for item in extra]
    app = TqmonApp(source_factory=lambda: FakeSource(items, hold=hold), gate=gate,
                   read_only=read_only, broker_label="sqlite:///test.db", clock=lambda: last)
    app.theme = "textual-dark"
    return app


async def settle(pilot: Pilot[Any], app: TqmonApp) -> None:
    """Wait until the source posted everything and the app folded and drew it."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()
    app.action_force_refresh()
    await pilot.pause()


async def press_keys(pilot: Pilot[Any], app: TqmonApp, *keys: str) -> None:
    """Press ``keys`` one at a time; after each, wait until a view that appeared is mounted and
    focused (on a loaded machine a new screen may still be mounting when the next key comes)."""
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
        for _ in range(200):
            screen = app.screen
            if not isinstance(screen, ViewScreen) or (screen.ready and screen.focused):
                break
            await pilot.pause(0.01)


def batch(events: Sequence[dict[str, Any]], at: float) -> EventBatch:
    """An event batch received at ``at``."""
    return EventBatch(tuple(events), at)


def link(state: str, **kwargs: Any) -> LinkStatus:
    """A link status for the test broker."""
    return LinkStatus(state, "sqlite:///test.db", **kwargs)  # type: ignore[arg-type]
