"""Recording a session to JSON lines, and replaying it as a :class:`~tqmon.contracts.Source`.

The format is the one in :mod:`tqmon.contracts`: one posted item per line, in order::

    {"t": 1795271707.7, "kind": "events", "events": [{...}, ...]}
    {"t": 1795271708.0, "kind": "figures", "queues": [{...}], "workers": {...}}
    {"t": 1795271708.0, "kind": "link", "state": "live", "broker": "sqlite:///...", ...}

:class:`Recorder` is a ``post`` callable: give it to a source directly (``tqmon record``) or
tee it beside the UI's post (``Recorder(path, forward=ui_post)``). :class:`ReplaySource`
re-posts a recording with the same spacing, scaled by ``speed``; with ``freeze=True`` it posts
everything at once and stops, so screenshots and tests are deterministic. While replaying,
recorded ``link`` items are re-posted as ``LinkStatus("replay")`` with the recorded state in
``detail`` (the pill shows replay; the recorded outage stays visible).

A recording is untrusted input too: bad lines are skipped and counted, never raised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from tqmon.contracts import BrokerFigures, EventBatch, LinkStatus, Post, QueueFigures

logger = logging.getLogger(__name__)

#: Link states a recording may hold (anything else is read as ``disconnected``).
_LINK_STATES = ("connecting", "live", "degraded", "disconnected", "paused", "replay")
_QUEUE_FIELDS = tuple(f.name for f in dataclasses.fields(QueueFigures))


# -- encoding ------------------------------------------------------------------------------
def encode_item(item: object, t: float | None = None) -> dict[str, Any] | None:
    """The JSON-ready line for a posted item (None for items a recording does not keep)."""
    if isinstance(item, EventBatch):
        return {"t": item.received_at if t is None else t, "kind": "events",
                "events": list(item.events)}
    if isinstance(item, BrokerFigures):
        return {"t": item.at if t is None else t, "kind": "figures",
                "queues": [dataclasses.asdict(q) for q in item.queues],
                "workers": item.workers}
    if isinstance(item, LinkStatus):
        line: dict[str, Any] = {"t": time.time() if t is None else t, "kind": "link",
                                "state": item.state, "broker": item.broker}
        if item.detail:
            line["detail"] = item.detail
        if item.retry_in is not None:
            line["retry_in"] = item.retry_in
        if item.since is not None:
            line["since"] = item.since
        return line
    return None


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _queue(raw: Any) -> QueueFigures | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None
    consumers = raw.get("consumers")
    return QueueFigures(
        name=raw["name"], depth=int(_number(raw.get("depth"))),
        scheduled=int(_number(raw.get("scheduled"))), in_flight=int(_number(raw.get("in_flight"))),
        dead_lettered=int(_number(raw.get("dead_lettered"))),
        oldest_age=_number(raw.get("oldest_age")),
        consumers=int(consumers) if isinstance(consumers, int) and not isinstance(consumers, bool)
        else None)


def decode_item(line: dict[str, Any]) -> tuple[float, object] | None:
    """``(t, item)`` for one parsed recording line, or None when the line is not usable."""
    t = line.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float):
        return None
    t = float(t)
    kind = line.get("kind")
    if kind == "events":
        events = line.get("events")
        if not isinstance(events, list):
            return None
        return t, EventBatch(tuple(e for e in events if isinstance(e, dict)), t)
    if kind == "figures":
        queues = [q for q in (_queue(r) for r in line.get("queues") or []) if q is not None]
        workers = line.get("workers")
        workers = {str(k): v for k, v in workers.items() if isinstance(v, dict)} \
            if isinstance(workers, dict) else {}
        return t, BrokerFigures(tuple(queues), workers, t)
    if kind == "link":
        state = line.get("state")
        retry_in, since = line.get("retry_in"), line.get("since")
        return t, LinkStatus(
            state=state if state in _LINK_STATES else "disconnected",
            broker=str(line.get("broker") or ""), detail=str(line.get("detail") or ""),
            retry_in=_number(retry_in) if retry_in is not None else None,
            since=_number(since) if since is not None else None)
    return None


def read_recording(path: str | os.PathLike[str]) -> Iterator[tuple[float, object]]:
    """``(t, item)`` for every usable line of a recording, in file order.

    Raises:
        OSError: the file cannot be opened.
    """
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                bad += 1
                continue
            decoded = decode_item(line) if isinstance(line, dict) else None
            if decoded is None:
                bad += 1
                continue
            yield decoded
    if bad:
        logger.warning("%s: skipped %d unreadable line(s)", path, bad)


# -- recording -----------------------------------------------------------------------------
class Recorder:
    """A ``post`` callable that appends each item to a JSON-lines file (thread-safe).

    Args:
        path: the recording to write (truncated unless ``append``).
        forward: another ``post`` to pass every item on to (the UI's), if any.
        append: add to an existing recording instead of starting a new one.
        flush_every: seconds between flushes to disk (0: after every line).
        clock: stamps link items (event batches and figures carry their own time).

    Attributes:
        items: lines written so far.
    """

    def __init__(self, path: str | os.PathLike[str], forward: Post | None = None, *,
                 append: bool = False, flush_every: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.forward = forward
        self.flush_every = flush_every
        self.items = 0
        self._lock = threading.Lock()
        self._fh: IO[str] | None = open(  # noqa: SIM115 - closed by close()
            self.path, "a" if append else "w", encoding="utf-8")
        self._last_flush = time.monotonic()

    def __call__(self, item: object) -> None:
        """Write ``item`` (when it is a recordable one), then forward it."""
        line = encode_item(item, self.clock() if isinstance(item, LinkStatus) else None)
        if line is not None:
            text = json.dumps(line, separators=(",", ":"), default=str, ensure_ascii=False)
            with self._lock:
                if self._fh is not None:
                    self._fh.write(text + "\n")
                    self.items += 1
                    now = time.monotonic()
                    if now - self._last_flush >= self.flush_every:
                        self._fh.flush()
                        self._last_flush = now
        if self.forward is not None:
            self.forward(item)

    post = __call__

    def close(self) -> None:
        """Flush and close the file (further posts are only forwarded)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- replay --------------------------------------------------------------------------------
class ReplaySource:
    """Re-post a recording as a live source would (a :class:`~tqmon.contracts.Source`).

    Args:
        path: the recording.
        speed: playback speed factor (2.0 plays twice as fast).
        freeze: post every item at once, then ``LinkStatus("replay")``, and return.
        sleep: the wait function (tests inject a fake).

    The replay's own clock, :meth:`clock`, gives the *recorded* time at this moment of
    playback (the last item's ``t`` once finished or frozen): the UI should fold events into a
    :class:`tqcore.events.State` built with ``clock=source.clock`` so ages and liveness are
    those of the recording, not of today.
    """

    def __init__(self, path: str | os.PathLike[str], speed: float = 1.0, freeze: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.path = Path(path)
        self.speed = speed
        self.freeze = freeze
        self._sleep = sleep
        self._items: list[tuple[float, object]] | None = None
        self._lock = threading.Lock()
        self._now: float | None = None  # recorded time reached so far
        self._wall_anchor: tuple[float, float] | None = None  # (monotonic, recorded t)
        self.finished = False

    def items(self) -> list[tuple[float, object]]:
        """Every usable item of the recording, ``(t, item)`` in order (read once)."""
        if self._items is None:
            self._items = list(read_recording(self.path))
        return self._items

    @property
    def span(self) -> tuple[float, float] | None:
        """``(first t, last t)`` of the recording, None when it is empty."""
        items = self.items()
        return (items[0][0], items[-1][0]) if items else None

    def clock(self) -> float:
        """The recorded epoch time at this moment of the replay."""
        with self._lock:
            anchor, now = self._wall_anchor, self._now
        if anchor is not None and not self.finished:
            mono, t0 = anchor
            return t0 + (time.monotonic() - mono) * self.speed
        if now is not None:
            return now
        span = self.span
        return span[0] if span else time.time()

    def _label(self) -> str:
        return f"replay {self.path.name}"

    def _link(self, recorded: LinkStatus | None, t: float) -> LinkStatus:
        detail = ""
        if recorded is not None:
            detail = f"recorded {recorded.state}"
            if recorded.detail:
                detail += f": {recorded.detail}"
        broker = recorded.broker if recorded is not None and recorded.broker else self._label()
        return LinkStatus("replay", broker, detail=detail, since=t)

    def run(self, post: Post, cancelled: Callable[[], bool]) -> None:
        """Post the recording's items with their recorded spacing until done or cancelled."""
        try:
            items = self.items()
        except OSError as exc:
            post(LinkStatus("disconnected", self._label(), detail=f"cannot read recording: {exc}"))
            return
        if not items:
            post(LinkStatus("replay", self._label(), detail="empty recording"))
            self.finished = True
            return
        first_t = items[0][0]
        broker = next((i.broker for _, i in items if isinstance(i, LinkStatus) and i.broker),
                      self._label())
        if self.freeze:
            last_t = items[-1][0]
            with self._lock:
                self._now = last_t
            self.finished = True
            for t, item in items:
                if cancelled():
                    return
                post(self._link(item, t) if isinstance(item, LinkStatus) else item)
            post(LinkStatus("replay", broker, detail="frozen at end of recording", since=last_t))
            return
        post(LinkStatus("replay", broker, detail=f"×{self.speed:g}", since=first_t))
        start = time.monotonic()
        with self._lock:
            self._wall_anchor = (start, first_t)
        for t, item in items:
            due = start + (t - first_t) / self.speed
            while True:
                if cancelled():
                    return
                wait = due - time.monotonic()
                if wait <= 0:
                    break
                self._sleep(min(wait, 0.1))
            with self._lock:
                self._now = t
            post(self._link(item, t) if isinstance(item, LinkStatus) else item)
        self.finished = True
        post(LinkStatus("replay", broker, detail="end of recording", since=items[-1][0]))


class RecordingSource:
    """Wrap a source so everything it posts is also written to a recording (``--record``).

    Args:
        source: the source to run (usually a ``ClusterSource``).
        path: the recording to write.
        append: add to an existing recording.
    """

    def __init__(self, source: Any, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.source = source
        self.path = Path(path)
        self.append = append

    def run(self, post: Post, cancelled: Callable[[], bool]) -> None:
        """Run the wrapped source, teeing its items into the file."""
        with Recorder(self.path, forward=post, append=self.append) as recorder:
            self.source.run(recorder, cancelled)

    def __getattr__(self, name: str) -> Any:
        # retry_now(), clock() ... of the wrapped source stay reachable.
        if name == "source":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)
