"""``Toned``: a ``Static`` that draws :class:`~tqmon.models.table.Cell` sequences with tones.

View-models name a tone (``ok``, ``err``, …), never a colour; this base class maps each tone to
a component class (``tone--ok``) styled in ``app.tcss`` with theme variables. Text is built with
``rich.text.Text`` from inert strings, never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from tqmon.models.table import TONES, Cell

#: Extra tones used by the frame and the graph.
#: Tones whose background is part of the look (the others keep the widget's background).
_KEEP_BACKGROUND = frozenset({"tab-active", "selected"})
_EXTRA = ("edge", "selected", "key", "key-ro", "tab", "tab-active", "big")


class Toned(Static):
    """A static widget rendering tone-carrying cells (subclasses add the layout)."""

    COMPONENT_CLASSES = {f"tone--{tone}" for tone in (*TONES, *_EXTRA)}

    def tone_style(self, tone: str) -> Style:
        """The Rich style of ``tone`` (empty for none or unknown)."""
        if not tone:
            return Style()
        style = self.get_component_rich_style(f"tone--{tone}", default=Style())
        if tone in _KEEP_BACKGROUND:
            return style
        return Style(color=style.color, bold=style.bold, dim=style.dim, italic=style.italic,
                     underline=style.underline, strike=style.strike, reverse=style.reverse)

    def cells_text(self, cells: Iterable[Cell], sep: str = "") -> Text:
        """One line of ``cells``, each in its tone."""
        text = Text(no_wrap=True, end="", overflow="ellipsis")
        first = True
        for cell in cells:
            if not first and sep:
                text.append(sep)
            first = False
            text.append(cell.text, self.tone_style(cell.tone))
        return text

    def show_cells(self, cells: Iterable[Cell], sep: str = "") -> None:
        """Replace the content with ``cells``."""
        self.update(self.cells_text(cells, sep))
