"""The crontab field parser: one field's text to the set of values it matches.

Syntax per comma-separated part: ``*``, a number, a name (``mon``, ``monday``, ``jan``),
a range ``a-b`` (wrapping around when ``b < a``: ``22-2``), each optionally with a step
``/n``; ``a/n`` alone runs from ``a`` to the field's end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FULL_NAMES = {
    _DAY_NAMES: ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"),
    _MONTH_NAMES: ("january", "february", "march", "april", "may", "june", "july", "august",
                   "september", "october", "november", "december"),
}


class ParseException(ValueError):
    """A crontab field could not be parsed (Celery's name)."""


class crontab_parser:  # noqa: N801 - Celery's name
    """Parse one crontab field into the set of values it matches.

    Args:
        max_: one past the largest value (60 for minutes).
        min_: the smallest value (1 for days of month and months).
        names: names for values, from ``min_`` on (``sun``..``sat``, ``jan``..``dec``).
        aliases: extra numbers mapped to canonical ones (day of week 7 is Sunday).
    """

    _part = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?$")

    def __init__(self, max_: int, min_: int = 0, names: tuple[str, ...] = (),
                 aliases: dict[int, int] | None = None) -> None:
        self.max_ = max_
        self.min_ = min_
        self.names = names
        self.aliases = aliases or {}
        self._by_name = {name: i + min_ for i, name in enumerate(names)}
        # full names too: "monday", "january"
        self._by_name.update({full: i + min_
                              for i, full in enumerate(_FULL_NAMES.get(names, ()))})

    def parse(self, spec: str) -> set[int]:
        """The values ``spec`` matches.

        Raises:
            ParseException: bad syntax, an unknown name, a value out of range, a zero step.
        """
        values: set[int] = set()
        for part in spec.lower().replace(" ", "").split(","):
            match = self._part.match(part)
            if match is None:
                raise ParseException(f"invalid crontab field {spec!r} (at {part!r})")
            star, start, end, step_text = match.groups()
            step = int(step_text) if step_text is not None else 1
            if step < 1:
                raise ParseException(f"invalid step in {spec!r}: steps start at 1")
            if star:
                low, high = self.min_, self.max_ - 1
            else:
                low = self._value(start, spec)
                if end is not None:
                    high = self._value(end, spec)
                elif step_text is not None:
                    high = self.max_ - 1  # "5/15": from 5 to the end, every 15
                else:
                    high = low
            values.update(self._expand(low, high, step))
        return {self.aliases.get(v, v) for v in values}

    def _value(self, text: str, spec: str) -> int:
        if text.isdigit():
            value = int(text)
        elif text in self._by_name:
            value = self._by_name[text]
        else:
            raise ParseException(f"invalid name {text!r} in crontab field {spec!r}")
        top = max([self.max_ - 1, *self.aliases])
        if not self.min_ <= value <= top:
            raise ParseException(f"{value} is out of range {self.min_}-{top} in {spec!r}")
        return value

    def _expand(self, low: int, high: int, step: int) -> list[int]:
        top = max([self.max_ - 1, *self.aliases])
        if high >= low:
            seq = list(range(low, high + 1))
        else:  # wraps around: 22-2 is 22, 23, 0, 1, 2
            seq = list(range(low, top + 1)) + list(range(self.min_, high + 1))
        return seq[::step]


_PARSERS = {
    "minute": crontab_parser(60),
    "hour": crontab_parser(24),
    "day_of_week": crontab_parser(7, names=_DAY_NAMES, aliases={7: 0}),
    "day_of_month": crontab_parser(32, 1),
    "month_of_year": crontab_parser(13, 1, names=_MONTH_NAMES),
}


def parse_field(name: str, value: Any) -> tuple[str, frozenset[int]]:
    """The text of a crontab argument and the values it matches.

    Raises:
        ParseException: a malformed field or a value of the wrong type.
    """
    parser = _PARSERS[name]
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Iterable):
        text = ",".join(str(v) for v in value)
    else:
        raise ParseException(f"crontab {name} must be a string, an int or a list, not {value!r}")
    if not text:
        raise ParseException(f"crontab {name} is empty")
    return text, frozenset(parser.parse(text))
