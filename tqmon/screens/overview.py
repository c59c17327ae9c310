"""``OverviewScreen`` (``1``, ``:overview``): the pulse of the cluster on one screen.

Tiles: workers (online, busy slots, lost), queues (depth, worst oldest age, queues nobody
consumes, dead letters), throughput over 15 minutes, top failure signatures, tasks, workflows,
and the event stream itself (events/s, lag). Below, per-minute trends that fill the width, with
gaps where there was no data. ``tab``/arrows move between tiles; ``enter`` opens a tile's view,
pre-filtered (lost workers, say).
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical

from tqmon.models.detail import overview_tiles
from tqmon.models.table import Cell
from tqmon.screens.base import ViewScreen
from tqmon.widgets.sparkline import Spark
from tqmon.widgets.tile import TileBox

TILES = ("workers", "queues", "throughput", "failures", "tasks", "flows", "events")


class OverviewScreen(ViewScreen):
    """The overview (see the module docstring)."""

    VIEW = "overview"
    FILTERABLE = False
    BINDINGS = [
        Binding("right,l,down,j", "app.focus_next", "next tile", show=False),
        Binding("left,h,up,k", "app.focus_previous", "previous tile", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Grid(id="tiles"):
            for key in TILES:
                yield TileBox(key, classes="wide" if key in ("failures", "events") else None)
        with Vertical(id="trends"):
            yield Spark("succeeded / min", "ok", id="spark-ok")
            yield Spark("failed    / min", "err", id="spark-failed")
            yield Spark("ready (all queues)", "info", id="spark-depth")

    def on_mount(self) -> None:
        self.query_one("#trends").border_title = "Trends · last 60 min (· = no data)"
        self.query_one(TileBox).focus()

    def title_cells(self) -> list[Cell]:
        return [Cell("enter opens a tile · 2-7 jump to a view", "dim")]

    def refresh_view(self) -> None:
        if not self.ready:
            return
        for tile in overview_tiles(self.cluster):
            self.query_one(f"#tile-{tile.key}", TileBox).show_tile(tile)
        points = self.cluster.state.aggregates.throughput(60)
        self.query_one("#spark-ok", Spark).set_values([float(p.succeeded) for p in points])
        self.query_one("#spark-failed", Spark).set_values([float(p.failed) for p in points])
        depths = self.cluster.total_depth_history()
        self.query_one("#spark-depth", Spark).set_values(depths)

    @on(TileBox.Opened)
    def _open(self, event: TileBox.Opened) -> None:
        self.tq.open_view(event.tile.view, event.tile.filter)
