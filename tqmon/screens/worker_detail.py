"""``WorkerDetailScreen``: one worker's figures (heartbeat, pool, load, counts, queues,
software, clock drift) above the tasks it handled, newest first.

Worker keys (``+`` ``-`` ``S``) act on this worker; task keys (``x`` ``X`` ``R`` ``L``) act on
the marked tasks, else the cursor task.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult

from tqcore.events import Task
from tqmon.models import fmt
from tqmon.models.detail import worker_facts
from tqmon.models.table import Cell
from tqmon.screens.actions import TASK_BINDINGS, WORKER_BINDINGS, WorkerActions
from tqmon.screens.tasks import TasksScreen
from tqmon.widgets.toned import Toned


class WorkerDetailScreen(WorkerActions, TasksScreen):
    """One worker (see the module docstring)."""

    VIEW = "worker_detail"
    NOUN = "task"
    BINDINGS = [*TASK_BINDINGS, *WORKER_BINDINGS]

    def __init__(self, host: str) -> None:
        super().__init__(crumb=fmt.safe(host, 60))
        self.host = host

    def compose_body(self) -> ComposeResult:
        yield Toned(id="worker-facts")
        yield from super().compose_body()

    def scope(self) -> Iterable[Task]:
        host = self.host
        return (t for t in self.cluster.state.tasks.values() if t.worker == host)

    def title_cells(self) -> list[Cell]:
        return [Cell(f"worker {fmt.safe(self.host, 80)}", "accent"), *super().title_cells()]

    def refresh_view(self) -> None:
        if not self.ready:
            return
        facts = self.query_one("#worker-facts", Toned)
        text = Text(end="")
        for i, (label, cell) in enumerate(worker_facts(self.cluster, self.host)):
            if i:
                text.append("\n" if i % 2 == 0 else "   ")
            text.append(f"{label:>13} ", facts.tone_style("dim"))
            text.append(f"{cell.text:<46}", facts.tone_style(cell.tone))
        facts.update(text)
        super().refresh_view()

    def selected_workers(self) -> list[str]:
        return [self.host]
