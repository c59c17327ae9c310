"""``ConfirmScreen``: the blast-radius modal for bulk and destructive actions (tiers 2 and 3).

It shows what will happen before it happens: how many targets, a sample of five, the exact
command from the command gate, which workers receive it, and the frozen moment the targets were
taken. Focus starts on **Cancel**, so confirming takes a deliberate ``tab`` then ``enter``. For
tier 3 (purge, huge bulk) the confirm button stays disabled until the queue name (or the count)
is typed and a reason given. An optional reason (required for tier 3) goes to the audit log.
``esc`` always cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    """What the modal shows (all strings inert).

    Attributes:
        title: ``Revoke 1,904 tasks?``
        verb: the confirm button's label (``Revoke 1,904``).
        count: number of targets.
        sample: up to five target labels.
        command: the exact control command (the gate's ``describe``).
        scope: who receives it (``broadcast to all 3 workers`` / ``w1@ops-a``).
        frozen_at: when the targets were frozen (clock text).
        typed: text the user must type to arm the button (tier 3), else None.
        more: targets not in the sample (shown as "… and N more").
    """

    title: str
    verb: str
    count: int
    sample: tuple[str, ...]
    command: str
    scope: str
    frozen_at: str
    typed: str | None = None
    more: int = 0


class ConfirmScreen(ModalScreen[str | None]):
    """The blast-radius confirmation (see the module docstring). Dismisses with the operator's
    reason (``""`` when none was given) to go ahead, or None to cancel."""

    BINDINGS = [Binding("escape", "cancel", "cancel", show=False)]
    AUTO_FOCUS = "#cancel"

    def __init__(self, request: ConfirmRequest) -> None:
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        r = self.request
        with Vertical(id="confirm-box"):
            yield Label(Text(r.title), id="confirm-title")
            yield Static(self._facts(), id="confirm-facts")
            if r.typed is not None:
                yield Label(Text(f"Type {r.typed!s} to arm the button:"), id="confirm-type-hint")
                yield Input(placeholder=r.typed, id="confirm-typed")
            yield Input(placeholder="reason (written to the audit log)"
                        + (": required" if r.typed is not None else ": optional"),
                        id="confirm-reason")
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(Text(r.verb), id="confirm", variant="error",
                             disabled=r.typed is not None)

    def _facts(self) -> Text:
        r = self.request
        text = Text(no_wrap=False, end="")
        rows: Sequence[tuple[str, str]] = (
            ("Targets", f"{r.count:,} (frozen {r.frozen_at})"),
            ("Sample", "  ".join(r.sample) if r.sample else "—"),
            ("Command", r.command),
            ("Sent to", r.scope),
        )
        for i, (label, value) in enumerate(rows):
            if i:
                text.append("\n")
            text.append(f"{label:<9}", "bold")
            text.append(value)
            if label == "Sample" and r.more:
                text.append(f"  … and {r.more:,} more")
        return text

    @property
    def reason(self) -> str:
        return self.query_one("#confirm-reason", Input).value.strip()

    @property
    def armed(self) -> bool:
        """Tier 3: the target typed exactly and a reason given; otherwise always."""
        if self.request.typed is None:
            return True
        typed = self.query_one("#confirm-typed", Input).value.strip()
        return typed == self.request.typed and bool(self.reason)

    @on(Input.Changed)
    def _changed(self) -> None:
        self.query_one("#confirm", Button).disabled = not self.armed

    @on(Input.Submitted)
    def _submitted(self) -> None:
        if self.request.typed is not None and self.armed:
            self.dismiss(self.reason)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        if self.armed:
            self.dismiss(self.reason)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
