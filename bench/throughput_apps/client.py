"""The producer / client side of one measurement, run in its own process.

``python -m bench.throughput_apps.client --system tq|cel --job JSON --out FILE``

Jobs (``kind``):

``enqueue_one``   ``warmup`` untimed ``delay()`` calls (the connection is open), then
                  ``n`` timed ones, one call at a time; the messages stay queued.
``enqueue_group`` one untimed ``delay()`` and one untimed ``group(noop.s() x n)
                  .apply_async()`` (a fresh process's first big send costs several times
                  the next: allocations, first calls), then ``reps`` (3) timed ones, the
                  median reported; then the queue is purged and the purged count returned.
``enqueue_batch`` tqcore only: the same with ``n`` ``delay()`` calls inside
                  ``app.producer_batch()`` (one bulk publish).
``rtt``           with a worker running: ``warmup`` round trips, ``k`` timed
                  ``rtt.delay().get()`` round trips, ``reps`` chords of ``chord_n`` ``add``
                  tasks into ``tsum`` and ``reps`` chains of ``chain_n`` ``add`` tasks, each
                  timed from building the canvas to its ``get()`` returning, and checked.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _purge(system: str, mod: Any) -> int:
    if system == "tq":
        return int(mod.app.transport.purge("celery"))
    return int(mod.app.control.purge())


def run_job(system: str, job: dict[str, Any], profile_out: str | None) -> dict[str, Any]:
    mod = importlib.import_module(f"bench.throughput_apps.{system}")
    if system == "tq":
        from tqcore import chain, chord, group
    else:
        from celery import chain, chord, group  # type: ignore[no-redef]
    kind = job["kind"]
    out: dict[str, Any] = {"kind": kind}
    prof = cProfile.Profile() if profile_out else None
    pc = time.perf_counter
    noop = mod.noop

    if kind == "enqueue_one":
        n, warmup = int(job["n"]), int(job.get("warmup", 0))
        delay = noop.delay
        for _ in range(warmup):
            delay()
        if prof:
            prof.enable()
        t0 = pc()
        for _ in range(n):
            delay()
        out["elapsed"] = pc() - t0
        out["n"], out["warmup"] = n, warmup
    elif kind in ("enqueue_group", "enqueue_batch"):
        n, reps = int(job["n"]), int(job.get("reps", 3))
        noop.delay()  # opens the connection

        def send() -> None:
            if kind == "enqueue_group":
                group(noop.s() for _ in range(n)).apply_async()
            else:
                with mod.app.producer_batch():
                    delay = noop.delay
                    for _ in range(n):
                        delay()

        send()  # warm-up, untimed
        times = []
        for _ in range(reps):
            if prof:
                prof.enable()
            t0 = pc()
            send()
            times.append(pc() - t0)
            if prof:
                prof.disable()
        out["elapsed"] = statistics.median(times)
        out["n"] = n
        out["purged"] = _purge(system, mod)
        out["expected"] = n * (reps + 1) + 1
    elif kind == "rtt":
        timeout = float(job.get("timeout", 60))
        rtt, add, tsum = mod.rtt, mod.add, mod.tsum
        t_ready = pc()
        for _ in range(int(job.get("warmup", 20))):
            rtt.delay().get(timeout=timeout)
        out["warmup_s"] = pc() - t_ready
        if prof:
            prof.enable()
        samples = []
        for _ in range(int(job["k"])):
            t0 = pc()
            rtt.delay().get(timeout=10)
            samples.append(pc() - t0)
        out["rtt"] = samples
        if prof:
            prof.disable()
        n_chord, n_chain, reps = int(job["chord_n"]), int(job["chain_n"]), int(job["reps"])
        out["chord"], out["chain"] = [], []
        want_chord, want_chain = sum(2 * i for i in range(n_chord)), n_chain
        for _ in range(reps):
            t0 = pc()
            got = chord(add.s(i, i) for i in range(n_chord))(tsum.s()).get(timeout=timeout)
            out["chord"].append(pc() - t0)
            if got != want_chord:
                raise SystemExit(f"chord returned {got!r}, expected {want_chord}")
        for _ in range(reps):
            t0 = pc()
            got = chain(add.s(0, 1), *(add.s(1) for _ in range(n_chain - 1)))().get(
                timeout=timeout)
            out["chain"].append(pc() - t0)
            if got != want_chain:
                raise SystemExit(f"chain returned {got!r}, expected {want_chain}")
    else:
        raise SystemExit(f"unknown job {kind!r}")
    if prof:
        prof.disable()
        prof.dump_stats(profile_out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput_apps.client")
    p.add_argument("--system", choices=["tq", "cel"], required=True)
    p.add_argument("--job", required=True, help="the job, as JSON")
    p.add_argument("--out", required=True, help="write the result (JSON) here")
    p.add_argument("--profile-out", help="cProfile the timed part into this file")
    args = p.parse_args(argv)
    res = run_job(args.system, json.loads(args.job), args.profile_out)
    Path(args.out).write_text(json.dumps(res))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
