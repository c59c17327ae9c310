"""``WorkersScreen`` (``2``, ``:workers``): every worker, problems first.

State reads ``online``, ``lost`` (heartbeats stopped without a goodbye), ``offline`` (said
goodbye) or ``unknown`` while tqmon's own event stream is down, so a monitor outage never looks
like a fleet outage. ``enter`` opens the worker; ``+``/``-`` resize its pool; ``S`` shuts it
down (marked workers, else the cursor one).
"""

from __future__ import annotations

from tqmon.models.rows import WORKER_COLUMNS, worker_rows
from tqmon.models.table import RowVM
from tqmon.screens.actions import WORKER_BINDINGS, WorkerActions
from tqmon.screens.table_view import TableView


class WorkersScreen(WorkerActions, TableView):
    """The worker list (see the module docstring)."""

    VIEW = "workers"
    COLUMNS = WORKER_COLUMNS
    MARKABLE = True
    SORT = (1, False)  # STATE: lost and offline first
    NOUN = "worker"
    BINDINGS = WORKER_BINDINGS

    def rows(self) -> list[RowVM]:
        return worker_rows(self.cluster)

    def selected_workers(self) -> list[str]:
        return self.table.selection()

    def drill(self, key: str) -> None:
        from tqmon.screens.worker_detail import WorkerDetailScreen

        self.app.push_screen(WorkerDetailScreen(key))
