"""``TableView``: a view whose body is one :class:`~tqmon.widgets.vtable.VirtualTable`.

Subclasses give the columns and a ``rows()`` builder; this class filters (``/``), sorts
(``<`` ``>`` ``I``), keeps the cursor and marks on their keys across refreshes, and turns
``enter`` into :meth:`TableView.drill`. The title line reads ``showing 12 of 40 · sorted by AGE ▼
· 2 marked``.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult

from tqmon.models.table import Cell, Column, RowVM, sort_rows
from tqmon.screens.base import ViewScreen
from tqmon.widgets.vtable import VirtualTable


class TableView(ViewScreen):
    """A filterable, sortable table view (see the module docstring)."""

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    MARKABLE: ClassVar[bool] = False
    SORT: ClassVar[tuple[int, bool]] = (0, False)
    #: What one row is called in the title (``task``, ``worker`` …).
    NOUN: ClassVar[str] = "row"

    def __init__(self, *, filter_text: str = "", crumb: str | None = None) -> None:
        super().__init__(filter_text=filter_text, crumb=crumb)
        self.total = 0
        self.shown = 0
        self._rows: dict[str, RowVM] = {}

    def compose_body(self) -> ComposeResult:
        column, reverse = self.SORT
        yield VirtualTable(self.COLUMNS, markable=self.MARKABLE, sort_column=column,
                           sort_reverse=reverse, id="table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#table", VirtualTable)

    # -- data ----------------------------------------------------------------------------
    def rows(self) -> list[RowVM]:
        """Every row of the view, unfiltered (subclasses)."""
        return []

    def refresh_view(self) -> None:
        if not self.ready:
            return
        table = self.table
        rows = self.rows()
        self.total = len(rows)
        if self.filter is not None:
            now = self.cluster.now()
            rows = [r for r in rows if self.filter.matches(r.fields, now)]
        rows = sort_rows(rows, table.sort_column, table.sort_reverse)
        self.shown = len(rows)
        self._rows = {r.key: r for r in rows}
        table.set_rows([r.key for r in rows], self._rows.__getitem__)

    def row(self, key: str) -> RowVM | None:
        """The row shown for ``key`` (None when filtered out or gone)."""
        return self._rows.get(key)

    def title_cells(self) -> list[Cell]:
        cells = [Cell(f"showing {self.shown:,} of {self.total:,} {self.NOUN}s"
                      + (" matching" if self.filter_text else ""))]
        if self.ready and self.COLUMNS:
            table = self.table
            column = self.COLUMNS[table.sort_column % len(self.COLUMNS)]
            cells.append(Cell(f"sorted by {column.label} {'▼' if table.sort_reverse else '▲'}",
                              "dim"))
            marked = len(table.marked_keys())
            if marked:
                cells.append(Cell(f"{marked} marked", "warn"))
        return cells + self.filter_cells()

    # -- events --------------------------------------------------------------------------
    @on(VirtualTable.SortChanged)
    def _sort_changed(self) -> None:
        self.refresh_view()
        self.refresh_frame()

    @on(VirtualTable.MarksChanged)
    def _marks_changed(self) -> None:
        self.refresh_frame()

    @on(VirtualTable.Activated)
    def _activated(self, event: VirtualTable.Activated) -> None:
        self.drill(event.key)

    def drill(self, key: str) -> None:
        """Open what row ``key`` stands for (subclasses)."""
