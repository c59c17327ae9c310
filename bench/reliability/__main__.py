"""``python -m bench.reliability --tier ci|soak [--only R1,R2] [--broker redis] [--seed N]
[--json out.json]``."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from bench.reliability import report, suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability",
                                     description="tqcore reliability fault suite (SQLite, Redis, RabbitMQ)")
    parser.add_argument("--tier", choices=suite.TIERS, default="ci")
    parser.add_argument("--only", default="", help="comma-separated scenario ids (default: all)")
    parser.add_argument("--broker", default="",
                        help="only the rows of these brokers: sqlite, redis, rabbitmq (comma-separated)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument("--keep", action="store_true", help="keep every scenario's directory")
    parser.add_argument("--dir", default=None, help="base directory (default: a temp dir)")
    args = parser.parse_args(argv)
    specs = suite.load()
    ids = [s.strip() for s in args.only.split(",") if s.strip()] or list(specs)
    brokers = {b.strip() for b in args.broker.split(",") if b.strip()}
    ids = [i for i in ids if not brokers or i not in specs or specs[i].broker in brokers]
    unknown = [i for i in ids if i not in specs]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    base = Path(args.dir) if args.dir else None
    print(f"tier={args.tier} seed={args.seed} python={platform.python_version()}", flush=True)
    print(report.HEADER)
    print(report.RULE, flush=True)
    results = []
    t0 = time.monotonic()
    for sid in ids:
        res = suite.run(sid, args.tier, args.seed, base=base, keep=args.keep)
        results.append(res)
        print(res.row(), flush=True)
        for c in res.checks:
            if not c.ok:
                print(f"    {sid} FAILED {c.name}: {c.detail}", file=sys.stderr)
        if res.error:
            print(f"    {sid} ERROR {res.error} {res.figures.get('traceback', '')}",
                  file=sys.stderr)
    print(f"\n{len(results)} scenario(s) in {time.monotonic() - t0:.0f} s; recovery = per-event"
          " seconds (label in the cell)")
    if args.json_path:
        report.dump_json(results, args.json_path, {"tier": args.tier, "seed": args.seed})
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
