"""``FailuresScreen`` (``5``, ``:failures``): failures grouped by signature (exception type,
normalised message, top frame), most frequent first, with first/last seen and a per-minute
trend. An incident is usually one signature, not 1,904 rows.

``enter`` lists the signature's tasks; ``R`` retries the whole signature (blast-radius modal);
``L`` rate-limits its most frequent task type.
"""

from __future__ import annotations

from textual.binding import Binding

from tqmon.contracts import Action
from tqmon.models import fmt
from tqmon.models.rows import FAILURE_COLUMNS, failure_rows
from tqmon.models.table import RowVM
from tqmon.screens.table_view import TableView


class FailuresScreen(TableView):
    """Failure signatures (see the module docstring)."""

    VIEW = "failures"
    COLUMNS = FAILURE_COLUMNS
    SORT = (1, True)  # COUNT
    NOUN = "signature"
    BINDINGS = [Binding("R", "retry", "retry", show=False),
                Binding("L", "rate_limit", "rate-limit", show=False)]

    def rows(self) -> list[RowVM]:
        return failure_rows(self.cluster)

    def drill(self, key: str) -> None:
        from tqmon.screens.tasks import TasksScreen

        self.app.push_screen(TasksScreen(only=("signature", key), crumb=f"sig {key}"))

    def action_retry(self) -> None:
        sig_id = self.table.cursor_key
        signatures = self.cluster.state.signatures
        if sig_id is None or sig_id not in signatures:
            self.tq.flash_text("retry: no signature selected", "warn")
            return
        sig = signatures[sig_id].info()
        tasks = self.cluster.state.tasks
        labels = []
        for task_id in reversed(sig.samples):
            task = tasks.get(task_id)
            labels.append(f"{fmt.short_id(task_id)} {fmt.safe(task.name if task else '?', 40)}")
        self.tq.request_action(Action("retry_signature", (sig_id,)), labels=labels[:5],
                               count=sig.count, noun="failed task")

    def action_rate_limit(self) -> None:
        sig_id = self.table.cursor_key
        signatures = self.cluster.state.signatures
        if not self.tq.check_allowed("rate_limit"):
            return
        if sig_id is None or sig_id not in signatures:
            self.tq.flash_text("rate-limit: no signature selected", "warn")
            return
        names = signatures[sig_id].task_names
        name = max(names, key=lambda n: names[n]) if names else None
        if not name or name in ("?", "…"):
            self.tq.flash_text("rate-limit: the task type is unknown", "warn")
            return
        from tqmon.screens.choice import RateInput

        def chosen(rate: str | None) -> None:
            if rate is not None:
                self.tq.request_action(
                    Action("rate_limit", (name,), {"rate": None if rate == "off" else rate}),
                    labels=[fmt.safe(name, 60)], noun="task type")

        self.app.push_screen(RateInput(fmt.safe(name, 60)), chosen)
