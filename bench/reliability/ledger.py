"""The ledger: what ran, written by the tasks and the producers themselves.

Every process appends to its own file in the ledger directory, one ``os.write`` per
line with ``O_APPEND`` (no fsync: a SIGKILL keeps the page cache):

* producers, after ``apply_async`` returned: ``Q <task_id> <t> <kind>``;
* task bodies, first thing: ``S <task_id> <attempt> <pid> <t_start>``;
* task bodies, last thing: ``E <task_id> <attempt> <pid> <t_start> <t_end> <extra>``.

A body killed mid-run leaves an ``S`` without its ``E``. Analysis (reliability.md
§4.1): **lost** = enqueued ids with no ``E`` row and no dead-letter entry;
**duplicate** = every ``E`` row beyond the first of an id; **phantom** = an id that
ran but was never enqueued.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

_fds: dict[tuple[str, int], int] = {}


def append(directory: str | os.PathLike[str], prefix: str, line: str) -> None:
    """Append ``line`` to this process's ledger file ``<prefix>-<pid>.log``."""
    pid = os.getpid()
    key = (str(directory), pid)
    fd = _fds.get(key)
    if fd is None:
        fd = os.open(os.path.join(directory, f"{prefix}-{pid}.log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fds[key] = fd
    os.write(fd, line.encode())


def close_files() -> None:
    """Close this process's ledger files (the driver, between scenarios)."""
    for key in [k for k in _fds if k[1] == os.getpid()]:
        os.close(_fds.pop(key))


def record_enqueued(directory: str | os.PathLike[str], task_id: str, kind: str) -> None:
    """Producer side: ``task_id`` was accepted by the broker (call after ``delay`` returned)."""
    append(directory, "enq", f"Q {task_id} {time.time():.6f} {kind}\n")


@dataclasses.dataclass(frozen=True)
class Run:
    """One execution of a task body (``end`` is None when it was interrupted)."""

    task_id: str
    attempt: int
    pid: int
    start: float
    end: float | None = None
    extra: str = "-"


class LedgerView:
    """A parsed view of a ledger directory; :meth:`refresh` reads only what was
    appended since the last call (a soak ledger has hundreds of thousands of lines)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.enqueued: dict[str, tuple[float, str]] = {}  # id -> (t, kind)
        self.starts: dict[str, list[Run]] = defaultdict(list)
        self.ends: dict[str, list[Run]] = defaultdict(list)
        self._offsets: dict[Path, int] = {}
        self._done: set[str] = set()
        self.refresh()

    def refresh(self) -> LedgerView:
        """Parse the complete lines appended since the last refresh."""
        for path in sorted(self.directory.glob("*.log")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1  # a line being written is read next time
            if not cut:
                continue
            self._offsets[path] = offset + cut
            for line in data[:cut].decode(errors="replace").splitlines():
                self._parse(line.split())
        return self

    def _parse(self, p: list[str]) -> None:
        try:
            if p[0] == "Q" and len(p) == 4:
                self.enqueued[p[1]] = (float(p[2]), p[3])
            elif p[0] == "S" and len(p) == 5:
                self.starts[p[1]].append(Run(p[1], int(p[2]), int(p[3]), float(p[4])))
            elif p[0] == "E" and len(p) == 7:
                self.ends[p[1]].append(Run(p[1], int(p[2]), int(p[3]), float(p[4]),
                                           float(p[5]), p[6]))
                self._done.add(p[1])
        except (IndexError, ValueError):
            pass  # a torn line cannot happen with one write(), but a reader must not crash

    # -- views ---------------------------------------------------------------------
    def ids(self, kind: str | None = None) -> set[str]:
        """Enqueued ids (of one kind)."""
        return {tid for tid, (_, k) in self.enqueued.items() if kind is None or k == kind}

    def completed(self, ids: Iterable[str] | None = None) -> set[str]:
        """Ids with at least one ``E`` row (among ``ids``)."""
        return set(self._done) if ids is None else self._done.intersection(ids)

    def all_starts(self) -> list[Run]:
        return sorted((r for runs in self.starts.values() for r in runs), key=lambda r: r.start)

    def all_ends(self) -> list[Run]:
        return sorted((r for runs in self.ends.values() for r in runs), key=lambda r: r.end or 0)

    def pids(self) -> set[int]:
        """Every process that ran a task body."""
        return {r.pid for runs in self.starts.values() for r in runs}


@dataclasses.dataclass
class Analysis:
    """Lost / duplicate / phantom counts over the ids of interest."""

    expected: int
    completed: int
    lost: list[str]
    duplicates: int
    duplicated_ids: list[str]
    phantom: list[str]
    dead_lettered: int
    extra_starts: int


def analyse(view: LedgerView, dead_ids: Iterable[str] = (), kinds: Iterable[str] | None = None,
            exclude: Iterable[str] = ()) -> Analysis:
    """The §4.1 analysis of ``view`` (restricted to the enqueued ids of ``kinds``)."""
    kinds = set(kinds) if kinds is not None else None
    excluded = set(exclude)
    expected = {tid for tid, (_, k) in view.enqueued.items()
                if (kinds is None or k in kinds) and tid not in excluded}
    dead = set(dead_ids)
    done = view.completed(expected)
    ends = Counter({tid: len(view.ends[tid]) for tid in expected if view.ends.get(tid)})
    starts = Counter({tid: len(view.starts[tid]) for tid in expected if view.starts.get(tid)})
    ran = {tid for tid, runs in view.starts.items() if runs} | view.completed()
    return Analysis(
        expected=len(expected), completed=len(done),
        lost=sorted(expected - done - dead),
        duplicates=sum(c - 1 for c in ends.values() if c > 1),
        duplicated_ids=sorted(tid for tid, c in ends.items() if c > 1),
        phantom=sorted(ran - set(view.enqueued)),
        dead_lettered=len(expected & dead),
        extra_starts=sum(c - 1 for c in starts.values() if c > 1))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-quantile (0..1, nearest rank) of ``values``, None when empty."""
    data = sorted(values)
    if not data:
        return None
    k = min(len(data) - 1, max(0, int(round(q * (len(data) - 1)))))
    return data[k]
