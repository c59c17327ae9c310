"""The operator actions of the task and worker views, as mixins: each freezes its targets (the
marked rows, else the cursor row), builds a :class:`~tqmon.contracts.Action` and hands it to
the app, which refuses it (read-only, no gate, broker down) or confirms it by tier and sends it
through the command gate. Nothing here talks to a broker.

| Key | Action | Targets |
| --- | --- | --- |
| x | revoke | marked tasks, else the cursor task |
| X | terminate (signal menu) | marked tasks, else the cursor task |
| R | retry | marked tasks, else the cursor task |
| L | rate-limit the task type | the cursor task's name |
| + / - | pool grow / shrink by one | marked workers, else the cursor worker |
| S | shutdown | marked workers, else the cursor worker |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen

from tqmon.contracts import Action
from tqmon.models import fmt

if TYPE_CHECKING:
    from tqmon.app import TqmonApp

TASK_BINDINGS: list[BindingType] = [
    Binding("x", "revoke", "revoke", show=False),
    Binding("X", "terminate", "terminate", show=False),
    Binding("R", "retry", "retry", show=False),
    Binding("L", "rate_limit", "rate-limit", show=False),
]
WORKER_BINDINGS: list[BindingType] = [
    Binding("plus", "pool_grow", "pool+", show=False),
    Binding("minus", "pool_shrink", "pool-", show=False),
    Binding("S", "shutdown", "shutdown", show=False),
]


class TaskActions(Screen[None]):
    """Task actions for a screen that implements :meth:`selected_task_ids`."""

    @property
    def _tq(self) -> TqmonApp:
        return cast("TqmonApp", self.app)

    def selected_task_ids(self) -> list[str]:
        """The task ids an action applies to (subclasses)."""
        return []

    def task_label(self, task_id: str) -> str:
        """``7f3a2c1e shop.charge`` for the blast-radius sample."""
        task = self._tq.cluster.state.tasks.get(task_id)
        name = fmt.safe(task.name, 40) if task is not None and task.name else "?"
        return f"{fmt.short_id(task_id)} {name}"

    def _targets(self, verb: str) -> list[str] | None:
        ids = self.selected_task_ids()
        if not ids:
            self._tq.flash_text(f"{verb}: no task selected", "warn")
            return None
        return ids

    def action_revoke(self) -> None:
        if (ids := self._targets("revoke")) is not None:
            self._tq.request_action(Action("revoke", tuple(ids)),
                                    labels=[self.task_label(i) for i in ids[:5]], noun="task")

    def action_terminate(self) -> None:
        if not self._tq.check_allowed("terminate"):
            return
        if (ids := self._targets("terminate")) is None:
            return
        from tqmon.screens.choice import SignalMenu

        def chosen(signal: str | None) -> None:
            if signal is not None:
                self._tq.request_action(Action("terminate", tuple(ids), {"signal": signal}),
                                        labels=[self.task_label(i) for i in ids[:5]],
                                        noun="task")

        self.app.push_screen(SignalMenu(len(ids)), chosen)

    def action_retry(self) -> None:
        if (ids := self._targets("retry")) is not None:
            self._tq.request_action(Action("retry", tuple(ids)),
                                    labels=[self.task_label(i) for i in ids[:5]], noun="task")

    def action_rate_limit(self) -> None:
        if not self._tq.check_allowed("rate_limit"):
            return
        ids = self.selected_task_ids()
        task = self._tq.cluster.state.tasks.get(ids[0]) if ids else None
        if task is None or not task.name:
            self._tq.flash_text("rate-limit: select a task whose type is known", "warn")
            return
        name = task.name
        from tqmon.screens.choice import RateInput

        def chosen(rate: str | None) -> None:
            if rate is not None:
                self._tq.request_action(
                    Action("rate_limit", (name,), {"rate": None if rate == "off" else rate}),
                    labels=[fmt.safe(name, 60)], noun="task type")

        self.app.push_screen(RateInput(fmt.safe(name, 60)), chosen)


class WorkerActions(Screen[None]):
    """Worker actions for a screen that implements :meth:`selected_workers`."""

    @property
    def _tq(self) -> TqmonApp:
        return cast("TqmonApp", self.app)

    def selected_workers(self) -> list[str]:
        """The hostnames an action applies to (subclasses)."""
        return []

    def _worker_action(self, kind: str, params: dict[str, object]) -> None:
        hosts = self.selected_workers()
        if not hosts:
            self._tq.flash_text(f"{kind}: no worker selected", "warn")
            return
        self._tq.request_action(
            Action(kind, tuple(hosts), dict(params), destination=tuple(hosts)),  # type: ignore[arg-type]
            labels=[fmt.safe(h, 60) for h in hosts[:5]], noun="worker")

    def action_pool_grow(self) -> None:
        self._worker_action("pool_grow", {"n": 1})

    def action_pool_shrink(self) -> None:
        self._worker_action("pool_shrink", {"n": 1})

    def action_shutdown(self) -> None:
        self._worker_action("shutdown", {})
