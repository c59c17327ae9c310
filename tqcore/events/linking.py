"""How task events link tasks into workflows: the root, group, chord and children indexes.

:class:`WorkflowIndex` reads ``parent_id``, ``root_id``, ``group`` and ``chord`` off task events
(``reference/celery-wire.md`` §1.9: the graph is rebuilt from events alone) and keeps the
:class:`~tqcore.events.workflows.Progress` of every workflow root and group in step with the
task rows of :class:`~tqcore.events.State`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tqcore.events.workflows import Progress, WorkflowGraph, WorkflowSummary, build_graph, task_name

if TYPE_CHECKING:
    from tqcore.events.tasks import Task


def chord_ref(chord: Any) -> tuple[str | None, str | None]:
    """(chord id, body task name) from tqcore's chord id or Celery's body signature dict."""
    if isinstance(chord, str):
        return chord, None
    if isinstance(chord, Mapping):
        options = chord.get("options") or {}
        task_id = options.get("task_id") if isinstance(options, Mapping) else None
        name = chord.get("task")
        return (task_id if isinstance(task_id, str) else None,
                name if isinstance(name, str) else None)
    return None, None


class WorkflowIndex:
    """Workflow roots, groups and the children index, kept in step with the task rows.

    A workflow is keyed by ``root_id``; a group or chord sent on its own is keyed by its group
    id, and a chord body that is its own root joins the workflow of its header (see
    :meth:`_join`).

    Roots and groups are bounded by ``max_workflows`` each (the oldest created goes first); the
    children index holds stored tasks only.
    """

    def __init__(self, max_workflows: int = 10_000) -> None:
        self.max_workflows = max_workflows
        self.roots: OrderedDict[str, Progress] = OrderedDict()
        self.groups: OrderedDict[str, Progress] = OrderedDict()
        self.children: dict[str, dict[str, None]] = {}
        #: Chord bodies announced by a header and not seen yet → the workflow they belong to.
        self.bodies: OrderedDict[str, str] = OrderedDict()
        #: Root ids that name another workflow: the first member of a group sent on its own →
        #: the group id.
        self.aliases: OrderedDict[str, str] = OrderedDict()

    def _new(self, index: OrderedDict[str, Progress], key: str) -> Progress:
        if len(index) >= self.max_workflows:
            index.popitem(last=False)
        progress = index[key] = Progress(key)
        return progress

    def link(self, task: Task, event: Mapping[str, Any], tasks: Mapping[str, Task]) -> None:
        """Index ``task`` by the ``parent_id``, ``group``, ``root_id`` and ``chord`` of ``event``
        it does not have yet."""
        get = event.get
        if task.parent_id is None:
            parent = get("parent_id")
            if parent.__class__ is str:
                task.parent_id = parent
                siblings = self.children.get(parent)
                if siblings is None:
                    siblings = self.children[parent] = {}
                siblings[task.uuid] = None
        if task.group is None:
            group = get("group")
            if group.__class__ is str:
                task.group = group
                grp = self.groups.get(group) or self._new(self.groups, group)
                task.grp = grp
                grp.attach(task)
        if task.root_id is None:
            root = get("root_id")
            if root.__class__ is str:
                task.root_id = root
                if task.wf is None:
                    self._join(task, root, tasks)
        if task.wf is None and self.bodies:  # an announced chord body that is its own root
            key = self.bodies.pop(task.uuid, None)
            wf = None if key is None else self.roots.get(key)
            if wf is not None:
                task.wf = wf
                wf.attach(task)
        if task.chord is None:
            chord = get("chord")
            if chord is None:
                return
            body, body_name = chord_ref(chord)
            task.chord = body
            if body is None:
                return
            if task.grp is not None and task.grp.chord is None:
                task.grp.chord, task.grp.chord_name = body, body_name
            wf = task.wf
            if wf is None or body in wf.members:
                return
            early = tasks.get(body)
            if early is None:  # announced: drawn, and counted in the total, before it is sent
                wf.expected[body] = body_name
                self.bodies[body] = wf.id
                if len(self.bodies) > self.max_workflows:
                    self.bodies.popitem(last=False)
            elif early.wf is None:  # the body's events came first
                early.wf = wf
                wf.attach(early)

    def _join(self, task: Task, root: str, tasks: Mapping[str, Task]) -> None:
        """Attach ``task`` to the workflow keyed by its root. A task that is its own root (a
        plain task, the first step of a chain so far, a chord body: see :meth:`link`) starts
        none, except that a member of a group or chord sent on its own (a group member
        without a parent) is keyed by the group id. A Celery-style producer makes each member
        its own root, tqcore's makes the first member every member's root: either way that
        root id becomes an alias of the group id, and a workflow started under it is moved
        over.
        """
        uuid = task.uuid
        aliases = self.aliases
        key = aliases.get(root, root) if aliases else root
        if task.group is not None and task.parent_id is None:
            key = task.group
            if root != key and aliases.get(root) != key:
                aliases[root] = key
                if len(aliases) > self.max_workflows:
                    aliases.popitem(last=False)
                early = self.roots.pop(root, None)
                if early is not None:
                    self._merge(early, self.roots.get(key) or self._new(self.roots, key), tasks)
        wf = self.roots.get(key)
        if wf is None:
            if key == uuid:
                return
            wf = self._new(self.roots, key)
            owner = tasks.get(key)
            if owner is not None and owner is not task and owner.wf is None:
                owner.wf = wf
                wf.attach(owner)
        task.wf = wf
        wf.attach(task)

    def _merge(self, src: Progress, dst: Progress, tasks: Mapping[str, Task]) -> None:
        """Move the members and counts of workflow ``src`` into ``dst`` (same workflow)."""
        for uuid in src.members:
            member = tasks.get(uuid)
            if member is not None and member.wf is src:
                member.wf = dst
            dst.members[uuid] = None
        dst.total += src.total
        for state, n in src.counts.items():
            dst.counts[state] = dst.counts.get(state, 0) + n
        for ts in (src.first_seen, src.last_seen):
            if ts is not None:
                dst._seen(ts)
        for body, name in src.expected.items():
            if body not in dst.members:
                dst.expected[body] = name
        for body, key in list(self.bodies.items()):
            if key == src.id:
                self.bodies[body] = dst.id
        if dst.name is None:
            dst.name = src.name

    def forget(self, task: Task) -> None:
        """``task``'s row was evicted: drop it from the member lists (counts stay)."""
        uuid = task.uuid
        if task.wf is not None:
            task.wf.members.pop(uuid, None)
        if task.grp is not None:
            task.grp.members.pop(uuid, None)
        if task.parent_id is not None:
            siblings = self.children.get(task.parent_id)
            if siblings is not None:
                siblings.pop(uuid, None)
                if not siblings:
                    del self.children[task.parent_id]

    def graph(self, key: str, tasks: Mapping[str, Task], now: float) -> WorkflowGraph | None:
        """The graph of the workflow with root ``key`` (or an alias of it), or None when it is
        not a known workflow."""
        root = self.roots.get(self.aliases.get(key, key))
        return None if root is None else build_graph(root, tasks, self.groups, now)

    def summaries(self, tasks: Mapping[str, Task], now: float,
                  limit: int | None = None) -> tuple[WorkflowSummary, ...]:
        """Summaries of the workflows, most recently active first."""
        ranked = sorted(self.roots.values(), key=lambda p: -(p.last_seen or 0.0))
        return tuple(p.summary(now, task_name(tasks, p.id)) for p in ranked[:limit])
