"""Schedules for periodic tasks: fixed intervals and crontab expressions (Celery's names).

Every schedule answers two questions on epoch seconds, which is all beat needs:

* :meth:`BaseSchedule.next_after` - the first run strictly after an instant;
* :meth:`BaseSchedule.due_slots` - the runs that fell due since the last one (so a beat
  that was down catches up instead of skipping).

Celery's datetime API (:meth:`BaseSchedule.is_due`, :meth:`BaseSchedule.remaining_estimate`)
is built on them.

``crontab`` fields follow cron syntax: ``*``, numbers, names (``mon``, ``jan``), ranges
(``mon-fri``, ``22-2`` wraps around), steps (``*/15``, ``1-31/2``, ``5/10``) and lists of
all of these. As in Celery, a run needs *both* ``day_of_month`` and ``day_of_week`` to
match (classic cron runs when either does). Wall times are those of the schedule's time
zone: a time skipped by a daylight-saving jump does not run, and a repeated one runs once.
"""

from __future__ import annotations

import abc
import bisect
import calendar
import datetime as dt
import math
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from tqcore.beat.cron_parser import ParseException, crontab_parser, parse_field

__all__ = ["BaseSchedule", "ParseException", "crontab", "crontab_parser", "maybe_schedule",
           "schedstate", "schedule", "to_timezone"]

UTC = dt.UTC

#: How far the crontab search looks before it gives up (a valid expression matches far sooner).
_SEARCH_YEARS = 400


class schedstate(NamedTuple):  # noqa: N801 - Celery's name
    """Celery's answer to "is it due?": ``is_due`` now, and seconds until the next check."""

    is_due: bool
    next: float


def to_timezone(tz: str | dt.tzinfo | None) -> dt.tzinfo:
    """A ``tzinfo`` from a zone name (``"Europe/Paris"``), a tzinfo, or None (UTC).

    Raises:
        ValueError: an unknown zone name.
    """
    if tz is None:
        return UTC
    if isinstance(tz, dt.tzinfo):
        return tz
    if tz.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {tz!r}") from exc


def _to_datetime(value: dt.datetime | float) -> dt.datetime:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class BaseSchedule(abc.ABC):
    """What beat asks of a schedule. Times are epoch seconds (floats).

    Args:
        nowfun: returns the current time as an aware datetime (tests inject a clock).
    """

    def __init__(self, nowfun: Callable[[], dt.datetime] | None = None) -> None:
        self.nowfun = nowfun

    @abc.abstractmethod
    def next_after(self, ts: float) -> float:
        """The first run strictly after ``ts``."""

    def due_slots(self, last: float, now: float, limit: int) -> tuple[list[float], bool]:
        """The runs in ``(last, now]``, oldest first: the newest ``limit`` of them.

        Returns:
            ``(slots, dropped)``: ``dropped`` is True when older runs were left out.
        """
        kept: deque[float] = deque(maxlen=max(1, limit))
        count = 0
        slot = self.next_after(last)
        while slot <= now:
            kept.append(slot)
            count += 1
            slot = self.next_after(slot)
        return list(kept), count > len(kept)

    @abc.abstractmethod
    def key(self) -> str:
        """A stable text identity: beat resets an entry's run history when it changes."""

    def describe(self) -> str:
        """A short human description (shown by tqmon)."""
        return self.key()

    def bind_timezone(self, tz: dt.tzinfo) -> BaseSchedule:
        """This schedule, with ``tz`` as its time zone if it has none (the app's zone)."""
        return self

    # -- Celery's datetime API -------------------------------------------------------
    def now(self) -> dt.datetime:
        """The current time, aware (UTC unless ``nowfun`` says otherwise)."""
        return self.nowfun() if self.nowfun is not None else dt.datetime.now(UTC)

    def remaining_estimate(self, last_run_at: dt.datetime | float) -> dt.timedelta:
        """Time from now until the first run after ``last_run_at`` (negative when overdue)."""
        nxt = self.next_after(_to_datetime(last_run_at).timestamp())
        return dt.timedelta(seconds=nxt - self.now().timestamp())

    def is_due(self, last_run_at: dt.datetime | float) -> schedstate:
        """Whether a run is due given the last one, and seconds until the next check."""
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining <= 0:
            now = self.now().timestamp()
            return schedstate(True, max(0.0, self.next_after(now) - now))
        return schedstate(False, remaining)


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Run every ``run_every`` (seconds or a timedelta).

    Args:
        run_every: the interval.
        relative: align runs to multiples of the interval since the epoch (every 10 s
            at :00, :10, ...) instead of counting from the previous run.
        nowfun: the current time (for tests).

    Raises:
        ValueError: the interval is not positive.
    """

    def __init__(self, run_every: float | dt.timedelta, relative: bool = False,
                 nowfun: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__(nowfun)
        seconds = (run_every.total_seconds() if isinstance(run_every, dt.timedelta)
                   else float(run_every))
        if not seconds > 0 or math.isinf(seconds):
            raise ValueError(f"schedule interval must be a positive number of seconds, "
                             f"not {run_every!r}")
        self.seconds = seconds
        self.relative = relative

    @property
    def run_every(self) -> dt.timedelta:
        """The interval as a timedelta (Celery's attribute)."""
        return dt.timedelta(seconds=self.seconds)

    def next_after(self, ts: float) -> float:
        if self.relative:
            return (math.floor(ts / self.seconds) + 1) * self.seconds
        return ts + self.seconds

    def due_slots(self, last: float, now: float, limit: int) -> tuple[list[float], bool]:
        limit = max(1, limit)
        if self.relative:
            first = math.floor(last / self.seconds) + 1
            final = math.floor(now / self.seconds)
            if final < first:
                return [], False
            start = max(first, final - limit + 1)
            return [k * self.seconds for k in range(start, final + 1)], start > first
        count = math.floor((now - last) / self.seconds + 1e-9)
        if count < 1:
            return [], False
        start = max(1, count - limit + 1)
        return [last + k * self.seconds for k in range(start, count + 1)], start > 1

    def key(self) -> str:
        return f"every {self.seconds!r}s" + (" relative" if self.relative else "")

    def describe(self) -> str:
        return f"every {self.seconds:g}s"

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g} seconds>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and (self.seconds, self.relative) == (
            other.seconds, other.relative)

    def __hash__(self) -> int:
        return hash((self.seconds, self.relative))


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Run at the wall times matching a cron expression, in a time zone.

    Args:
        minute: 0-59.
        hour: 0-23.
        day_of_week: 0-6 with Sunday 0 (7 is Sunday too), or names ``sun``..``sat``.
        day_of_month: 1-31.
        month_of_year: 1-12, or names ``jan``..``dec``.
        tz: a zone name or tzinfo; None means the app's ``timezone`` setting (else UTC).
        nowfun: the current time (for tests).

    Raises:
        ParseException: a field is malformed, or the expression can never match
            (``day_of_month=31, month_of_year=2``).
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*",
                 tz: str | dt.tzinfo | None = None,
                 nowfun: Callable[[], dt.datetime] | None = None) -> None:
        super().__init__(nowfun)
        self._orig_minute, self.minute = parse_field("minute", minute)
        self._orig_hour, self.hour = parse_field("hour", hour)
        self._orig_day_of_week, self.day_of_week = parse_field("day_of_week", day_of_week)
        self._orig_day_of_month, self.day_of_month = parse_field("day_of_month", day_of_month)
        self._orig_month_of_year, self.month_of_year = parse_field("month_of_year", month_of_year)
        self.tz: dt.tzinfo | None = to_timezone(tz) if tz is not None else None
        if not any(d <= _month_days(m) for m in self.month_of_year for d in self.day_of_month):
            raise ParseException(f"crontab {self.expression} never matches a date")
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        # Python's weekday(): Monday 0; cron's: Sunday 0.
        self._weekdays = frozenset((d - 1) % 7 for d in self.day_of_week)

    @classmethod
    def from_string(cls, expression: str, tz: str | dt.tzinfo | None = None) -> crontab:
        """A crontab from five fields in cron order: ``"*/5 9-17 * * mon-fri"``.

        Raises:
            ParseException: not five fields, or a bad field.
        """
        parts = expression.split()
        if len(parts) != 5:
            raise ParseException(f"a cron expression has 5 fields, got {expression!r}")
        minute, hour, day_of_month, month_of_year, day_of_week = parts
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, tz=tz)

    @property
    def expression(self) -> str:
        """The five fields as given, in cron order."""
        return " ".join((self._orig_minute, self._orig_hour, self._orig_day_of_month,
                         self._orig_month_of_year, self._orig_day_of_week))

    @property
    def timezone(self) -> dt.tzinfo:
        """The zone wall times are read in."""
        return self.tz or UTC

    def bind_timezone(self, tz: dt.tzinfo) -> crontab:
        if self.tz is not None:
            return self
        bound = crontab(self._orig_minute, self._orig_hour, self._orig_day_of_week,
                        self._orig_day_of_month, self._orig_month_of_year, tz=tz,
                        nowfun=self.nowfun)
        return bound

    def key(self) -> str:
        return f"cron {self.expression} {self.timezone}"

    def describe(self) -> str:
        return f"{self.expression} ({self.timezone})"

    def __repr__(self) -> str:
        return f"<crontab: {self.expression} (m/h/dM/MY/d) {self.timezone}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and self._sets() == other._sets() and (
            self.tz == other.tz)

    def __hash__(self) -> int:
        return hash(self._sets())

    def _sets(self) -> tuple[frozenset[int], ...]:
        return (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year)

    # -- the search -----------------------------------------------------------------
    def next_after(self, ts: float) -> float:
        tz = self.timezone
        # Near a DST fold, a wall time before ts's own can still be a later instant;
        # start the search early enough to see it (the instants are filtered below).
        back = 0 if _steady(tz, ts) else 3 * 3600
        wall = _wall(ts - back, tz) + dt.timedelta(minutes=1)
        for _ in range(_SEARCH_YEARS * 366 * 24 * 60):
            wall = self._next_wall(wall)
            instant = _instant(wall, tz)
            if instant is not None and instant > ts:
                return instant
            wall += dt.timedelta(minutes=1)
        raise RuntimeError(f"no run of {self!r} after {ts}")  # pragma: no cover

    def previous(self, ts: float) -> float | None:
        """The last run at or before ``ts`` (None if there is none in centuries)."""
        tz = self.timezone
        ahead = 0 if _steady(tz, ts) else 3 * 3600
        wall = _wall(ts + ahead, tz)
        for _ in range(_SEARCH_YEARS * 366 * 24 * 60):
            found = self._prev_wall(wall)
            if found is None:
                return None
            instant = _instant(found, tz)
            if instant is not None and instant <= ts:
                return instant
            wall = found - dt.timedelta(minutes=1)
        return None  # pragma: no cover

    def due_slots(self, last: float, now: float, limit: int) -> tuple[list[float], bool]:
        limit = max(1, limit)
        found: list[float] = []
        slot = self.previous(now)
        while slot is not None and slot > last and len(found) < limit:
            found.append(slot)
            slot = self.previous(slot - 1.0)
        dropped = slot is not None and slot > last
        found.reverse()
        return found, dropped

    def _day_ok(self, day: dt.date) -> bool:
        return day.day in self.day_of_month and day.weekday() in self._weekdays

    def _next_wall(self, start: dt.datetime) -> dt.datetime:
        """The first matching naive wall minute at or after ``start``."""
        day = start.date()
        hour, minute = start.hour, start.minute
        end = day.year + _SEARCH_YEARS
        while day.year < end:
            if day.month not in self.month_of_year:
                day = _first_of_next_month(day)
                hour = minute = 0
                continue
            if self._day_ok(day):
                i = bisect.bisect_left(self._hours, hour)
                for h in self._hours[i:]:
                    j = bisect.bisect_left(self._minutes, minute if h == hour else 0)
                    if j < len(self._minutes):
                        return dt.datetime(day.year, day.month, day.day, h, self._minutes[j])
            day += dt.timedelta(days=1)
            hour = minute = 0
        raise RuntimeError(f"no run of {self!r} in {_SEARCH_YEARS} years")  # pragma: no cover

    def _prev_wall(self, start: dt.datetime) -> dt.datetime | None:
        """The last matching naive wall minute at or before ``start``."""
        day = start.date()
        hour, minute = start.hour, start.minute
        end = day.year - _SEARCH_YEARS
        while day.year > max(end, 1):
            if day.month not in self.month_of_year:
                day = day.replace(day=1) - dt.timedelta(days=1)
                hour, minute = 23, 59
                continue
            if self._day_ok(day):
                i = bisect.bisect_right(self._hours, hour)
                for h in reversed(self._hours[:i]):
                    j = bisect.bisect_right(self._minutes, minute if h == hour else 59)
                    if j > 0:
                        return dt.datetime(day.year, day.month, day.day, h, self._minutes[j - 1])
            day -= dt.timedelta(days=1)
            hour, minute = 23, 59
        return None


def _month_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _first_of_next_month(day: dt.date) -> dt.date:
    return dt.date(day.year + 1, 1, 1) if day.month == 12 else dt.date(day.year, day.month + 1, 1)


def _wall(ts: float, tz: dt.tzinfo) -> dt.datetime:
    """The naive wall time of ``ts`` in ``tz``, down to the minute."""
    return dt.datetime.fromtimestamp(ts, tz).replace(tzinfo=None, second=0, microsecond=0,
                                                     fold=0)


def _instant(wall: dt.datetime, tz: dt.tzinfo) -> float | None:
    """The first instant showing ``wall`` in ``tz``, or None if a DST jump skips it."""
    aware = wall.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None, fold=0)
    if back != wall:
        return None
    return aware.timestamp()


def _steady(tz: dt.tzinfo, ts: float) -> bool:
    """True when ``tz``'s offset is the same 3 hours either side of ``ts``."""
    if tz is UTC:
        return True
    offsets = {dt.datetime.fromtimestamp(ts + d, tz).utcoffset() for d in (-10800, 0, 10800)}
    return len(offsets) == 1


def maybe_schedule(value: Any, relative: bool = False) -> BaseSchedule:
    """A schedule from what ``beat_schedule`` accepts: seconds, a timedelta, a schedule,
    or a five-field cron string.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, dt.timedelta) or (isinstance(value, int | float)
                                           and not isinstance(value, bool)):
        return schedule(value, relative=relative)
    if isinstance(value, str):
        return crontab.from_string(value)
    raise ValueError(f"not a schedule: {value!r} (use seconds, a timedelta, schedule() or "
                     f"crontab())")
