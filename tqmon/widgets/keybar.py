"""``KeyBar``: the bottom line: view tabs ``1 Overview … 7 Events`` and this view's keys.

Generated from :mod:`tqmon.models.keys`, like help and the palette. In read-only mode the
writing keys stay listed, greyed, with ``(RO)``.
"""

from __future__ import annotations

from rich.text import Text

from tqmon.models.keys import NAVIGATION, VIEW_TITLES, VIEWS, keys_for
from tqmon.widgets.toned import Toned


class KeyBar(Toned):
    """Key hints for ``view`` (the active tab is ``active``)."""

    def show_keys(self, view: str, active: str, read_only: bool, filterable: bool = True) -> None:
        """Draw the tabs, then this view's own keys, then the common ones (cut first when the
        line is too narrow: they are in help)."""
        text = Text(no_wrap=True, end="", overflow="ellipsis")
        for i, name in enumerate(VIEWS, start=1):
            tone = "tab-active" if name == active else "tab"
            text.append(f" {i}", self.tone_style("key"))
            text.append(f" {VIEW_TITLES[name]} ", self.tone_style(tone))
        text.append(" │", self.tone_style("dim"))
        specs = [s for s in keys_for(view) if s.bar and (filterable or s.action != "filter")]
        specs.sort(key=lambda s: s in NAVIGATION)
        for spec in specs:
            ro = read_only and spec.writes
            text.append(f" {spec.key}", self.tone_style("key-ro" if ro else "key"))
            text.append(f" {spec.label}{' (RO)' if ro else ''} ",
                        self.tone_style("key-ro" if ro else ""))
        self.update(text)
