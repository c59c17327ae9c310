"""``GraphCanvas``: a scrollable drawing of a workflow run (see :mod:`tqmon.graph`).

It draws a :class:`~tqmon.graph.Drawing` line by line (Line API), highlights the selected node,
and moves the selection between nodes with the arrow keys by geometry (right goes to the nearest
node to the right, and so on). Enter posts :class:`GraphCanvas.NodeActivated`.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tqmon.graph import Drawing, NodeBox
from tqmon.models.table import TONES
from tqmon.widgets.vtable import foreground

_TONES = (*TONES, "edge", "selected")


class GraphCanvas(ScrollView, can_focus=True):
    """A workflow drawing with a node cursor.

    | Key | Action |
    | --- | --- |
    | ← → ↑ ↓ (h l k j) | select the nearest node that way |
    | enter | activate the node (open the task, expand or collapse a group) |
    """

    COMPONENT_CLASSES = {f"graph--{tone}" for tone in _TONES}
    DEFAULT_CSS = """
    GraphCanvas { height: 1fr; }
    """
    BINDINGS = [
        Binding("left,h", "go('left')", "left", show=False),
        Binding("right,l", "go('right')", "right", show=False),
        Binding("up,k", "go('up')", "up", show=False),
        Binding("down,j", "go('down')", "down", show=False),
        Binding("enter", "activate", "open", show=False),
    ]

    class NodeActivated(Message):
        """Enter on a node."""

        def __init__(self, canvas: GraphCanvas, node: NodeBox) -> None:
            super().__init__()
            self.canvas = canvas
            self.node = node

        @property
        def control(self) -> GraphCanvas:
            return self.canvas

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.drawing = Drawing("graph", (), (), 0)
        self.selected: str | None = None

    @property
    def selected_node(self) -> NodeBox | None:
        return next((n for n in self.drawing.nodes if n.key == self.selected), None)

    def show(self, drawing: Drawing) -> None:
        """Draw ``drawing``, keeping the selected node when it is still there."""
        self.drawing = drawing
        keys = [n.key for n in drawing.nodes]
        if self.selected not in keys:
            self.selected = keys[0] if keys else None
        self.virtual_size = Size(drawing.width + 1, drawing.height)
        self.refresh()

    def _style(self, tone: str) -> Style:
        if not tone:
            return Style()
        style = self.get_component_rich_style(f"graph--{tone}", default=Style())
        return style if tone == "selected" else foreground(style)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        row = scroll_y + y
        if row >= self.drawing.height:
            return Strip.blank(width, self.rich_style)
        text = Text(no_wrap=True, end="")
        for span in self.drawing.lines[row]:
            text.append(span.text, self._style(span.tone))
        node = self.selected_node
        if node is not None and row == node.row + node.height // 2:
            text.stylize(self._style("selected"), node.col, node.col + node.width)
        strip = Strip(list(text.render(self.app.console)), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _select(self, node: NodeBox) -> None:
        self.selected = node.key
        self.refresh()
        self.scroll_to_region(Region(node.col, node.row, node.width, node.height), animate=False,
                              force=True)

    def action_go(self, direction: str) -> None:
        current = self.selected_node
        nodes = self.drawing.nodes
        if current is None:
            if nodes:
                self._select(nodes[0])
            return
        cx, cy = current.col + current.width // 2, current.row + current.height // 2
        best: tuple[float, NodeBox] | None = None
        score: float
        for node in nodes:
            if node.key == current.key:
                continue
            nx, ny = node.col + node.width // 2, node.row + node.height // 2
            dx, dy = nx - cx, ny - cy
            if direction == "right" and node.col > current.col:
                score = dx + 3 * abs(dy)
            elif direction == "left" and node.col < current.col:
                score = -dx + 3 * abs(dy)
            elif direction == "down" and node.row > current.row:
                score = 3 * dy + abs(dx) / 4
            elif direction == "up" and node.row < current.row:
                score = -3 * dy + abs(dx) / 4
            else:
                continue
            if best is None or score < best[0]:
                best = (score, node)
        if best is not None:
            self._select(best[1])

    def action_activate(self) -> None:
        node = self.selected_node
        if node is not None:
            self.post_message(self.NodeActivated(self, node))
