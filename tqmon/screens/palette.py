"""``TqmonCommands``: the command palette (``ctrl+p``) lists every view and every action.

Generated from :mod:`tqmon.models.keys` like the key bar and help. A writing action runs on the
view underneath the palette (its selection), through the same path as its key, so it goes
through the command gate and its confirmation; in read-only mode it is listed with ``(RO)``
and only explains why it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tqmon.models.keys import ACTIONS, VIEW_TITLES, VIEWS

if TYPE_CHECKING:
    from tqmon.app import TqmonApp


class TqmonCommands(Provider):
    """Views and actions for the command palette."""

    @property
    def tq(self) -> TqmonApp:
        return cast("TqmonApp", self.app)

    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        entries: list[tuple[str, str, Callable[[], object]]] = []
        for i, view in enumerate(VIEWS, start=1):
            entries.append((f"View: {VIEW_TITLES[view]}", f"key {i} · :{view}",
                            partial(self.tq.action_view, view)))
        ro = self.tq.read_only
        for spec in ACTIONS:
            label = f"Action: {spec.description}" + (" (RO)" if ro else "")
            entries.append((label, f"key {spec.key}", partial(self.tq.run_view_action,
                                                               spec.action)))
        entries.append(("Pause / resume live updates", "key p", self.tq.action_pause))
        entries.append(("Switch to read-only for this session", ":ro", self.tq.action_read_only))
        entries.append(("Quit", ":q · ctrl+q", self.tq.exit))
        return entries

    async def discover(self) -> Hits:
        for text, help_text, command in self._entries():
            yield DiscoveryHit(text, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, command in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), command, text=text, help=help_text)
