"""``HelpScreen``: every key of the current view (``?``), generated from
:mod:`tqmon.models.keys`. Writing keys stay listed in read-only mode, greyed and marked ``(RO)``.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tqmon.models.keys import ACTIONS, keys_for


class HelpScreen(ModalScreen[None]):
    """Keys for one view; ``esc``, ``?`` or ``q`` closes."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "close", show=False)]

    def __init__(self, view: str, title: str, read_only: bool) -> None:
        super().__init__()
        self.view = view
        self.title_text = title
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text(f"Keys · {self.title_text}", "bold"), id="help-title")
            yield Static(self._table(), id="help-keys")
            yield Static(Text("esc, ? or q closes · ctrl+p opens the command palette"),
                         id="help-foot")

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", no_wrap=True)
        table.add_column()
        writes = {k.action for k in ACTIONS}
        for spec in keys_for(self.view):
            ro = self.read_only and spec.action in writes
            style = "dim strike" if ro else ""
            table.add_row(Text(spec.key, style="bold" if not ro else "dim"),
                          Text(spec.description + ("  (RO: read-only mode)" if ro else ""),
                               style=style))
        return table

    def action_close(self) -> None:
        self.dismiss(None)
