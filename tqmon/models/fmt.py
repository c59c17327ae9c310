"""Formatting for the views: ages, durations, rates, counts, ids, clock times, state glyphs.

Pure functions, no Textual: every number the UI shows goes through here, so ``3m12s`` means
the same thing in every view. Untrusted strings go through :func:`safe` (``tqcore.text.inert``).
"""

from __future__ import annotations

import time
from typing import Any

from tqcore import states
from tqcore.text import inert

#: Glyph per task state: state never relies on colour alone.
GLYPHS: dict[str | None, str] = {
    states.SUCCESS: "✓",
    states.FAILURE: "✗",
    states.RETRY: "⟳",
    states.STARTED: "▶",
    states.RECEIVED: "…",
    states.PENDING: "…",
    states.REVOKED: "⊘",
    states.REJECTED: "⊘",
    None: "…",
}

#: Tone (a component-class suffix styled in app.tcss) per task state.
STATE_TONES: dict[str | None, str] = {
    states.SUCCESS: "ok",
    states.FAILURE: "err",
    states.RETRY: "warn",
    states.STARTED: "run",
    states.RECEIVED: "info",
    states.PENDING: "dim",
    states.REVOKED: "warn",
    states.REJECTED: "warn",
    None: "dim",
}


def glyph(state: str | None) -> str:
    """The glyph for a task state (custom states show as running)."""
    return GLYPHS.get(state, "▶")


def state_tone(state: str | None) -> str:
    """The tone for a task state."""
    return STATE_TONES.get(state, "run")


def safe(value: Any, max_len: int = 200) -> str:
    """``value`` as inert one-line text (control, bidi and zero-width characters escaped)."""
    if value is None:
        return ""
    return inert(value, max_len=max_len)


def safe_block(value: Any, max_len: int = 20_000) -> str:
    """``value`` as inert multi-line text (tracebacks keep their newlines)."""
    if value is None:
        return ""
    return inert(value, max_len=max_len, newlines=True)


def duration(seconds: float | None) -> str:
    """``0.2s``, ``12s``, ``3m12s``, ``2h05m``, ``3d04h`` (``—`` for None)."""
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f}ms" if s < 0.0995 else f"{s:.1f}s"
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def age(ts: float | None, now: float) -> str:
    """How long ago ``ts`` was (``—`` for None); future times read ``+1.2s``."""
    if ts is None:
        return "—"
    delta = now - ts
    return f"+{duration(-delta)}" if delta < -0.5 else duration(delta)


def rate(per_second: float | None) -> str:
    """``0``, ``0.25/s``, ``3.4/s``, ``120/s``, ``1.2k/s``."""
    if per_second is None:
        return "—"
    r = float(per_second)
    if r == 0:
        return "0"
    if r < 10:
        return f"{r:.2f}/s" if r < 1 else f"{r:.1f}/s"
    if r < 1000:
        return f"{r:.0f}/s"
    return f"{r / 1000:.1f}k/s"


def count(n: int | None) -> str:
    """``1,234`` (``—`` for None)."""
    return "—" if n is None else f"{n:,}"


def short_id(task_id: str | None, width: int = 8) -> str:
    """The first ``width`` characters of an id, inert (ids are untrusted too)."""
    if not task_id:
        return "—"
    text = safe(task_id, max_len=64)
    return text if len(text) <= width else text[:width] + "…"


def clock_time(ts: float | None) -> str:
    """``14:02:11`` in local time (``—`` for None)."""
    if ts is None:
        return "—"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def percent(part: float, whole: float) -> str:
    """``37%`` (``—`` when ``whole`` is 0)."""
    return f"{100.0 * part / whole:.0f}%" if whole else "—"


def bytes_(n: int | None) -> str:
    """``512K``, ``34M``, ``1.2G``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.0f}T"  # pragma: no cover


def drain_eta(depth: int | None, in_rate: float, out_rate: float) -> tuple[str, str]:
    """``(text, tone)`` answering "will this queue drain, and when?".

    ``≈3m12s`` when consumption outpaces arrivals, ``growing +0.4/s`` when it does not,
    ``stalled`` when messages wait and nothing moves, ``—`` for an empty queue.
    """
    if not depth:
        return ("—", "dim") if in_rate <= out_rate or in_rate == 0 else (
            f"growing +{rate(in_rate - out_rate)}", "warn")
    net = out_rate - in_rate
    if net > 1e-9:
        return f"≈{duration(depth / net)}", "ok" if depth / net < 300 else "warn"
    if in_rate > out_rate:
        return f"growing +{rate(in_rate - out_rate)}", "err"
    return "stalled", "err"


SPARK_CHARS = "▁▂▃▄▅▆▇█"


def spark(values: list[float | None], width: int | None = None, stretch: bool = False) -> str:
    """A one-line sparkline; ``None`` values (gaps: no data) draw as ``·``.

    Args:
        values: oldest first.
        width: at most this many cells (the newest values are kept).
        stretch: repeat each value so a short series fills ``width``.
    """
    if width is not None and len(values) > width:
        values = values[-width:]
    elif stretch and width and values:
        times = width // len(values)
        if times > 1:
            values = [v for v in values for _ in range(times)]
    known = [v for v in values if v is not None]
    top = max(known, default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append("·")
        elif top <= 0:
            out.append(SPARK_CHARS[0])
        else:
            out.append(SPARK_CHARS[min(7, int(v / top * 7.999))])
    return "".join(out)


def progress_bar(done: int, total: int, width: int = 10) -> str:
    """``█████░░░░░`` for ``done`` of ``total``."""
    if total <= 0:
        return "░" * width
    filled = min(width, round(width * done / total))
    return "█" * filled + "░" * (width - filled)
