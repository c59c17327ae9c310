"""Workflow graphs rebuilt from events alone: root → tasks, parent → children, groups, chords.

Every task event of a canvas carries ``root_id`` and ``parent_id`` (Celery); tqcore adds the
``group`` id and the ``chord`` id (the chord body's task id, which is also the chord's result
id). This module holds what a workflow *is*: :class:`Progress` keeps incremental state counts
for one workflow root or one group, so progress survives the eviction of the task rows, and
:func:`build_graph` turns the stored rows into a small immutable structure to draw. How events
link tasks into workflows is :mod:`tqcore.events.linking`.

Chains are sent one step at a time, so a workflow's ``total`` is what has been seen (plus chord
bodies announced by their header), not the final size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from tqcore import states
from tqcore.events.tasks import R_NEW

if TYPE_CHECKING:
    from tqcore.events.tasks import Task

_RUNNING = frozenset({states.RECEIVED, states.STARTED, states.RETRY, states.REJECTED})


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One workflow's progress (see :meth:`Progress.summary`)."""

    root_id: str
    #: Task name of the root task, else of the first task seen.
    name: str | None
    #: Tasks seen plus chord bodies announced; ``done`` of them finished, ``failed`` with FAILURE.
    total: int
    done: int
    failed: int
    #: FAILURE if any task failed; SUCCESS (or REVOKED) when all are done; STARTED; else PENDING.
    state: str
    started_at: float | None
    finished_at: float | None
    duration: float | None
    last_activity: float | None
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    """A task in a workflow graph; ``state`` is None for a chord body announced but not seen."""

    id: str
    name: str | None
    state: str | None
    parent_id: str | None
    group: str | None
    group_index: int | None
    chord: str | None
    worker: str | None
    runtime: float | None
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class WorkflowEdge:
    """``source`` → ``target``; ``kind`` is ``"parent"`` (parent_id) or ``"chord"`` (header → body)."""

    source: str
    target: str
    kind: str


@dataclass(frozen=True, slots=True)
class WorkflowGroup:
    """A group's members (those still stored) and its state counts (all members ever seen)."""

    id: str
    members: tuple[str, ...]
    counts: Mapping[str, int]
    total: int
    done: int
    failed: int
    #: The chord id (= body task id) when this group is a chord header.
    chord: str | None


@dataclass(frozen=True, slots=True)
class WorkflowChord:
    """A chord: its header group, its body task and how many header tasks it still waits on."""

    id: str
    body: str
    body_name: str | None
    header: str | None
    waiting_on: int


@dataclass(frozen=True, slots=True)
class WorkflowGraph:
    """A workflow ready to draw: nodes, edges, groups and chords, with its summary."""

    root_id: str
    summary: WorkflowSummary
    nodes: tuple[WorkflowNode, ...]
    edges: tuple[WorkflowEdge, ...]
    groups: tuple[WorkflowGroup, ...]
    chords: tuple[WorkflowChord, ...]


class Progress:
    """Incremental state counts for the tasks of one workflow root, or of one group.

    ``members`` holds the ids still stored (for drawing); ``counts`` and ``total`` count every
    member ever attached, so evicting rows does not change progress.
    """

    __slots__ = ("id", "name", "members", "counts", "total", "first_seen", "last_seen",
                 "chord", "chord_name", "expected")

    def __init__(self, id_: str) -> None:
        self.id = id_
        self.name: str | None = None
        self.members: dict[str, None] = {}
        self.counts: dict[str, int] = {}
        self.total = 0
        self.first_seen: float | None = None
        self.last_seen: float | None = None
        #: For a group that is a chord header: the chord id (body task id) and body task name.
        self.chord: str | None = None
        self.chord_name: str | None = None
        #: For a root: chord bodies announced by their header and not seen yet (id → name).
        self.expected: dict[str, str | None] = {}

    def attach(self, task: Task) -> None:
        """Count ``task`` (in its current state) as a member."""
        self.members[task.uuid] = None
        self.total += 1
        self.expected.pop(task.uuid, None)
        if task.name is not None and (self.name is None or task.uuid == self.id):
            self.name = task.name
        if task.rank != R_NEW:
            self.counts[task.state] = self.counts.get(task.state, 0) + 1
        first = task.sent or task.received or task.started or task.timestamp
        if first is not None:
            self._seen(first)
        if task.timestamp is not None:
            self._seen(task.timestamp)

    def move(self, old: str | None, new: str, ts: float) -> None:
        """A member went from ``old`` (None: not counted yet) to ``new`` at ``ts``."""
        counts = self.counts
        if old is not None:
            counts[old] -= 1
        counts[new] = counts.get(new, 0) + 1
        last = self.last_seen
        if last is None or ts > last:
            self.last_seen = ts
        first = self.first_seen
        if first is None or ts < first:
            self.first_seen = ts

    def _seen(self, ts: float) -> None:
        if self.last_seen is None or ts > self.last_seen:
            self.last_seen = ts
        if self.first_seen is None or ts < self.first_seen:
            self.first_seen = ts

    @property
    def done(self) -> int:
        """Members finished (SUCCESS, FAILURE or REVOKED)."""
        get = self.counts.get
        return get(states.SUCCESS, 0) + get(states.FAILURE, 0) + get(states.REVOKED, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(states.FAILURE, 0)

    @property
    def state(self) -> str:
        """The overall state (see :class:`WorkflowSummary`)."""
        counts = self.counts
        if counts.get(states.FAILURE):
            return states.FAILURE
        total = self.total + len(self.expected)
        if total and self.done == total:
            return states.REVOKED if counts.get(states.REVOKED) else states.SUCCESS
        if self.done or any(counts.get(s) for s in _RUNNING) or any(
                n for s, n in counts.items() if s not in states.ALL_STATES):
            return states.STARTED
        return states.PENDING

    def summary(self, now: float, name: str | None = None) -> WorkflowSummary:
        """An immutable summary; an unfinished workflow's duration runs until ``now``.

        Args:
            now: the state's clock.
            name: the root task's name when known (else the name remembered at attach time).
        """
        total = self.total + len(self.expected)
        done = self.done
        finished = self.last_seen if total and done == total else None
        end = finished if finished is not None else now
        return WorkflowSummary(
            root_id=self.id, name=name or self.name, total=total, done=done, failed=self.failed,
            state=self.state, started_at=self.first_seen, finished_at=finished,
            duration=None if self.first_seen is None else max(0.0, end - self.first_seen),
            last_activity=self.last_seen, counts=_nonzero(self.counts),
        )

    def group_view(self) -> WorkflowGroup:
        """This progress as a :class:`WorkflowGroup`."""
        return WorkflowGroup(
            id=self.id, members=tuple(self.members), counts=_nonzero(self.counts),
            total=self.total, done=self.done, failed=self.failed, chord=self.chord)


def _nonzero(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType({state: n for state, n in counts.items() if n})


def _node(task: Task) -> WorkflowNode:
    return WorkflowNode(
        id=task.uuid, name=task.name, state=task.state, parent_id=task.parent_id,
        group=task.group, group_index=task.group_index, chord=task.chord, worker=task.worker,
        runtime=task.runtime,
        finished_at=task.finished_at)


def build_graph(root: Progress, tasks: Mapping[str, Task], groups: Mapping[str, Progress],
                now: float) -> WorkflowGraph:
    """The graph of workflow ``root`` from the stored task rows and the group index."""
    ids: list[str] = []
    if root.id in tasks and root.id not in root.members:
        ids.append(root.id)
    ids.extend(root.members)
    nodes: dict[str, WorkflowNode] = {}
    for uuid in ids:
        task = tasks.get(uuid)
        if task is not None:
            nodes[uuid] = _node(task)
    group_ids = dict.fromkeys(n.group for n in nodes.values() if n.group is not None)
    views = [groups[g] for g in group_ids if g in groups]
    chords: list[WorkflowChord] = []
    edges = [WorkflowEdge(n.parent_id, n.id, "parent") for n in nodes.values()
             if n.parent_id is not None and n.parent_id in nodes]
    for group in views:
        body = group.chord
        if body is None:
            continue
        if body not in nodes:
            name = group.chord_name or root.expected.get(body)
            nodes[body] = WorkflowNode(body, name, None, None, None, None, None, None, None, None)
        chords.append(WorkflowChord(id=body, body=body, body_name=nodes[body].name, header=group.id,
                                    waiting_on=max(0, group.total - group.done)))
        edges.extend(WorkflowEdge(m, body, "chord") for m in group.members if m in nodes)
    return WorkflowGraph(
        root_id=root.id, summary=root.summary(now, task_name(tasks, root.id)), nodes=tuple(nodes.values()),
        edges=tuple(_unique(edges)), groups=tuple(g.group_view() for g in views),
        chords=tuple(chords))


def _unique(edges: Iterable[WorkflowEdge]) -> list[WorkflowEdge]:
    return list(dict.fromkeys(edges))


def task_name(tasks: Mapping[str, Task], uuid: str) -> str | None:
    """The name of stored task ``uuid``, or None."""
    task = tasks.get(uuid)
    return None if task is None else task.name
