"""``FlashLine``: the one-line result of the last command (celery curses monitor style).

``revoke: 2 ok   w1@ops-a: ok   w2@ops-b: no reply``: every worker's reply is shown, and a worker
that did not answer is spelled out as "no reply", never counted as a success. Refusals (read-only,
broker down) are flashed here too.
"""

from __future__ import annotations

from collections.abc import Sequence

from tqmon.models.table import Cell
from tqmon.widgets.toned import Toned


class FlashLine(Toned):
    """The flash line; empty until something is flashed."""

    def flash(self, cells: Sequence[Cell], tone: str = "") -> None:
        """Show ``cells``; ``tone`` sets the line's class (``err``, ``warn``, ``ok``)."""
        for name in ("ok", "warn", "err"):
            self.set_class(tone == name, f"flash-{name}")
        self.show_cells(cells)
