"""``FlowDetailScreen``: one workflow run drawn as a left-to-right graph (or a tree for big or
narrow ones, ``t`` toggles): state glyphs ``✓ ✗ ⟳ ▶ … ⊘`` plus colours, groups collapsed into a
stack node with state counts, chord callbacks "waiting on N", nodes not yet run dimmed.

Arrow keys move between nodes; ``enter`` opens a task, or expands/collapses a group. Task keys
(``x`` ``X`` ``R`` ``L``) act on the selected node's task(s).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from tqcore.events import WorkflowGraph
from tqmon.graph import Drawing, Mode, layout
from tqmon.models import fmt
from tqmon.models.rows import state_counts_text
from tqmon.models.table import Cell
from tqmon.screens.actions import TASK_BINDINGS, TaskActions
from tqmon.screens.base import ViewScreen
from tqmon.widgets.graph_canvas import GraphCanvas


class FlowDetailScreen(TaskActions, ViewScreen):
    """One workflow run (see the module docstring)."""

    VIEW = "flow_detail"
    FILTERABLE = False
    BINDINGS = [*TASK_BINDINGS, Binding("t", "toggle_tree", "tree/graph", show=False)]

    def __init__(self, root_id: str) -> None:
        super().__init__(crumb=f"flow {fmt.short_id(root_id)}")
        self.root_id = root_id
        self.mode: Mode = "auto"
        self.expanded: set[str] = set()
        self.graph: WorkflowGraph | None = None
        self.drawing: Drawing | None = None
        self._shape: tuple[object, ...] | None = None

    def compose_body(self) -> ComposeResult:
        yield GraphCanvas(id="graph")

    def on_mount(self) -> None:
        self.query_one(GraphCanvas).focus()

    def title_cells(self) -> list[Cell]:
        graph = self.graph
        if graph is None:
            return [Cell("workflow not known (evicted?)", "warn")]
        s = graph.summary
        mode = self.drawing.mode if self.drawing is not None else "graph"
        return [Cell(f"{fmt.glyph(s.state)} {fmt.safe(s.name or '?', 60)}", fmt.state_tone(s.state)),
                Cell(f"{s.done}/{s.total} done · {state_counts_text(s.counts)}"),
                Cell(f"{fmt.duration(s.duration)}", "dim"),
                Cell(f"{mode} (t toggles)", "dim")]

    def refresh_view(self) -> None:
        if not self.ready:
            return
        graph = self.cluster.state.workflow(self.root_id)
        self.graph = graph
        if graph is None:
            return
        canvas = self.query_one(GraphCanvas)
        shape = (tuple((n.id, n.state, n.runtime) for n in graph.nodes),
                 tuple((c.body, c.waiting_on) for c in graph.chords), self.mode,
                 tuple(sorted(self.expanded)), canvas.size.width)
        if shape == self._shape:
            return
        self._shape = shape
        self.drawing = layout(graph, width=canvas.size.width or 160, mode=self.mode,
                              expanded=self.expanded)
        canvas.show(self.drawing)

    def action_toggle_tree(self) -> None:
        current = self.drawing.mode if self.drawing is not None else "graph"
        self.mode = "graph" if current == "tree" else "tree"
        self.refresh_view()
        self.refresh_frame()

    @on(GraphCanvas.NodeActivated)
    def _activated(self, event: GraphCanvas.NodeActivated) -> None:
        node = event.node
        if node.kind == "group":
            self.expanded.add(node.key.removeprefix("group:"))
            self.refresh_view()
            return
        task_id = node.task_ids[0] if node.task_ids else None
        if task_id is not None and task_id in self.cluster.state.tasks:
            from tqmon.screens.task_detail import TaskDetailScreen

            self.app.push_screen(TaskDetailScreen(task_id))
        elif node.kind == "pending":
            self.tq.flash_text("this task has not been sent yet", "dim")

    def action_back(self) -> None:
        if self.expanded:
            self.expanded.clear()  # esc collapses the groups first
            self.refresh_view()
            return
        super().action_back()

    def selected_task_ids(self) -> list[str]:
        node = self.query_one(GraphCanvas).selected_node
        if node is None:
            return []
        return [t for t in node.task_ids if t in self.cluster.state.tasks]
