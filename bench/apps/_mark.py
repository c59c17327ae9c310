"""Record when a worker process runs its first task (cheap: one flag test per task).

The benchmark sets ``BENCH_MARK_DIR``; the first task run in each worker process writes
``first-<pid>`` there with the wall-clock time. The benchmark takes the earliest file.
"""

from __future__ import annotations

import os
import time

_MARK_DIR = os.environ.get("BENCH_MARK_DIR")
_marked = False


def mark_first() -> None:
    """Write this process's first-task timestamp once."""
    global _marked
    if _marked or not _MARK_DIR:
        return
    _marked = True
    now = time.time()
    path = os.path.join(_MARK_DIR, f"first-{os.getpid()}")
    with open(path + ".tmp", "w") as fh:
        fh.write(repr(now))
    os.replace(path + ".tmp", path)


def earliest_mark(mark_dir: str) -> float | None:
    """The earliest first-task time recorded in ``mark_dir``, or None."""
    times = []
    for name in os.listdir(mark_dir):
        if name.startswith("first-") and not name.endswith(".tmp"):
            try:
                with open(os.path.join(mark_dir, name)) as fh:
                    times.append(float(fh.read()))
            except (OSError, ValueError):
                continue
    return min(times) if times else None
