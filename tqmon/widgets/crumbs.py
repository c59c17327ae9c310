"""``Crumbs``: where you are (``Overview › Queues › emails``) and what the view shows.

The right part is the view's title line: ``showing 500 of 98,342 matching · sorted by age ▼ ·
3 marked · filter state:FAILURE`` (k9s breadcrumbs plus the view-title convention of the UX
spec).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from tqmon.models.table import Cell
from tqmon.widgets.toned import Toned


class Crumbs(Toned):
    """Breadcrumbs and the view's title line."""

    def show_path(self, path: Sequence[str], title: Sequence[Cell]) -> None:
        """Draw the crumb ``path`` (already inert) and the ``title`` cells."""
        text = Text(no_wrap=True, end="", overflow="ellipsis")
        for i, part in enumerate(path):
            if i:
                text.append(" › ", self.tone_style("dim"))
            text.append(part, self.tone_style("accent" if i == len(path) - 1 else ""))
        if title:
            text.append("  ")
            text.append_text(self.cells_text(title, sep=" · "))
        self.update(text)
