"""Per-minute aggregates per task type: throughput, failure rate, runtime percentiles.

Kept apart from the task rows (which are evicted) so stats and graphs never change when a row
goes. Runtimes go into log-scale histograms (buckets 4 % wide, so a percentile is within about
2 % of the exact value) rather than lists: a minute of 100k tasks costs a few hundred counters.
Minutes older than the window (by the newest event seen) are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_RATIO = 1.04
_SCALE = 1.0 / math.log(_RATIO)
#: Runtimes below this (seconds) share the first bucket.
_FLOOR = 1e-6
_LOG_FLOOR = math.log(_FLOOR)
#: Beyond this many task types in one minute, the rest are counted under this name.
OTHER = "<other>"


def _bucket(runtime: float) -> int:
    if runtime <= _FLOOR:
        return 0
    return int((math.log(runtime) - _LOG_FLOOR) * _SCALE)


def _value(bucket: int) -> float:
    """The geometric middle of a bucket."""
    return _FLOOR * _RATIO ** (bucket + 0.5)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Runtime percentiles in seconds (None when no runtime was recorded)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class MinutePoint:
    """Finished tasks in one minute (``minute`` is its start, epoch seconds)."""

    minute: float
    succeeded: int
    failed: int
    retried: int


@dataclass(frozen=True, slots=True)
class TaskTypeStats:
    """One task type over a window."""

    name: str
    succeeded: int
    failed: int
    retried: int
    #: failed / (succeeded + failed), None when none finished.
    failure_rate: float | None
    runtime: Percentiles


class _Cell:
    """One task type in one minute."""

    __slots__ = ("succeeded", "failed", "retried", "hist")

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.hist: dict[int, int] = {}


def percentiles_of(hists: Iterable[dict[int, int]]) -> Percentiles:
    """p50/p95/p99 of merged runtime histograms."""
    merged: dict[int, int] = {}
    for hist in hists:
        for bucket, n in hist.items():
            merged[bucket] = merged.get(bucket, 0) + n
    total = sum(merged.values())
    if not total:
        return Percentiles(0, None, None, None)
    ranks = [max(1, math.ceil(q * total)) for q in (0.50, 0.95, 0.99)]
    found: list[float] = []
    seen = 0
    for bucket in sorted(merged):
        seen += merged[bucket]
        while len(found) < 3 and seen >= ranks[len(found)]:
            found.append(_value(bucket))
    return Percentiles(total, found[0], found[1], found[2])


class Aggregates:
    """Per-minute counters and runtime histograms per task type, over ``window_minutes``."""

    def __init__(self, clock: Callable[[], float], window_minutes: int = 60,
                 max_types: int = 1_000) -> None:
        self._clock = clock
        self.window_minutes = window_minutes
        self.max_types = max_types
        self._minutes: dict[int, dict[str, _Cell]] = {}
        self._newest = -1
        # The minute most events land in, cached for the hot path.
        self._current = -1
        self._cells: dict[str, _Cell] = {}

    # -- folding --------------------------------------------------------------------
    def _cell(self, name: str | None, ts: float) -> _Cell | None:
        minute = int(ts // 60)
        if minute == self._current:
            cells = self._cells
        else:
            found = self._minutes.get(minute)
            if found is None:
                if minute <= self._newest - self.window_minutes:
                    return None  # older than the window
                found = self._minutes[minute] = {}
                if minute > self._newest:
                    self._newest = minute
                    low = minute - self.window_minutes
                    for old in [m for m in self._minutes if m <= low]:
                        del self._minutes[old]
            cells = found
            if minute == self._newest:
                self._current, self._cells = minute, cells
        key = name if name is not None else "?"
        cell = cells.get(key)
        if cell is None:
            if len(cells) >= self.max_types:
                key = OTHER
                cell = cells.get(key)
            if cell is None:
                cell = cells[key] = _Cell()
        return cell

    def succeeded(self, name: str | None, ts: float, runtime: float | None) -> None:
        """Count a task of type ``name`` that succeeded at ``ts`` after ``runtime`` seconds."""
        cell = self._cell(name, ts)
        if cell is not None:
            cell.succeeded += 1
            if runtime is not None:
                b = _bucket(runtime)
                cell.hist[b] = cell.hist.get(b, 0) + 1

    def failed(self, name: str | None, ts: float, runtime: float | None) -> None:
        """Count a failure (its runtime counts in the percentiles too)."""
        cell = self._cell(name, ts)
        if cell is not None:
            cell.failed += 1
            if runtime is not None:
                b = _bucket(runtime)
                cell.hist[b] = cell.hist.get(b, 0) + 1

    def retried(self, name: str | None, ts: float) -> None:
        """Count a retry."""
        cell = self._cell(name, ts)
        if cell is not None:
            cell.retried += 1

    # -- reading --------------------------------------------------------------------
    def _window(self, minutes: int | None) -> list[int]:
        span = min(minutes or self.window_minutes, self.window_minutes)
        now = int(self._clock() // 60)
        return list(range(now - span + 1, now + 1))

    def _cells_in(self, minutes: int | None, name: str | None) -> Iterable[_Cell]:
        for minute in self._window(minutes):
            cells = self._minutes.get(minute)
            if cells is None:
                continue
            if name is None:
                yield from cells.values()
            elif name in cells:
                yield cells[name]

    def throughput(self, minutes: int | None = None, name: str | None = None
                   ) -> tuple[MinutePoint, ...]:
        """One point per minute of the window ending now, oldest first (empty minutes as zeros)."""
        out = []
        for minute in self._window(minutes):
            cells = self._minutes.get(minute, {})
            chosen = cells.values() if name is None else [cells[name]] if name in cells else []
            s = f = r = 0
            for cell in chosen:
                s += cell.succeeded
                f += cell.failed
                r += cell.retried
            out.append(MinutePoint(minute * 60.0, s, f, r))
        return tuple(out)

    def failure_rate(self, name: str | None = None, minutes: int | None = None) -> float | None:
        """failed / (succeeded + failed) over the window, for one type or all; None if none."""
        s = f = 0
        for cell in self._cells_in(minutes, name):
            s += cell.succeeded
            f += cell.failed
        return f / (s + f) if s + f else None

    def percentiles(self, name: str | None = None, minutes: int | None = None) -> Percentiles:
        """Runtime p50/p95/p99 over the window, for one task type or all."""
        return percentiles_of(cell.hist for cell in self._cells_in(minutes, name))

    def task_types(self, minutes: int | None = None) -> tuple[TaskTypeStats, ...]:
        """Per task type over the window, by name."""
        by_name: dict[str, list[_Cell]] = {}
        for minute in self._window(minutes):
            for name, cell in self._minutes.get(minute, {}).items():
                by_name.setdefault(name, []).append(cell)
        out = []
        for name in sorted(by_name):
            cells = by_name[name]
            s = sum(c.succeeded for c in cells)
            f = sum(c.failed for c in cells)
            out.append(TaskTypeStats(
                name=name, succeeded=s, failed=f, retried=sum(c.retried for c in cells),
                failure_rate=f / (s + f) if s + f else None,
                runtime=percentiles_of(c.hist for c in cells)))
        return tuple(out)
