"""``EventsScreen`` (``7``, ``:events``): the raw event tail, newest first (like
``celery events --dump``), filterable (``/type:task-failed``). ``enter`` opens the event's task
or worker. Rows are immutable, so each is built once and cached by its sequence number.
"""

from __future__ import annotations

from tqmon.models.cluster import TailEvent
from tqmon.models.rows import EVENT_COLUMNS, event_row
from tqmon.models.table import RowVM
from tqmon.screens.table_view import TableView


class EventsScreen(TableView):
    """The event tail (see the module docstring)."""

    VIEW = "events"
    COLUMNS = EVENT_COLUMNS
    SORT = (0, True)  # newest first
    NOUN = "event"

    def __init__(self, *, filter_text: str = "", crumb: str | None = None) -> None:
        super().__init__(filter_text=filter_text, crumb=crumb)
        self._built: dict[int, RowVM] = {}
        self._events: dict[str, TailEvent] = {}

    def rows(self) -> list[RowVM]:
        built: dict[int, RowVM] = {}
        events: dict[str, TailEvent] = {}
        for item in self.cluster.tail:
            row = self._built.get(item.seq) or event_row(item)
            built[item.seq] = row
            events[row.key] = item
        self._built = built
        self._events = events
        return list(built.values())

    def drill(self, key: str) -> None:
        item = self._events.get(key)
        if item is None:
            return
        uuid = item.event.get("uuid")
        host = item.event.get("hostname")
        if isinstance(uuid, str) and uuid in self.cluster.state.tasks:
            from tqmon.screens.task_detail import TaskDetailScreen

            self.app.push_screen(TaskDetailScreen(uuid))
        elif isinstance(host, str) and host in self.cluster.state.workers:
            from tqmon.screens.worker_detail import WorkerDetailScreen

            self.app.push_screen(WorkerDetailScreen(host))
