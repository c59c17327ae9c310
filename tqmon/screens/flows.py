"""``FlowsScreen`` (``6``, ``:flows``): workflow runs (chains, groups, chords) with progress,
failures, state counts and duration, most recently active first. ``enter`` draws the run.
"""

from __future__ import annotations

from tqmon.models.rows import FLOW_COLUMNS, flow_rows
from tqmon.models.table import RowVM
from tqmon.screens.table_view import TableView


class FlowsScreen(TableView):
    """Workflow runs (see the module docstring)."""

    VIEW = "flows"
    COLUMNS = FLOW_COLUMNS
    SORT = (7, True)  # ACTIVE: most recent first
    NOUN = "workflow"

    def rows(self) -> list[RowVM]:
        return flow_rows(self.cluster)

    def drill(self, key: str) -> None:
        from tqmon.screens.flow_detail import FlowDetailScreen

        self.app.push_screen(FlowDetailScreen(key))
