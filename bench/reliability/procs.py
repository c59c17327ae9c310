"""Helper processes for R16: producers and a ``queue_stats`` reader.

``python -m bench.reliability.procs produce --n 1000 --kind t`` sends ``rel.late``
tasks one ``delay`` at a time (one write transaction each, the contended path) and
records each id in the ledger after the call returned.

``python -m bench.reliability.procs read --stop FILE --out FILE.json`` polls
``queue_stats`` (as tqmon would) until ``FILE`` exists, then writes a summary.
Both read ``TQ_BROKER_URL`` and ``REL_LEDGER_DIR`` from the environment; an
exception is printed with ``HELPER-ERROR`` and, for the producer, exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback


def produce(n: int, kind: str, seconds: float) -> int:
    from bench.reliability import ledger
    from bench.reliability.app import app, late

    directory = os.environ["REL_LEDGER_DIR"]
    app.transport  # noqa: B018 - open before timing
    errors = 0
    for i in range(n):
        try:
            res = late.delay(i, seconds)
        except Exception:  # noqa: BLE001 - counted and shown, then we go on
            errors += 1
            print("HELPER-ERROR producer", traceback.format_exc(), flush=True)
            continue
        ledger.record_enqueued(directory, res.id, kind)
    print(f"produced {n - errors}/{n}", flush=True)
    return 1 if errors else 0


def read(stop: str, out: str, interval: float) -> int:
    from bench.reliability.app import app

    polls = errors = 0
    latencies: list[float] = []
    while not os.path.exists(stop):
        t0 = time.perf_counter()
        try:
            app.transport.queue_stats()
            app.transport.list_workers()
        except Exception:  # noqa: BLE001
            errors += 1
            print("HELPER-ERROR reader", traceback.format_exc(), flush=True)
        latencies.append(time.perf_counter() - t0)
        polls += 1
        time.sleep(interval)
    latencies.sort()
    summary = {"polls": polls, "errors": errors,
               "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
               "max_ms": 1000 * latencies[-1] if latencies else None}
    with open(out, "w") as f:
        json.dump(summary, f)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability.procs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--kind", default="t")
    p.add_argument("--seconds", type=float, default=0.0)
    r = sub.add_parser("read")
    r.add_argument("--stop", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    if args.cmd == "produce":
        return produce(args.n, args.kind, args.seconds)
    return read(args.stop, args.out, args.interval)


if __name__ == "__main__":
    sys.exit(main())
