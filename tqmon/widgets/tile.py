"""``TileBox``: one overview tile: a title with its view key, a big figure, detail lines.

Focusable: ``enter`` (or a click) posts :class:`TileBox.Opened` so the overview can open the
tile's view, pre-filtered.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message

from tqmon.models.detail import Tile
from tqmon.widgets.toned import Toned


class TileBox(Toned, can_focus=True):
    """An overview tile (see the module docstring)."""

    BINDINGS = [Binding("enter", "open", "open", show=False)]

    class Opened(Message):
        """The user opened the tile."""

        def __init__(self, tile: Tile) -> None:
            super().__init__()
            self.tile = tile

    def __init__(self, key: str, *, classes: str | None = None) -> None:
        super().__init__(id=f"tile-{key}", classes=classes)
        self.tile: Tile | None = None

    def show_tile(self, tile: Tile) -> None:
        """Draw ``tile``."""
        self.tile = tile
        self.border_title = tile.title
        text = Text(end="")
        text.append(tile.figure.text, self.tone_style("big") + self.tone_style(tile.figure.tone))
        for line in tile.lines:
            text.append("\n")
            text.append(line.text, self.tone_style(line.tone))
        self.update(text)

    def action_open(self) -> None:
        if self.tile is not None:
            self.post_message(self.Opened(self.tile))

    def on_click(self, event: events.Click) -> None:
        self.action_open()
