"""A task counter cheap enough for a 10k tasks/s drain: one ``time.time()`` and one
``struct.pack_into`` into a memory-mapped file per task, no broker round trip.

Each worker thread (of each process) owns one file ``cnt-<pid>-<thread id>.bin`` in
``BENCH_MARK_DIR``: ``<count: int64><first run: float64><last run: float64>`` (wall-clock
seconds). The benchmark sums the counts and takes the earliest first and the latest last
run, so a drain is timed from the workers' own clocks rather than from a polling loop.
Threads never share a file (no lost increments); a forked child opens its own.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from typing import Any

RECORD = struct.Struct("<qdd")
_DIR = os.environ.get("BENCH_MARK_DIR")
_local = threading.local()


def _open(now: float) -> list[Any]:
    assert _DIR is not None
    path = os.path.join(_DIR, f"cnt-{os.getpid()}-{threading.get_ident()}.bin")
    fh = open(path, "w+b")  # noqa: SIM115 - kept open (with the map) for the thread's life
    fh.write(b"\0" * RECORD.size)
    fh.flush()
    mm = mmap.mmap(fh.fileno(), RECORD.size)
    return [os.getpid(), mm, 0, now, fh]


def hit() -> None:
    """Count one task run by this thread."""
    if _DIR is None:
        return
    now = time.time()
    st = getattr(_local, "st", None)
    if st is None or st[0] != os.getpid():  # first task here, or a forked child
        st = _local.st = _open(now)
    st[2] += 1
    RECORD.pack_into(st[1], 0, st[2], st[3], now)


def totals(mark_dir: str) -> tuple[int, float | None, float | None]:
    """(tasks run, earliest first run, latest last run) over every counter in ``mark_dir``."""
    count, first, last = 0, None, None
    for name in os.listdir(mark_dir):
        if not name.startswith("cnt-"):
            continue
        try:
            with open(os.path.join(mark_dir, name), "rb") as fh:
                data = fh.read(RECORD.size)
        except OSError:
            continue
        if len(data) != RECORD.size:
            continue
        n, f, lt = RECORD.unpack(data)
        if n <= 0:
            continue
        count += n
        first = f if first is None else min(first, f)
        last = lt if last is None else max(last, lt)
    return count, first, last
