"""The ``/`` filter: compile the text once, match rows against it, report errors inline.

The language is :mod:`tqmon.query` (``name:send_* state:FAILURE age>5m !worker:w2 (a OR b)``);
this module only adapts it for the views: an invalid query becomes a :class:`FilterError`
(message plus the character position to put a caret under), never an exception, and a matcher
that misbehaves on a strange row never hides the row.

A row's ``fields`` mapping uses the query's keys: ``name``, ``state``, ``worker``, ``queue``,
``exc_type``/``exception``/``exc``, ``signature``/``sig``, ``root_id``/``root``, ``id``,
``args``, ``kwargs``, ``retries``, ``runtime`` and ``age`` (seconds) or timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tqmon.query import Query, QueryError, parse


@dataclass(frozen=True, slots=True)
class FilterError:
    """Why a filter did not parse, and where (0-based character position, or None)."""

    message: str
    position: int | None


@dataclass(frozen=True, slots=True)
class Filter:
    """A compiled filter; ``text`` is what the user typed."""

    text: str
    query: Query

    def matches(self, fields: Mapping[str, Any], now: float) -> bool:
        """True when the row described by ``fields`` passes (a matcher error keeps the row)."""
        try:
            return bool(self.query.matches(fields, now))
        except Exception:  # noqa: BLE001 - a faulty match must not blank the view
            return True


def compile_filter(text: str) -> Filter | FilterError | None:
    """The filter for ``text``: None for an empty one, a :class:`FilterError` when invalid."""
    text = text.strip()
    if not text:
        return None
    try:
        return Filter(text, parse(text))
    except QueryError as exc:
        return FilterError(exc.message, exc.position)
    except Exception as exc:  # noqa: BLE001 - a parser bug is shown, not raised
        return FilterError(f"cannot parse: {exc}", None)
