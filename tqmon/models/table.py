"""The shapes a table view draws: columns, cells with a *tone*, and keyed rows.

A tone is a word (``ok``, ``err``, ``warn``, ``run``, ``info``, ``dim``, ``accent``) that the
table widget maps to a component class styled in ``app.tcss`` with theme variables, so view
models never name a colour. Rows are keyed: the table keeps its cursor and marks on the key
across refreshes, whatever the new order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Tones a cell or row may carry (each maps to a ``vtable--<tone>`` component class).
TONES = ("ok", "err", "warn", "run", "info", "dim", "accent", "stale")


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: inert text plus an optional tone."""

    text: str
    tone: str = ""


@dataclass(frozen=True, slots=True)
class Column:
    """A table column.

    Attributes:
        key: stable id (also the sort key name).
        label: header text.
        width: cells are padded or cut to this many cells.
        justify: ``left`` or ``right``.
        flex: this column takes the width left over (at least ``width``).
    """

    key: str
    label: str
    width: int
    justify: str = "left"
    flex: bool = False


@dataclass(frozen=True, slots=True)
class RowVM:
    """A keyed table row.

    Attributes:
        key: stable identity (task id, hostname, queue name, …).
        cells: one per column, in column order.
        sort: one sortable value per column, in column order.
        fields: what the ``/`` filter matches against (see :mod:`tqmon.models.filtering`).
        tone: a tone for the whole row (``stale`` dims it).
    """

    key: str
    cells: tuple[Cell, ...]
    sort: tuple[Any, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    tone: str = ""


def sort_value(value: Any) -> tuple[int, Any]:
    """A key that sorts None last and never compares a str with a number."""
    if value is None:
        return (2, 0)
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value).lower())


def sort_rows(rows: Sequence[RowVM], column: int, reverse: bool) -> list[RowVM]:
    """``rows`` ordered by the ``column``-th sort value (None always last)."""
    def key(row: RowVM) -> tuple[int, Any]:
        return sort_value(row.sort[column] if column < len(row.sort) else None)

    present = [r for r in rows if column < len(r.sort) and r.sort[column] is not None]
    missing = [r for r in rows if not (column < len(r.sort) and r.sort[column] is not None)]
    return sorted(present, key=key, reverse=reverse) + missing


RowBuilder = Callable[[str], RowVM]
