"""``PromptScreen``: the ``:`` command line and the ``/`` filter line, at the bottom.

* ``/`` checks the query as you type; an invalid query is shown inline with a caret under the
  position the parser gave, and ``enter`` keeps the prompt open until it parses. It is never a
  crash and never silently ignored.
* ``:`` runs a command (``:tasks state:FAILURE``, ``:q``, ``:ro`` …) with completion (``→``
  accepts the suggestion) and history (``↑``/``↓``).

``esc`` closes without changing anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from tqmon.models.filtering import FilterError, compile_filter

#: Cells before the input text (the ``/`` or ``:`` and a space; see app.tcss).
SIGIL_WIDTH = 2

Validate = Callable[[str], "FilterError | str | None"]


class PromptScreen(ModalScreen[str | None]):
    """A one-line prompt (see the module docstring).

    Args:
        mode: ``filter`` or ``command``.
        initial: the text to start with (the current filter).
        validate: applies the text; returns an error (shown inline) or None (then it closes).
        history: earlier entries, oldest first (appended to on success).
        suggestions: completion words for command mode.
    """

    BINDINGS = [
        Binding("escape", "cancel", "cancel", show=False),
        Binding("up", "history(-1)", "previous", show=False),
        Binding("down", "history(1)", "next", show=False),
    ]

    def __init__(self, mode: Literal["filter", "command"], initial: str, *, validate: Validate,
                 history: list[str] | None = None, suggestions: Sequence[str] = ()) -> None:
        super().__init__()
        self.mode = mode
        self.initial = initial
        self.validate = validate
        self.history = history if history is not None else []
        self._pos = len(self.history)
        self.suggestions = list(suggestions)

    def compose(self) -> ComposeResult:
        sigil = "/" if self.mode == "filter" else ":"
        placeholder = ("name:send_* state:FAILURE age>5m !worker:w2   (esc cancels)"
                       if self.mode == "filter" else
                       "tasks state:FAILURE · workers · queues · q · ro · help   (esc cancels)")
        suggester = SuggestFromList(self.suggestions, case_sensitive=False) \
            if self.suggestions else None
        with Vertical(id="prompt-box"):
            yield Static(id="prompt-error")
            with Horizontal(id="prompt-line"):
                yield Static(Text(sigil), id="prompt-sigil")
                yield Input(self.initial, placeholder=placeholder, id="prompt-input",
                            suggester=suggester)

    def on_mount(self) -> None:
        self.query_one("#prompt-error", Static).display = False
        field = self.query_one("#prompt-input", Input)
        field.focus()
        field.cursor_position = len(field.value)

    def show_error(self, error: FilterError | str | None) -> None:
        """Show ``error`` above the input (a caret under the position when known)."""
        box = self.query_one("#prompt-error", Static)
        if error is None:
            box.display = False
            box.update("")
            return
        message, position = (error.message, error.position) if isinstance(error, FilterError) \
            else (error, None)
        text = Text(no_wrap=False, end="")
        if position is not None:
            text.append(" " * (position + SIGIL_WIDTH) + "^\n", "bold")
        text.append(f"{'invalid filter' if self.mode == 'filter' else 'error'}: {message}")
        box.update(text)
        box.display = True

    @on(Input.Changed, "#prompt-input")
    def _changed(self, event: Input.Changed) -> None:
        if self.mode == "filter":
            compiled = compile_filter(event.value)
            self.show_error(compiled if isinstance(compiled, FilterError) else None)

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value
        error = self.validate(text)
        if error is not None:
            self.show_error(error)
            return
        if text.strip() and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self.dismiss(text)

    def action_history(self, delta: int) -> None:
        if not self.history:
            return
        self._pos = max(0, min(len(self.history), self._pos + delta))
        value = self.history[self._pos] if self._pos < len(self.history) else ""
        field = self.query_one("#prompt-input", Input)
        field.value = value
        field.cursor_position = len(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
