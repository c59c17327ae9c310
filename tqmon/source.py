"""``ClusterSource``: the live feed from a broker (the only tqmon module that reads one).

It runs in the UI's thread worker and calls ``post`` with the items of
:mod:`tqmon.contracts`:

* :class:`LinkStatus` ``connecting`` → ``live`` (``degraded`` when the event stream works but
  the queue/registry poll fails), ``disconnected`` with a ``retry_in`` countdown while the
  broker is away;
* :class:`BrokerFigures` every ``poll_interval`` seconds (``queue_stats`` + ``list_workers``);
* :class:`EventBatch` at most every ``batch_interval`` seconds: event bodies read from
  ``subscribe_events`` are decoded with tqcore's guarded JSON codec, ``task.multi`` lists are
  flattened, anything that is not an event dict is dropped and counted, and each event gets
  ``local_received`` (the receive time, as Celery's receiver adds it).

At connect it asks every worker for a heartbeat so the cluster shows up at once. On a
:class:`~tqcore.exceptions.TqError` it reconnects with exponential backoff and jitter capped
at ``max_backoff``; on reconnect it replays the broker's event history for the gap (where the
broker keeps one) and drops events it already posted. ``run`` never raises because of the
broker, and checks ``cancelled()`` at least every 100 ms.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from tqcore import codec
from tqcore.app import App
from tqcore.exceptions import DecodeError, TqError
from tqcore.urls import redact
from tqmon.contracts import BrokerFigures, EventBatch, LinkState, LinkStatus, Post, QueueFigures

logger = logging.getLogger(__name__)

#: Largest event body decoded (a ``task.multi`` list); larger ones are dropped and counted.
MAX_BODY = 8 * 1024 * 1024
#: Event types are short words; longer ``type`` strings are not events.
MAX_TYPE_LEN = 64
#: Fingerprints of recent events kept to drop duplicates replayed after a reconnect.
_SEEN_KEEP = 20_000


def _fingerprint(ev: dict[str, Any]) -> tuple[Any, ...]:
    return (ev.get("type"), ev.get("hostname"), ev.get("uuid"), ev.get("clock"),
            ev.get("timestamp"))


class ClusterSource:
    """A live :class:`~tqmon.contracts.Source` reading one broker.

    Args:
        app_or_url: a :class:`tqcore.App` (its broker and result backend), or a broker URL.
        poll_interval: seconds between queue/registry polls.
        replay: seconds of event history to read first at the initial connect (where the broker
            keeps one), so a monitor opened mid-incident sees what led up to it.
        batch_interval: seconds between :class:`EventBatch` posts (events are coalesced).
        max_batch: most events in one :class:`EventBatch`; more are posted as several.
        max_backoff: cap of the reconnect delay, seconds.
        clock: epoch seconds (tests inject a fake).

    Attributes:
        malformed: event bodies or items dropped as not JSON / not an event.
        posted_events: events posted so far.
        duplicates: replayed events dropped because they were posted before a reconnect.
    """

    def __init__(self, app_or_url: App | str, poll_interval: float = 1.0,
                 replay: float | None = None, *, batch_interval: float = 0.15,
                 max_batch: int = 5_000, max_backoff: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(app_or_url, App):
            self.app = app_or_url
        else:
            self.app = App("tqmon", broker=app_or_url, set_as_current=False)
        self.poll_interval = poll_interval
        self.replay = replay
        self.batch_interval = batch_interval
        self.max_batch = max(1, max_batch)
        self.max_backoff = max_backoff
        self.clock = clock
        self.broker = redact(self.app.conf.broker())
        self.malformed = 0
        self.posted_events = 0
        self.duplicates = 0
        self._wake = threading.Event()
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._last_event_at: float | None = None

    # -- public helpers ------------------------------------------------------------------
    def retry_now(self) -> None:
        """Cut a reconnect wait short (the UI's ``ctrl+r``); safe from any thread."""
        self._wake.set()

    def poll_figures(self) -> BrokerFigures:
        """Read queue stats and the worker registry once.

        Raises:
            TqError: the broker failed.
        """
        transport = self.app.transport
        stats = transport.queue_stats()
        workers = transport.list_workers()
        queues = tuple(QueueFigures(s.name, s.depth, s.scheduled, s.in_flight, s.dead_lettered,
                                    s.oldest_age, s.consumers) for s in stats)
        return BrokerFigures(queues, dict(workers), self.clock())

    # -- the loop ------------------------------------------------------------------------
    def run(self, post: Post, cancelled: Callable[[], bool]) -> None:
        """Post cluster data until ``cancelled()``; reconnect forever on broker trouble."""
        attempt = 0
        down_since: float | None = None
        first = True
        last_error = ""
        while not cancelled():
            if down_since is None:
                post(LinkStatus("connecting", self.broker, since=self.clock()))
            else:  # stay "disconnected" (with its age) while trying again: no pill flicker
                post(LinkStatus("disconnected", self.broker, detail=f"reconnecting… ({last_error})",
                                retry_in=0.0, since=down_since))
            try:
                sub = self._connect(post, first, down_since)
            except Exception as exc:  # TqError; anything else is a bug: keep the monitor alive
                if not isinstance(exc, TqError):
                    logger.exception("unexpected error connecting to %s", self.broker)
                down_since = down_since or self.clock()
                attempt += 1
                last_error = str(exc) or type(exc).__name__
                self._wait_backoff(post, cancelled, attempt, down_since, exc)
                continue
            first, attempt, down_since = False, 0, None
            try:
                self._stream(sub, post, cancelled)
            except Exception as exc:  # TqError: the broker went away; else a bug, same cure
                if isinstance(exc, TqError):
                    logger.warning("lost %s: %s", self.broker, exc)
                else:
                    logger.exception("unexpected error reading %s", self.broker)
                down_since, attempt = self.clock(), 1
                last_error = str(exc) or type(exc).__name__
                self._wait_backoff(post, cancelled, attempt, down_since, exc)
            finally:
                try:
                    sub.close()
                except Exception:  # closing a dead subscription may fail too
                    logger.debug("closing the event subscription failed", exc_info=True)

    def _connect(self, post: Post, first: bool, down_since: float | None) -> Any:
        transport = self.app.transport
        if first:
            replay = self.replay
        elif self._last_event_at is not None:
            # Fill the gap from the broker's history; already-posted events are dropped.
            replay = max(1.0, self.clock() - self._last_event_at + 2.0)
        else:
            replay = None
        sub = transport.subscribe_events(replay=replay or None)
        try:
            post(self.poll_figures())
            try:
                self.app.control.heartbeat()  # discovery: workers announce themselves now
            except TqError as exc:
                logger.info("heartbeat request failed: %s", exc)
        except BaseException:
            try:
                sub.close()
            except Exception:
                logger.debug("closing the event subscription failed", exc_info=True)
            raise
        detail = ""
        if down_since is not None:
            detail = f"reconnected after {self.clock() - down_since:.0f}s"
        post(LinkStatus("live", self.broker, detail=detail, since=self.clock()))
        return sub

    def _stream(self, sub: Any, post: Post, cancelled: Callable[[], bool]) -> None:
        pending: list[dict[str, Any]] = []
        next_flush = time.monotonic() + self.batch_interval
        next_poll = time.monotonic() + self.poll_interval
        state: LinkState = "live"
        while not cancelled():
            now = time.monotonic()
            wait = max(0.0, min(next_flush - now, next_poll - now, 0.1))
            bodies = sub.get(wait)  # TqError here means the event stream is gone
            received = self.clock()
            for raw in bodies:
                self._decode(raw, received, pending)
            now = time.monotonic()
            if len(pending) >= self.max_batch or (now >= next_flush and pending):
                self._flush(pending, post)
                pending = []
            if now >= next_flush:
                next_flush = now + self.batch_interval
            if now >= next_poll:
                next_poll = now + self.poll_interval
                state = self._poll(post, state)
        if pending:
            self._flush(pending, post)

    def _poll(self, post: Post, state: LinkState) -> LinkState:
        try:
            figures = self.poll_figures()
        except TqError as exc:
            if state != "degraded":
                post(LinkStatus("degraded", self.broker, detail=f"queue stats: {exc}",
                                since=self.clock()))
            return "degraded"
        post(figures)
        if state != "live":
            post(LinkStatus("live", self.broker, since=self.clock()))
        return "live"

    def _decode(self, raw: bytes, received: float, out: list[dict[str, Any]]) -> None:
        try:
            body = codec.loads(raw, max_size=MAX_BODY)
        except DecodeError:
            self.malformed += 1
            return
        for ev in body if isinstance(body, list) else (body,):
            kind = ev.get("type") if isinstance(ev, dict) else None
            if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_LEN:
                self.malformed += 1
                continue
            key = _fingerprint(ev)
            try:
                if key in self._seen:
                    self.duplicates += 1
                    continue
                self._seen[key] = None
            except TypeError:  # unhashable field values: not a real event
                self.malformed += 1
                continue
            if len(self._seen) > _SEEN_KEEP:
                self._seen.popitem(last=False)
            ev["local_received"] = received
            out.append(ev)
        self._last_event_at = received

    def _flush(self, pending: list[dict[str, Any]], post: Post) -> None:
        now = self.clock()
        for i in range(0, len(pending), self.max_batch):
            chunk = tuple(pending[i:i + self.max_batch])
            post(EventBatch(chunk, now))
            self.posted_events += len(chunk)

    def _wait_backoff(self, post: Post, cancelled: Callable[[], bool], attempt: int,
                      down_since: float, exc: BaseException) -> None:
        """Post ``disconnected`` with a countdown (re-posted each second) and wait it out."""
        base = min(self.max_backoff, 0.5 * 2 ** min(attempt - 1, 16))
        delay = random.uniform(base / 2, base)  # "equal jitter": never all at once
        detail = str(exc) or type(exc).__name__
        self._wake.clear()
        deadline = time.monotonic() + delay
        last_posted = -1
        while not cancelled():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._wake.is_set():
                return
            whole = int(remaining)
            if whole != last_posted:
                last_posted = whole
                post(LinkStatus("disconnected", self.broker, detail=detail,
                                retry_in=round(remaining, 1), since=down_since))
            self._wake.wait(min(remaining, 0.1))
