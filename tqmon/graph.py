"""Drawing a workflow run as character lines: a layered left-to-right graph, or a tree.

Pure (no Textual): :func:`layout` turns a :class:`tqcore.events.WorkflowGraph` into a
:class:`Drawing`, lines of ``(text, tone)`` spans plus the box of every node so a widget can
highlight and navigate them.

* **Graph** (Sugiyama-style): groups collapse into one stack node ``⧉ name ×40 37✓ 2⟳ 1✗``
  unless expanded; longest-path layering; long edges get dummy nodes; a few barycenter sweeps
  reduce crossings; nodes are 3-line boxes; edges are orthogonal box-drawing lines ending in
  ``▶``, merged into proper junctions (``┬ ┤ ┼`` …).
* **Tree** (like ``k9s xray`` or ``git log --graph``): used above :data:`TREE_ABOVE` nodes or
  below :data:`TREE_BELOW` columns, or on request. A chain continues at the same depth; a
  fan-out nests; a collapsed group lists its failed and running members first.

Every node shows a glyph (``✓ ✗ ⟳ ▶ … ⊘``) so state never relies on colour; tones are words
styled by the widget. Names are made inert here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tqcore.events import WorkflowGraph, WorkflowNode
from tqmon.charcanvas import CharCanvas, Span
from tqmon.models import fmt
from tqmon.models.rows import state_counts_text

__all__ = ["Drawing", "Mode", "NodeBox", "Span", "display_nodes", "layout"]

Mode = Literal["auto", "graph", "tree"]
#: Above this many display nodes, or below this many columns, ``auto`` draws a tree.
TREE_ABOVE = 150
TREE_BELOW = 100
#: Columns between two layers (the edge channel plus the arrow).
GAP = 6
#: Lines per node slot in a layer (a 3-line box and a blank line).
SLOT = 4
#: Longest name shown in a box.
MAX_LABEL = 28
#: Members listed under a collapsed group in the tree.
TREE_MEMBERS = 3



@dataclass(frozen=True, slots=True)
class NodeBox:
    """Where a node was drawn.

    Attributes:
        key: the display node: a task id, or ``group:<id>`` for a collapsed group.
        kind: ``task``, ``group`` (collapsed) or ``pending`` (announced, not seen yet).
        task_ids: the task(s) behind it.
        row, col, width, height: its box in the drawing.
        state: the task state (a group's overall state), None when not seen yet.
    """

    key: str
    kind: str
    task_ids: tuple[str, ...]
    row: int
    col: int
    width: int
    height: int
    state: str | None


@dataclass(frozen=True, slots=True)
class Drawing:
    """A laid-out workflow: lines of spans, node boxes in navigation order, size."""

    mode: Literal["graph", "tree"]
    lines: tuple[tuple[Span, ...], ...]
    nodes: tuple[NodeBox, ...]
    width: int

    @property
    def height(self) -> int:
        return len(self.lines)

    def text(self) -> str:
        """The drawing as plain text (tests, ``:dump``)."""
        return "\n".join("".join(s.text for s in line).rstrip() for line in self.lines)


@dataclass(slots=True)
class _DNode:
    key: str
    kind: str
    task_ids: tuple[str, ...]
    state: str | None
    label: str
    info: str
    order: int


def _group_state(counts: Mapping[str, int], total: int, done: int) -> str:
    if counts.get("FAILURE"):
        return "FAILURE"
    if total and done >= total:
        return "SUCCESS"
    if any(counts.get(s) for s in ("STARTED", "RECEIVED", "RETRY")) or done:
        return "STARTED"
    return "PENDING"


def display_nodes(graph: WorkflowGraph, expanded: Iterable[str] = ()
                  ) -> tuple[list[_DNode], list[tuple[str, str]]]:
    """Nodes to draw (groups collapsed unless in ``expanded``) and their edges."""
    open_groups = set(expanded)
    key_of: dict[str, str] = {}
    nodes: dict[str, _DNode] = {}
    groups = {g.id: g for g in graph.groups}
    waits = {c.body: (c.waiting_on, groups[c.header].failed if c.header in groups else 0)
             for c in graph.chords}
    collapsed = {g.id: g for g in graph.groups
                 if g.id not in open_groups and len(g.members) + 1 > 2}
    for order, node in enumerate(graph.nodes):
        group = collapsed.get(node.group) if node.group else None
        if group is not None:
            key = f"group:{group.id}"
            key_of[node.id] = key
            if key not in nodes:
                names = {n.name for n in graph.nodes if n.group == group.id}
                name = fmt.safe(names.pop() if len(names) == 1 else "group", MAX_LABEL)
                members = tuple(n.id for n in graph.nodes if n.group == group.id)
                state = _group_state(group.counts, group.total, group.done)
                nodes[key] = _DNode(key, "group", members, state, f"⧉ {name} ×{group.total}",
                                    state_counts_text(group.counts), order)
            continue
        key_of[node.id] = node.id
        nodes[node.id] = _task_node(node, order, waits.get(node.id))
    edges: dict[tuple[str, str], None] = {}
    for edge in graph.edges:
        s, t = key_of.get(edge.source), key_of.get(edge.target)
        if s is not None and t is not None and s != t:
            edges[(s, t)] = None
    return list(nodes.values()), list(edges)


def _task_node(node: WorkflowNode, order: int, chord: tuple[int, int] | None) -> _DNode:
    name = fmt.safe(node.name or ("chord callback" if node.state is None else "?"), MAX_LABEL)
    if node.state is None:
        waiting_on, failed = chord or (0, 0)
        if failed:
            info = f"blocked: {failed} failed"
        else:
            info = f"waits on {waiting_on}" if waiting_on else "not sent yet"
        return _DNode(node.id, "pending", (node.id,), None, f"… {name}", info, order)
    info = fmt.duration(node.runtime) if node.runtime is not None else node.state.lower()
    return _DNode(node.id, "task", (node.id,), node.state, f"{fmt.glyph(node.state)} {name}",
                  info, order)


def layout(graph: WorkflowGraph, *, width: int = 200, mode: Mode = "auto",
           expanded: Iterable[str] = ()) -> Drawing:
    """Lay ``graph`` out as a graph or a tree (see the module docstring)."""
    nodes, edges = display_nodes(graph, expanded)
    if mode == "auto":
        mode = "tree" if len(nodes) > TREE_ABOVE or width < TREE_BELOW else "graph"
    if mode == "tree":
        return _tree(graph, nodes, edges)
    return _graph(nodes, edges)


# -- layered graph ----------------------------------------------------------------------------
def _layers(nodes: list[_DNode], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering (cycles, which a workflow should not have, are broken)."""
    preds: dict[str, list[str]] = {n.key: [] for n in nodes}
    succs: dict[str, list[str]] = {n.key: [] for n in nodes}
    for s, t in edges:
        succs[s].append(t)
        preds[t].append(s)
    indeg = {k: len(v) for k, v in preds.items()}
    ready = [n.key for n in nodes if indeg[n.key] == 0]
    layer = dict.fromkeys(preds, 0)
    seen: set[str] = set()
    while ready or len(seen) < len(nodes):
        if not ready:  # a cycle: start from the earliest unplaced node
            ready = [next(n.key for n in nodes if n.key not in seen)]
            indeg[ready[0]] = 0
        key = ready.pop(0)
        if key in seen:
            continue
        seen.add(key)
        for t in succs[key]:
            if t in seen:
                continue
            layer[t] = max(layer[t], layer[key] + 1)
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    return layer


def _graph(nodes: list[_DNode], edges: list[tuple[str, str]]) -> Drawing:
    if not nodes:
        return Drawing("graph", ((Span("(no tasks stored for this workflow)", "dim"),),), (), 36)
    by_key = {n.key: n for n in nodes}
    layer = _layers(nodes, edges)
    # Split long edges with dummy nodes so every edge joins adjacent layers.
    links: list[tuple[str, str]] = []
    dummies: set[str] = set()
    for s, t in edges:
        a, b = layer[s], layer[t]
        if b <= a:
            continue  # a back edge of a broken cycle: not drawn
        prev = s
        for i in range(a + 1, b):
            dummy = f"~{s}>{t}#{i}"
            dummies.add(dummy)
            layer[dummy] = i
            links.append((prev, dummy))
            prev = dummy
        links.append((prev, t))
    depth = max(layer.values()) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    for key in sorted(layer, key=lambda k: (by_key[k].order if k in by_key else 1 << 30, k)):
        rows[layer[key]].append(key)
    preds: dict[str, list[str]] = {k: [] for k in layer}
    succs: dict[str, list[str]] = {k: [] for k in layer}
    for s, t in links:
        succs[s].append(t)
        preds[t].append(s)
    for _ in range(4):  # barycenter sweeps, down then up
        for i in range(1, depth):
            _reorder(rows[i], rows[i - 1], preds)
        for i in range(depth - 2, -1, -1):
            _reorder(rows[i], rows[i + 1], succs)
    widths = {k: 0 if k in dummies else len(_box_text(by_key[k])) + 2 for k in layer}
    col_width = [max((widths[k] for k in row), default=1) or 1 for row in rows]
    xs = [0] * depth
    for i in range(1, depth):
        xs[i] = xs[i - 1] + col_width[i - 1] + GAP
    slots = max(len(r) for r in rows)
    pos: dict[str, tuple[int, int]] = {}
    for i, row in enumerate(rows):
        offset = (slots - len(row)) // 2
        for j, key in enumerate(row):
            pos[key] = (xs[i], (offset + j) * SLOT)
    total_w = xs[-1] + col_width[-1]
    total_h = slots * SLOT - 1
    canvas = CharCanvas(total_w, total_h)
    for s, t in links:
        _edge(canvas, s, t, pos, widths, col_width, layer, xs, dummies)
    boxes = []
    for i, row in enumerate(rows):
        for key in row:
            if key in dummies:
                x, y = pos[key]
                canvas.hline(x, x + col_width[i] - 1, y + 1)
                continue
            node = by_key[key]
            x, y = pos[key]
            canvas.box(x, y, widths[key], node.label, node.info, fmt.state_tone(node.state),
                       bool(succs[key]))
            boxes.append(NodeBox(key, node.kind, node.task_ids, y, x, widths[key], 3, node.state))
    boxes.sort(key=lambda b: (b.col, b.row))
    return Drawing("graph", canvas.lines(), tuple(boxes), total_w)


def _reorder(row: list[str], other: list[str], links: Mapping[str, list[str]]) -> None:
    index = {k: i for i, k in enumerate(other)}

    def bary(item: tuple[int, str]) -> float:
        i, key = item
        near = [index[k] for k in links[key] if k in index]
        return sum(near) / len(near) if near else float(i)

    row[:] = [k for _, k in sorted(enumerate(row), key=lambda item: (bary(item), item[0]))]


def _box_text(node: _DNode) -> str:
    return f" {node.label} {node.info} "


def _edge(canvas: CharCanvas, s: str, t: str, pos: Mapping[str, tuple[int, int]],
          widths: Mapping[str, int], col_width: list[int], layer: Mapping[str, int],
          xs: list[int], dummies: set[str]) -> None:
    sx, sy = pos[s]
    tx, ty = pos[t]
    li = layer[s]
    start = sx + (col_width[li] if s in dummies else widths[s])
    y1, y2 = sy + 1, ty + 1
    gap_start = xs[li] + col_width[li]
    channel = gap_start + 2
    end = tx - 1 if t in dummies else tx - 2
    if y1 == y2:
        canvas.hline(start, end, y1)
    else:
        canvas.hline(start, channel, y1, right=False)
        canvas.vline(channel, y1, y2)
        canvas.hline(channel, end, y2, left=False)
    if t not in dummies:
        canvas.put(tx - 1, y2, "▶", "edge")


# -- tree -------------------------------------------------------------------------------------
_TREE_COL = 44


def _tree(graph: WorkflowGraph, nodes: list[_DNode], edges: list[tuple[str, str]]) -> Drawing:
    by_key = {n.key: n for n in nodes}
    children: dict[str, list[str]] = {n.key: [] for n in nodes}
    parents: dict[str, list[str]] = {n.key: [] for n in nodes}
    for s, t in edges:
        parents[t].append(s)
    for t, ps in parents.items():
        if ps:  # a fan-in (chord body) hangs under its last parent only
            owner = max(ps, key=lambda k: by_key[k].order)
            children[owner].append(t)
    members = {n.id: n for n in graph.nodes}
    summary = graph.summary
    lines: list[tuple[Span, ...]] = []
    boxes: list[NodeBox] = []
    head = (f"{fmt.glyph(summary.state)} {fmt.safe(summary.name or '?', 60)} "
            f"{fmt.short_id(summary.root_id)}")
    right = f"{state_counts_text(summary.counts)}   {fmt.duration(summary.duration)}"
    lines.append((Span(head, fmt.state_tone(summary.state)),
                  Span(" " * max(2, _TREE_COL - len(head))), Span(right, "dim")))
    placed: set[str] = set()

    def chain_of(start: str) -> list[str]:
        seq = [start]
        while True:
            kids = children[seq[-1]]
            if len(kids) != 1 or kids[0] in seq or by_key[seq[-1]].kind == "group":
                return seq
            seq.append(kids[0])

    def emit(prefix: str, last: bool, node: _DNode) -> None:
        branch = prefix + ("└─ " if last else "├─ ")
        text = node.label
        pad = " " * max(2, _TREE_COL - len(branch) - len(text))
        lines.append((Span(branch, "edge"), Span(text, fmt.state_tone(node.state)),
                      Span(pad + node.info, "dim")))
        boxes.append(NodeBox(node.key, node.kind, node.task_ids, len(lines) - 1, len(branch),
                             len(text), 1, node.state))

    def group_members(node: _DNode, prefix: str, more_follow: bool) -> None:
        ranked = sorted((members[m] for m in node.task_ids if m in members),
                        key=lambda n: (n.state != "FAILURE", n.state != "RETRY",
                                       n.state != "STARTED", n.group_index or 0))
        shown = [m for m in ranked if m.state != "SUCCESS"][:TREE_MEMBERS]
        rest = len(node.task_ids) - len(shown)
        for i, m in enumerate(shown):
            last = i == len(shown) - 1 and not rest and not more_follow
            index = m.group_index if m.group_index is not None else "?"
            lines.append((Span(prefix + ("└─ " if last else "├─ "), "edge"),
                          Span(f"{fmt.glyph(m.state)} {fmt.safe(m.name or '?', 40)}[{index}]",
                               fmt.state_tone(m.state))))
        if rest:
            lines.append((Span(prefix + ("├─ " if more_follow else "└─ "), "edge"),
                          Span(f"… {rest} {'more' if shown else 'members'} (enter expands)", "dim")))

    def items(keys: list[str], prefix: str) -> None:
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            node = by_key[key]
            placed.add(key)
            emit(prefix, last, node)
            inner = prefix + ("   " if last else "│  ")
            nxt = keys[i + 1] if i + 1 < len(keys) else None
            kids = [k for k in children[key] if k not in placed and k != nxt]
            if node.kind == "group":
                group_members(node, inner, bool(kids))
            if len(kids) == 1:
                items(chain_of(kids[0]), inner)
            elif kids:
                items(kids, inner)

    roots = [n.key for n in nodes if not parents[n.key]]
    if not roots and nodes:
        roots = [nodes[0].key]
    if len(roots) == 1:
        items(chain_of(roots[0]), "")
    else:
        items(roots, "")
    leftover = [n.key for n in nodes if n.key not in placed]  # only in a cycle
    if leftover:
        items(leftover, "")
    width = max((sum(len(s.text) for s in line) for line in lines), default=0)
    return Drawing("tree", tuple(lines), tuple(boxes), width)
