"""``Snapshot``: an immutable summary of a :class:`~tqcore.events.State` for other threads.

tqmon's source thread folds events and posts snapshots to the UI a few times a second, so this
costs O(workers + queues + a few signatures), never O(tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from tqcore.events.queues import QueueInfo
from tqcore.events.signatures import SignatureInfo
from tqcore.events.workers import WorkerInfo

if TYPE_CHECKING:
    from tqcore.events.state import State


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster at ``taken_at`` (the state's clock)."""

    taken_at: float
    event_count: int
    malformed: int
    #: Timestamp of the latest event delivered, and ``taken_at`` minus it.
    last_event_at: float | None
    lag: float | None
    stream_healthy: bool
    #: Task rows stored per state (rows evicted so far are not in it).
    state_counts: Mapping[str, int]
    tasks_stored: int
    tasks_evicted: int
    #: Workers by hostname, and how many are online / offline / unknown.
    workers: tuple[WorkerInfo, ...]
    worker_status: Mapping[str, int]
    #: Missing heartbeat sequence numbers, summed over workers.
    seq_gaps: int
    queues: tuple[QueueInfo, ...]
    #: The most recently seen failure signatures, newest first.
    signatures: tuple[SignatureInfo, ...]
    signature_count: int
    workflow_count: int


def make_snapshot(state: State, now: float, signatures: int = 20) -> Snapshot:
    """Build the :class:`Snapshot` of ``state`` at ``now``."""
    workers = tuple(state.workers[h].info() for h in sorted(state.workers))
    by_status: dict[str, int] = {}
    for info in workers:
        by_status[info.status] = by_status.get(info.status, 0) + 1
    last = state.last_event_at
    return Snapshot(
        taken_at=now, event_count=state.event_count, malformed=state.malformed,
        last_event_at=last, lag=None if last is None else now - last,
        stream_healthy=state.stream_healthy,
        state_counts=MappingProxyType({s: n for s, n in state.state_counts.items() if n}),
        tasks_stored=len(state.tasks), tasks_evicted=state.evicted,
        workers=workers, worker_status=MappingProxyType(by_status),
        seq_gaps=sum(w.seq_gaps for w in workers),
        queues=state.queue_infos(), signatures=state.signatures.top(signatures),
        signature_count=len(state.signatures), workflow_count=state.workflow_count,
    )
