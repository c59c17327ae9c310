"""``QueuesScreen`` (``3``, ``:queues``): broker queues with the figures that answer "will this
drain, and when?": ready depth, unacked, consumers (``0 ⚠ none`` when messages wait with nobody
consuming), oldest message age, in/out rates from events, drain ETA or ``growing +x/s``,
dead-lettered count, and the depth trend (gaps where polls were missed).

While the broker is unreachable the figures stay on screen, dimmed, with their age. ``enter``
lists the queue's tasks; ``P`` purges it (tier 3: type the queue name).
"""

from __future__ import annotations

from textual.binding import Binding

from tqmon.contracts import Action
from tqmon.models import fmt
from tqmon.models.rows import QUEUE_COLUMNS, queue_rows
from tqmon.models.table import Cell, RowVM
from tqmon.screens.table_view import TableView


class QueuesScreen(TableView):
    """The queue list (see the module docstring)."""

    VIEW = "queues"
    COLUMNS = QUEUE_COLUMNS
    SORT = (1, True)  # READY, deepest first
    NOUN = "queue"
    BINDINGS = [Binding("P", "purge", "purge", show=False)]

    def rows(self) -> list[RowVM]:
        return queue_rows(self.cluster)

    def title_cells(self) -> list[Cell]:
        cells = super().title_cells()
        age = self.cluster.figures_age()
        if age is None:
            cells.append(Cell("no broker figures yet", "warn"))
        else:
            cells.append(Cell(f"figures {fmt.duration(age)} old",
                              "err" if self.cluster.stale else "dim"))
        return cells

    def drill(self, key: str) -> None:
        from tqmon.screens.tasks import TasksScreen

        self.app.push_screen(TasksScreen(only=("queue", key), crumb=fmt.safe(key, 40)))

    def action_purge(self) -> None:
        name = self.table.cursor_key
        if name is None:
            self.tq.flash_text("purge: no queue selected", "warn")
            return
        figures = self.cluster.queue_figures().get(name)
        depth = figures.depth + figures.scheduled if figures is not None else 0
        shown = fmt.safe(name, 60)
        self.tq.request_action(Action("purge", (name,)), labels=[f"queue {shown}"], count=depth,
                               typed=shown, noun="message",
                               title=f"Purge queue {shown}: {depth:,} messages?")
