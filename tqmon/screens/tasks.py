"""``TasksScreen`` (``4``, ``:tasks``): every stored task, newest first, for 100k rows.

The table is virtual: each refresh filters and sorts task *ids* and rows are built only for the
lines on screen. Refreshes of a big store are throttled to what they cost (never more than a
quarter of the time on the UI thread). ``enter`` opens the task; ``space`` marks; actions apply
to the marked tasks, else the cursor task.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from tqcore.events import Task
from tqmon.models import fmt
from tqmon.models.rows import TASK_COLUMNS, TaskFields, task_row, task_sort_key
from tqmon.models.table import Cell, RowVM
from tqmon.screens.actions import TASK_BINDINGS, TaskActions
from tqmon.screens.table_view import TableView

#: Above this many stored tasks a refresh is throttled by its cost.
BIG = 20_000


class TasksScreen(TaskActions, TableView):
    """The task list (see the module docstring)."""

    VIEW = "tasks"
    COLUMNS = TASK_COLUMNS
    MARKABLE = True
    SORT = (6, True)  # AGE: most recently changed first
    NOUN = "task"
    BINDINGS = TASK_BINDINGS

    def __init__(self, *, filter_text: str = "", crumb: str | None = None,
                 only: tuple[str, str] | None = None) -> None:
        """``only=("queue", name)`` or ``("signature", id)``: a drill-down that lists exactly the
        tasks whose attribute equals the value (not the filter's substring match)."""
        super().__init__(filter_text=filter_text, crumb=crumb)
        self.only = only
        self._seen: tuple[int, str, int, bool] | None = None
        self._next_at = 0.0

    def scope(self) -> Iterable[Task]:
        """The tasks this view lists (all, or those of its drill-down)."""
        tasks = self.cluster.state.tasks.values()
        if self.only is None:
            return tasks
        attr, value = self.only
        return (t for t in tasks if getattr(t, attr) == value)

    def title_cells(self) -> list[Cell]:
        cells = super().title_cells()
        if self.only is not None:
            attr, value = self.only
            cells.insert(0, Cell(f"{attr} {fmt.safe(value, 60)}", "accent"))
        return cells

    def refresh_view(self) -> None:
        if not self.ready:
            return
        table = self.table
        cluster = self.cluster
        state = cluster.state
        key = (cluster.version, self.filter_text, table.sort_column, table.sort_reverse)
        started = time.perf_counter()
        if key == self._seen or (len(state.tasks) > BIG and started < self._next_at
                                 and self._seen is not None and key[1:] == self._seen[1:]):
            table.invalidate()  # ages and runtimes move on; the order did not change
            return
        now = cluster.now()
        tasks = list(self.scope())
        self.total = len(tasks)
        if self.filter is not None:
            matches = self.filter.matches
            tasks = [t for t in tasks if matches(TaskFields(t, now), now)]
        tasks.sort(key=task_sort_key(table.sort_column), reverse=table.sort_reverse)
        self.shown = len(tasks)
        stale = cluster.stale
        tasks_by_id = state.tasks

        def row_for(task_id: str) -> RowVM:
            task = tasks_by_id.get(task_id)
            if task is None:  # evicted since the last refresh
                return RowVM(task_id, (Cell(task_id[:8], "dim"), Cell("(evicted)", "dim")))
            return task_row(task, cluster.now(), stale)

        table.set_rows([t.uuid for t in tasks], row_for)
        self._seen = key
        cost = time.perf_counter() - started
        self._next_at = started + max(0.3, 4 * cost)

    def row(self, key: str) -> RowVM | None:
        task = self.cluster.state.tasks.get(key)
        return None if task is None else task_row(task, self.cluster.now())

    def selected_task_ids(self) -> list[str]:
        return self.table.selection()

    def drill(self, key: str) -> None:
        from tqmon.screens.task_detail import TaskDetailScreen

        if key in self.cluster.state.tasks:
            self.app.push_screen(TaskDetailScreen(key))
