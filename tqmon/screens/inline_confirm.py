"""``InlineConfirm``: the one-line ``[y/N]`` bar for reversible single-target actions (tier 1).

``Retry 7f3a…c1 (shop.charge) → retry(…)? [y/N]`` appears at the bottom over the flash line;
the view stays visible. ``y`` confirms; any other key (``n``, ``esc``, ``enter``) declines, so
the default is No.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.screen import ModalScreen
from textual.widgets import Static


class InlineConfirm(ModalScreen[bool]):
    """A bottom-line yes/no question; only ``y`` says yes."""

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        text = Text(no_wrap=True, end="", overflow="ellipsis")
        text.append(self.question)
        text.append("  [y/N]", "bold")
        yield Static(text, id="inline-question")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.dismiss(event.character == "y")
