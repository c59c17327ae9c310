"""Regenerate ``screenshots/*.svg``: every tqmon view, from a recording, deterministically.

The recording (``tests/tqmon/data/incident.jsonl`` by default, a real ``tqmon demo`` session)
is replayed at once with the clock frozen at its last item and the time zone set to UTC, so
the same recording always gives the same pictures. Actions shown in dialogs go to a gate that
describes them and never runs anything. Run::

    python3 scripts/screenshots.py [--recording FILE] [--out DIR] [--png]

``--png`` also writes PNGs (needs ``cairosvg``; the SVG's Fira Code font falls back to
DejaVu Sans Mono, so columns stay aligned when Fira Code is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqmon.app import TqmonApp  # noqa: E402
from tqmon.contracts import Action, ActionResult, LinkStatus  # noqa: E402
from tqmon.record import read_recording  # noqa: E402

SIZE = (160, 48)
DEFAULT_RECORDING = ROOT / "tests" / "tqmon" / "data" / "incident.jsonl"
FAILED = ("slash", *"state:FAILURE", "enter")

#: name → keys pressed after the recording is loaded.
SHOTS: dict[str, Sequence[str]] = {
    "overview": ("1",),
    "workers": ("2",),
    "worker-detail": ("2", "enter"),
    "queues": ("3",),
    "tasks": ("4",),
    "task-detail": ("4", *FAILED, "enter"),
    "failures": ("5",),
    "flows": ("6",),
    "flow-graph": ("6", *FAILED, "enter"),
    "flow-tree": ("6", *FAILED, "enter", "t"),
    "events": ("7",),
    "filter-error": ("4", "slash", *"state:FAILURE age>>5m"),
    "help": ("4", "question_mark"),
    "confirm-revoke": ("4", *FAILED, "space", "space", "space", "x"),
    "purge-typed": ("3", "P"),
}


class Recorded:
    """Posts a recording's items as they were recorded (the live link state included)."""

    def __init__(self, items: list[tuple[float, object]]) -> None:
        self.items = items

    def run(self, post: Callable[[object], None], cancelled: Callable[[], bool]) -> None:
        for _, item in self.items:
            if cancelled():
                return
            post(item)


class DryGate:
    """Describes actions like the real gate and never runs them."""

    def describe(self, action: Action) -> str:
        verb = {"purge": "purge", "retry": "retry"}.get(action.kind, f"control {action.kind}")
        shown = " ".join(action.targets[:3]) + (" …" if len(action.targets) > 3 else "")
        return f"tqcore {verb} {shown}"

    def tier(self, action: Action) -> int:
        return 3 if action.kind == "purge" else 2

    def run(self, action: Action, *, reason: str = "") -> ActionResult:
        return ActionResult(action, False, "dry run", refused="screenshots never act")


async def shoot(items: list[tuple[float, object]], name: str, keys: Sequence[str], out: Path,
                extra: Sequence[object] = ()) -> Path:
    """Save one screenshot after pressing ``keys``."""
    last = items[-1][0]
    feed = items + [(last, item) for item in extra]
    app = TqmonApp(source_factory=lambda: Recorded(feed), gate=DryGate(),
                   read_only=name == "help", clock=lambda: last)
    app.theme = "textual-dark"
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:  # one at a time: a new screen mounts before the next key
            await pilot.press(key)
            await pilot.pause(0.05)
        for field in app.screen.query("Input"):
            field.cursor_blink = False  # type: ignore[attr-defined]
        app.action_force_refresh()
        await pilot.pause(0.2)
        return Path(app.save_screenshot(f"{name}.svg", str(out)))


def to_png(svg: Path) -> Path:
    """Convert with cairosvg, using a monospace font that is installed."""
    import cairosvg  # type: ignore[import-untyped]

    text = svg.read_text(encoding="utf-8").replace("Fira Code, monospace", "DejaVu Sans Mono")
    png = svg.with_suffix(".png")
    cairosvg.svg2png(bytestring=text.encode(), write_to=str(png), output_width=1600)
    return png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--png", action="store_true", help="also write PNGs (cairosvg)")
    args = parser.parse_args(argv)
    os.environ["TZ"] = "UTC"
    time.tzset()
    items = list(read_recording(args.recording))
    if not items:
        print(f"{args.recording}: no usable items", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, tuple[Sequence[str], Sequence[Any]]] = {
        name: (keys, ()) for name, keys in SHOTS.items()}
    outage = LinkStatus("disconnected", "sqlite:///srv/tq.db", detail="connection refused",
                        retry_in=8.0, since=items[-1][0] - 42)
    shots["disconnected"] = (("2",), (outage,))
    for name, (keys, extra) in shots.items():
        svg = asyncio.run(shoot(items, name, keys, args.out, extra))
        print(svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg)
        if args.png:
            print(to_png(svg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
