"""Small modal inputs for actions: the signal menu of ``X`` (terminate, like htop's F9) and the
rate prompt of ``L`` (rate limit). ``esc`` cancels both."""

from __future__ import annotations

import re

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

#: Signals offered for terminate, mildest first.
SIGNALS = (("SIGTERM", "ask the task's process to stop (default)"),
           ("SIGINT", "interrupt (KeyboardInterrupt in the task)"),
           ("SIGQUIT", "quit with a core dump"),
           ("SIGUSR1", "user signal 1 (soft time limit in many setups)"),
           ("SIGKILL", "kill at once: no cleanup, the child is replaced"))
RATE = re.compile(r"^(?:off|0|\d+(?:\.\d+)?(?:/[smh])?)$")


class SignalMenu(ModalScreen[str | None]):
    """Choose the signal for terminate."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def compose(self) -> ComposeResult:
        with Vertical(id="choice-box"):
            yield Label(Text(f"Terminate {self.count:,} task(s) with which signal?"),
                        id="choice-title")
            yield OptionList(*(Option(Text(f"{name:<8} {why}"), id=name) for name, why in SIGNALS),
                             id="choice-list")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RateInput(ModalScreen[str | None]):
    """Ask for a rate limit: ``10/m``, ``2/s``, ``100/h``, or ``off``."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, task_name: str) -> None:
        super().__init__()
        self.task_name = task_name

    def compose(self) -> ComposeResult:
        with Vertical(id="choice-box"):
            yield Label(Text(f"Rate limit for {self.task_name}"), id="choice-title")
            yield Input(placeholder="10/m · 2/s · 100/h · off", id="rate-input")
            yield Static(id="rate-error")

    @on(Input.Submitted, "#rate-input")
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip().lower()
        if not RATE.match(value):
            self.query_one("#rate-error", Static).update(
                Text("a rate is N, N/s, N/m or N/h (or off)"))
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
