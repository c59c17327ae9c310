"""What flows between tqmon's data side and its UI (plain dataclasses, no Textual).

The *source* (``tqmon.source``: live broker; ``tqmon.record``: replay of a recording)
runs in a thread worker and calls ``post(item)`` with :class:`EventBatch`,
:class:`BrokerFigures` and :class:`LinkStatus` items. The UI wraps each in a Textual
message and folds event batches into its own :class:`tqcore.events.State` on the UI
thread (Flower's design: one owner, no locks), redrawing on a timer.

Actions go the other way, always through the *command gate* (``tqmon.gate``): it
enforces read-only mode, writes the audit line, runs the tqcore control call and
returns an :class:`ActionResult` with one entry per worker, "no reply" spelled out.
Recordings (``tqmon record -o FILE``, ``tqmon replay FILE``, the tests' fixtures and
``scripts/screenshots.py``) are JSON lines, one posted item per line, in order::

    {"t": 1795271707.7, "kind": "events", "events": [{...}, ...]}
    {"t": 1795271708.0, "kind": "figures", "queues": [{QueueFigures fields}], "workers": {...}}
    {"t": 1795271708.0, "kind": "link", "state": "live", "broker": "sqlite:///...", ...}

``t`` is when the item was posted; a replay re-posts items with the same spacing
(scaled by a speed factor) and can freeze the clock at the last item for screenshots.

Untrusted strings inside these items are raw; the UI makes them inert
(``tqcore.text.inert``) and renders them as ``rich.text.Text``, never as markup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, Protocol

#: Connection states shown in the frame's pill.
LinkState = Literal["connecting", "live", "degraded", "disconnected", "paused", "replay"]


@dataclasses.dataclass(frozen=True, slots=True)
class EventBatch:
    """Celery-shaped event dicts received together (flattened ``task.multi`` lists)."""

    events: tuple[dict[str, Any], ...]
    received_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue as the broker reports it (mirrors ``tqcore.transports.QueueStats``)."""

    name: str
    depth: int
    scheduled: int
    in_flight: int
    dead_lettered: int
    oldest_age: float
    consumers: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerFigures:
    """Polled broker figures: queues and the worker registry (who is alive)."""

    queues: tuple[QueueFigures, ...]
    workers: dict[str, dict[str, Any]]
    at: float


@dataclasses.dataclass(frozen=True, slots=True)
class LinkStatus:
    """The source's health, for the connection pill and stale-dimming."""

    state: LinkState
    broker: str  # credentials already redacted
    detail: str = ""
    retry_in: float | None = None
    since: float | None = None  # when this state began (for "disconnected 42s")


Post = Callable[[object], None]


class Source(Protocol):
    """A feed of cluster data for the UI."""

    def run(self, post: Post, cancelled: Callable[[], bool]) -> None:
        """Blocking loop (run in a thread): post items until ``cancelled()`` is true."""


ActionKind = Literal["revoke", "terminate", "retry", "retry_signature", "rate_limit",
                     "pool_grow", "pool_shrink", "shutdown", "purge"]


@dataclasses.dataclass(frozen=True, slots=True)
class Action:
    """An operator action, frozen with its exact targets before confirmation.

    Attributes:
        kind: what to do.
        targets: task ids (revoke, terminate, retry), a signature id (retry_signature),
            a task name (rate_limit), worker names (pool_*, shutdown) or a queue (purge).
        params: extra arguments (``signal``, ``rate``, ``n``).
        destination: workers the control command goes to (None: all).
    """

    kind: ActionKind
    targets: tuple[str, ...]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    destination: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action did: refused (with the reason), or per-worker replies."""

    action: Action
    ok: bool
    summary: str
    refused: str | None = None
    replies: dict[str, Any] = dataclasses.field(default_factory=dict)
    no_reply: tuple[str, ...] = ()
