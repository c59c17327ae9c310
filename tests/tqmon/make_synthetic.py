"""Generate ``tests/tqmon/data/synthetic.jsonl``: a small, real recording for tqmon's UI tests.

It runs a real tqcore workload on a temporary SQLite broker with two in-process workers
(:func:`tqcore.testing.start_worker`) and records what a monitor would have seen, in the
recording format of :mod:`tqmon.contracts` (one posted item per JSON line):

* ``events``: bodies read from ``app.transport.subscribe_events()``, flattened;
* ``figures``: ``queue_stats()`` and ``list_workers()`` polled every second;
* ``link``: ``connecting`` then ``live``.

The workload has something for every view: successes, two failure signatures, retries, a revoke,
a backlog in ``emails``, a queue nobody consumes (``reports``), a worker that goes away, a task
still running at the end, a chain, a group, a chord (one whose header fails), and hostile strings
(terminal escapes, an OSC 52 clipboard write, a bidi override, Rich markup) in args and errors.

Then it makes the file stable: task ids become UUID-shaped digests of their order of first
appearance, times are shifted to start at :data:`T0`, pids and temp paths are replaced. Run::

    python3 tests/tqmon/make_synthetic.py [OUT]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tqcore import App, chain, chord, group
from tqcore.testing import start_worker

#: The recording's first timestamp after normalisation (a fixed date, for stable snapshots).
T0 = 1_795_271_700.0
OUT = Path(__file__).parent / "data" / "synthetic.jsonl"
HOSTILE = "\x1b]52;c;ZXZpbA==\x07[bold red]pwned[/] \x1b[2J\u202eexe.txt"

app = App("synth", set_as_current=True)
app.conf.task_routes = {"shop.send_email": {"queue": "emails"},
                        "shop.build_report": {"queue": "reports"}}


class CardDeclined(Exception):
    """The payment provider declined the card."""


@app.task(name="shop.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="shop.charge")
def charge(order: int, cents: int) -> dict[str, Any]:
    time.sleep(0.02)
    if order % 4 == 0:
        raise CardDeclined(f"card declined for order {order} (code 51)")
    return {"order": order, "charged": cents}


@app.task(name="shop.send_email")
def send_email(to: str) -> str:
    time.sleep(0.4)
    if to.startswith("bounce"):
        raise TimeoutError(f"SMTP server smtp-{len(to)} timed out after 5.0s")
    return f"sent to {to}"


@app.task(name="shop.fetch_rates", bind=True, max_retries=3)
def fetch_rates(self: Any, currency: str) -> float:
    if (self.request.retries or 0) < 2:
        raise self.retry(exc=ConnectionResetError("rates API reset the connection"), countdown=0.2)
    return 1.08


@app.task(name="shop.validate")
def validate(order: int) -> int:
    time.sleep(0.01)
    if order == 13:
        raise ValueError(f"order {order} has no lines")
    return order


@app.task(name="shop.reserve")
def reserve(order: int) -> int:
    time.sleep(0.01)
    return order


@app.task(name="shop.notify")
def notify(results: list[Any]) -> str:
    return f"posted {len(results)} results"


@app.task(name="shop.import_feed")
def import_feed(url: str) -> None:
    raise RuntimeError(f"bad feed {HOSTILE}")


@app.task(name="shop.resize")
def resize(image: int) -> str:
    time.sleep(4.0)
    return f"resized {image}"


@app.task(name="shop.build_report")
def build_report(account: int) -> str:
    return f"report {account}"


class Collector:
    """Reads event bodies and polls figures in a thread, appending recording lines."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.sub = app.transport.subscribe_events()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        last_poll = 0.0
        while not self.stop.is_set():
            bodies = self.sub.get(0.1)
            events: list[dict[str, Any]] = []
            for body in bodies:
                decoded = json.loads(body)
                events.extend(decoded if isinstance(decoded, list) else [decoded])
            now = time.time()
            if events:
                self.lines.append({"t": now, "kind": "events", "events": events})
            if now - last_poll >= 1.0:
                last_poll = now
                queues = [q.as_dict() for q in app.transport.queue_stats()]
                self.lines.append({"t": now, "kind": "figures", "queues": queues,
                                   "workers": app.transport.list_workers()})


def workload(collector: Collector) -> None:
    """The tasks and workflows; returns while ``shop.resize`` is still running."""
    for i in range(12):
        add.delay(i, i)
    for order in range(1, 13):
        charge.delay(order, order * 100)
    fetch_rates.delay("EUR")
    import_feed.delay(f"https://feeds.example/{HOSTILE}")
    chain(validate.s(7), reserve.s(), charge.s(700)).delay()
    group(add.s(n, 1) for n in range(6)).delay()
    chord([validate.s(n) for n in range(20, 25)], notify.s()).delay()
    chord([validate.s(n) for n in (11, 12, 13)], notify.s()).delay()
    for n in range(5):
        build_report.delay(n)
    time.sleep(1.0)
    for n in range(24):
        send_email.delay(f"{'bounce' if n % 5 == 0 else 'user'}{n}@example.com")
    doomed = send_email.delay("revoked@example.com")
    app.control.revoke(doomed.id)
    time.sleep(1.5)


def normalise(lines: list[dict[str, Any]], tmp: str) -> list[str]:
    """Stable ids, times, pids and paths; JSON text lines."""
    first = min(line["t"] for line in lines)
    shift = T0 - first
    uuid_re = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    ids: dict[str, str] = {}

    def new_id(match: re.Match[str]) -> str:
        if match.group(0) not in ids:
            h = hashlib.md5(f"tqmon-synthetic-{len(ids) + 1}".encode()).hexdigest()
            ids[match.group(0)] = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
        return ids[match.group(0)]

    def fix_times(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key in ("timestamp", "local_received", "t", "at") and isinstance(value, float):
                    value = round(value + shift, 4)
                elif key == "pid":
                    value = 4242
                elif key in ("loadavg",):
                    value = [0.42, 0.38, 0.31]
                else:
                    value = fix_times(value)
                out[key] = value
            return out
        if isinstance(obj, list):
            return [fix_times(v) for v in obj]
        return obj

    out = []
    for line in sorted(lines, key=lambda item: item["t"]):
        text = json.dumps(fix_times(line), ensure_ascii=False, separators=(",", ":"))
        text = uuid_re.sub(new_id, text)
        text = text.replace(tmp, "/srv/shop").replace(str(Path(__file__).resolve()),
                                                      "/srv/shop/tasks.py")
        text = re.sub(r"gen\d+@[\w.-]+", "producer@web-1", text)
        out.append(text)
    return out


def main(out: Path = OUT) -> None:
    tmp = tempfile.mkdtemp(prefix="tqsynth-")
    url = f"sqlite:///{tmp}/tq.db"
    app.conf.broker_url = url
    app.conf.result_backend = url
    collector = Collector()
    start = time.time()
    collector.lines.append({"t": start, "kind": "link", "state": "connecting",
                            "broker": "sqlite:///srv/shop/tq.db"})
    collector.lines.append({"t": start + 0.01, "kind": "link", "state": "live",
                            "broker": "sqlite:///srv/shop/tq.db"})
    collector.thread.start()
    with start_worker(app, concurrency=2, queues=["celery", "emails"], hostname="w1@ops-a"):
        with start_worker(app, concurrency=2, queues=["celery"], hostname="w2@ops-b"):
            workload(collector)
        # w2 has shut down (worker-offline); the long task starts on w1 and is still running.
        resize.delay(99)
        for n in range(10):
            send_email.delay(f"late{n}@example.com")
        time.sleep(2.5)
        collector.stop.set()
        collector.thread.join(5)
    text = normalise(collector.lines, tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(text) + "\n", encoding="utf-8")
    print(f"wrote {len(text)} lines to {out}")


if __name__ == "__main__":
    os.environ.setdefault("TQ_LOG_LEVEL", "ERROR")
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
