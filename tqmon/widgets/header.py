"""``FrameHeader``: the top line of every screen.

``tqmon · broker (redacted) · connection pill · lag · events/s · RO|RW · clock``. The pill reads
``● live``, ``◐ degraded``, ``○ disconnected 42s · retry in 8s``, ``⏸ paused`` or ``⏪ replay``;
the whole frame gets the ``stale`` class while what is shown may be out of date.
"""

from __future__ import annotations

from tqmon.models.frame import FrameInfo
from tqmon.widgets.toned import Toned


class FrameHeader(Toned):
    """The frame's header line (see the module docstring)."""

    def show_info(self, info: FrameInfo) -> None:
        """Draw ``info``."""
        self.set_class(info.stale, "stale")
        self.show_cells(info.cells)
