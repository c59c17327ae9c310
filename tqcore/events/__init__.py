"""Events: sending them (``dispatcher``) and folding them into cluster state (:class:`State`).

``State`` is pure and bounded; see :mod:`tqcore.events.state`. Its parts live one concept per
module: task records and merge rules (``tasks``), workers and liveness (``workers``), queues
(``queues``), workflow graphs (``workflows``) and how events link them (``linking``), failure
signatures (``signatures``), per-minute aggregates (``aggregates``) and the immutable snapshot
(``snapshot``).
"""

from __future__ import annotations

from tqcore.events.aggregates import Aggregates, MinutePoint, Percentiles, TaskTypeStats
from tqcore.events.queues import QueueInfo, QueueStats
from tqcore.events.signatures import (
    FailureSignature,
    SignatureInfo,
    Signatures,
    normalise_message,
    signature_of,
    top_frame,
)
from tqcore.events.snapshot import Snapshot
from tqcore.events.state import State
from tqcore.events.tasks import Task
from tqcore.events.workers import OFFLINE, ONLINE, UNKNOWN, Worker, WorkerInfo
from tqcore.events.workflows import (
    WorkflowChord,
    WorkflowEdge,
    WorkflowGraph,
    WorkflowGroup,
    WorkflowNode,
    WorkflowSummary,
)

__all__ = [
    "OFFLINE", "ONLINE", "UNKNOWN", "Aggregates", "FailureSignature", "MinutePoint",
    "Percentiles", "QueueInfo", "QueueStats", "SignatureInfo", "Signatures", "Snapshot", "State",
    "Task", "TaskTypeStats", "Worker", "WorkerInfo", "WorkflowChord", "WorkflowEdge",
    "WorkflowGraph", "WorkflowGroup", "WorkflowNode", "WorkflowSummary", "normalise_message",
    "signature_of", "top_frame",
]
