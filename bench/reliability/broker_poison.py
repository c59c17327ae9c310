"""Broker rows about bad input and full brokers (reliability.md §4.2): a Redis at its
``maxmemory`` (R11) and poison messages written past the client, interleaved with good
tasks, on Redis and RabbitMQ (R12).

R12's poison is published raw (``LPUSH`` of a kombu envelope on Redis, ``basic_publish``
on RabbitMQ), each carrying a marker id so its dead letter can be found: malformed JSON,
a wrong body schema, an unknown task name, a pickle body (whose ``__reduce__`` would
create a canary file when unpickled), a gzip content encoding (a small gzip bomb),
100,000-deep nesting, a 5,000-digit integer, NaN, invalid UTF-8, and a body over the
10 MB cap.
"""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import psutil

from bench.reliability import app as tasks
from bench.reliability.broker_faults import (
    CI_MIN_RATIO,
    alive_check,
    rabbit_server,
    redis_server,
    redis_url,
    two_workers,
)
from bench.reliability.chaos import Cluster, WorkerProc
from bench.reliability.crash import account
from bench.reliability.flow import wait_progress
from bench.reliability.report import Result
from bench.reliability.suite import scenario
from tqcore.exceptions import TqError, TransportError
from tqcore.transports.redis_envelope import PRIORITY_STEPS, SEP, ident


def orphans(raw: Any, queue: str) -> dict[str, int]:
    """Half-written messages of ``queue`` in tqcore's Redis schema, read in one MULTI:
    bookkeeping (``tq:meta``) without a message, a message without bookkeeping, a
    leased/scheduled body without its lease/ETA entry, or a lease/ETA without a body."""
    lists = [queue if s == 0 else f"{queue}{SEP}{s}" for s in PRIORITY_STEPS]
    pipe = raw.pipeline(transaction=True)
    for key in lists:
        pipe.lrange(key, 0, -1)
    pipe.hkeys(f"tq:msgs:{queue}")
    pipe.hkeys(f"tq:meta:{queue}")
    pipe.zrange(f"tq:leases:{queue}", 0, -1)
    pipe.zrange(f"tq:eta:{queue}", 0, -1)
    *elements, msgs, meta, leases, etas = pipe.execute()
    listed = {ident(e) for chunk in elements for e in chunk}
    msgs, meta = {m.decode() for m in msgs}, {m.decode() for m in meta}
    timed = {m.decode() for m in leases} | {m.decode() for m in etas}
    return {"meta_without_body": len(meta - listed - msgs),
            "body_without_meta": len((listed | msgs) - meta),
            "held_without_lease": len(msgs - timed), "lease_without_body": len(timed - msgs)}


def gzip_bomb(megabytes: int) -> bytes:
    """A gzip stream that inflates to ``megabytes`` MB of JSON-ish whitespace."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * 2**20
    out = [z.compress(b"[")]
    out += [z.compress(block) for _ in range(megabytes)]
    out.append(z.compress(b"[], {}, {}]"))
    out.append(z.flush())
    return b"".join(out)


# -- R11: Redis maxmemory --------------------------------------------------------------------
@scenario("R11", "Redis maxmemory reached (noeviction), then raised again", ci={
    "before": 200, "attempts": 20, "after": 200, "full_for": 5.0}, soak={
    "before": 2000, "attempts": 200, "after": 2000, "full_for": 30.0},
    broker="redis", server=redis_server(), url=redis_url)
def r11(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    workers = two_workers(c)
    raw = c.server.client()
    sent = c.send_many(tasks.late, [(i, 0.0) for i in range(size["before"])], kind="t")
    wait_progress(c, {r.id for r in sent}, stall=15, timeout=60)
    raw.set("r11:ballast", b"x" * (3 * 2**20))
    used = int(raw.info("memory")["used_memory"])
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", str(used - 2**20))  # over the limit from now on
    c.fault("maxmemory", "redis", c.server.pid, f"{(used - 2**20) / 2**20:.1f} MB, 1 MB over")
    full_at = time.monotonic()
    errors: list[tuple[str, float, str]] = []
    accepted = []
    for i in range(size["attempts"]):
        tid = str(uuid.uuid4())
        t0 = time.monotonic()
        try:
            tasks.late.apply_async((i, 0.0), task_id=tid)
            accepted.append(tid)
            c.record(tid, "t")
        except TqError as exc:
            errors.append((type(exc).__name__, time.monotonic() - t0, str(exc)[:160]))
            c.record(tid, "unconfirmed")
    time.sleep(max(0.0, size["full_for"] - (time.monotonic() - full_at)))
    half = orphans(raw, "celery")
    raw.config_set("maxmemory", "0")
    raw.delete("r11:ballast")
    c.fault("maxmemory lifted", "redis", c.server.pid)
    lifted = time.monotonic()
    first_ok = None
    while first_ok is None and time.monotonic() - lifted < 10:
        try:
            c.send(tasks.late, 0, 0.0, kind="t")
            first_ok = time.monotonic() - lifted
        except TqError:
            time.sleep(0.05)
    sent = c.send_many(tasks.late, [(i, 0.0) for i in range(size["after"])], kind="t")
    wait_progress(c, c.view().ids("t"), stall=20, timeout=120)
    time.sleep(1.0)
    view = c.view()
    a = account(res, view, c.dead_ids(), c, kinds={"t"})
    typed = [e for e in errors if e[0] in {cls.__name__ for cls in _transport_errors()}]
    oom = [e for e in errors if "memory" in e[2].lower()]
    claim_errors = c.log_grep("broker error while claiming")
    res.recovery = [first_ok] if first_ok is not None else []
    res.recovery_label = "maxmemory lifted→publish ok"
    res.figures.update(refused=len(errors), accepted_while_full=len(accepted),
                       err_max_s=round(max((e[1] for e in errors), default=0.0), 3),
                       err_types=sorted({e[0] for e in errors}),
                       err_sample=(errors[0][2][:100] if errors else None),
                       worker_claim_errors=len(claim_errors), orphans=half,
                       unconfirmed_ran=len(view.completed(view.ids("unconfirmed"))))
    alive_check(res, c, workers)
    res.check("producer gets a typed error, not a hang",
              len(errors) == size["attempts"] and len(typed) == len(errors)
              and max(e[1] for e in errors) < 2.0, errors[:2] or accepted[:2])
    res.check("the error says the broker is out of memory", len(oom) == len(errors),
              errors[:1])
    res.check("no half-written message", not any(half.values()), half)
    res.check("publishes work again once memory returns", first_ok is not None
              and first_ok < 2.0, first_ok)
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("refused publishes never ran", not view.completed(view.ids("unconfirmed")),
              len(view.completed(view.ids("unconfirmed"))))
    res.check("broker drained", c.drained(), c.stats())
    raw.close()


def _transport_errors() -> list[type[BaseException]]:
    out: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [TransportError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


# -- R12: poison messages ----------------------------------------------------------------------
def poison_kinds(canary: Path, huge_mb: int, bomb_mb: int) -> list[dict[str, Any]]:
    """The bad messages, at the AMQP level: content type and encoding, task headers, body.
    ``envelope=False`` marks one whose whole Redis element is broken, not just its body."""

    class Canary:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(canary), "w"))

    def task(body: bytes, name: str = "rel.late", **kw: Any) -> dict[str, Any]:
        return {"ctype": "application/json", "enc": "utf-8", "name": name, "body": body, **kw}

    return [
        task(b'[[1], {}, {"callbacks": ', kind="malformed_json", envelope=False),
        task(b'{"not": "a task"}', kind="wrong_schema"),
        task(b'[[1, 0.0], {}, {}]', name="rel.no_such_task", kind="unknown_task"),
        task(pickle.dumps(Canary()), kind="pickle", ctype="application/x-python-serialize",
             enc="binary"),
        task(gzip_bomb(bomb_mb), kind="gzip_bomb", enc="gzip"),
        task(b"[" * 100_000 + b"]" * 100_000, kind="deep_nesting"),
        task(b"[[" + b"9" * 5000 + b"], {}, {}]", kind="big_int"),
        task(b"[[NaN, 0.0], {}, {}]", kind="nan"),
        task(b'[["\xff\xfe", 0.0], {}, {}]', kind="invalid_utf8"),
        task(b'[["' + b"x" * (huge_mb * 2**20) + b'", 0.0], {}, {}]', kind="huge_body"),
    ]


def redis_element(p: dict[str, Any], marker: str) -> bytes:
    """A kombu envelope as Celery would LPUSH it (or garbage with the marker in it)."""
    if not p.get("envelope", True):
        return b'{"body": "' + marker.encode() + b'", "content-type": "application/js'
    return json.dumps({
        "body": base64.b64encode(p["body"]).decode(), "content-encoding": p["enc"],
        "content-type": p["ctype"], "headers": {"lang": "py", "task": p["name"], "id": marker},
        "properties": {"correlation_id": marker, "delivery_mode": 2, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
                       "delivery_info": {"exchange": "", "routing_key": "celery"}},
    }).encode()


class _RabbitPublisher:
    def __init__(self, c: Cluster) -> None:
        self.conn = c.server.connection(timeout=30)
        self.ch = self.conn.channel()
        self.ch.confirm_delivery()

    def __call__(self, p: dict[str, Any], marker: str) -> None:
        import pika

        props = pika.BasicProperties(
            content_type=p["ctype"], content_encoding=p["enc"], delivery_mode=2,
            message_id=marker, correlation_id=marker,
            headers={"lang": "py", "task": p["name"], "id": marker})
        self.ch.basic_publish("", "celery", p["body"], props)

    def close(self) -> None:
        self.conn.close()


class _RSS(threading.Thread):
    """Peak RSS of the workers' main processes, sampled every 50 ms."""

    def __init__(self, workers: list[WorkerProc]) -> None:
        super().__init__(daemon=True)
        self.procs = [psutil.Process(w.pid) for w in workers]
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for p in self.procs:
                try:
                    self.peak = max(self.peak, p.memory_info().rss)
                except psutil.Error:
                    pass
            self.halt.wait(0.05)


def _phase(c: Cluster, kind: str, n: int, between: list[Any]) -> tuple[float, list[str]]:
    """Send ``n`` good tasks in chunks, calling each of ``between`` after a chunk; returns
    (good tasks per second, the last good id sent before each of ``between``)."""
    chunk = max(1, n // (len(between) + 1))
    ids: set[str] = set()
    before: list[str] = []
    t0 = time.time()
    for k in range(len(between) + 1):
        count = chunk if k < len(between) else n - chunk * len(between)
        sent = c.send_many(tasks.late, [(i, 0.005) for i in range(count)], kind=kind)
        ids |= {r.id for r in sent}
        if k < len(between):
            before.append(sent[-1].id)
            between[k]()
    wait_progress(c, ids, stall=20, timeout=180)
    view = c.view()
    done = max(r.end or 0 for i in ids for r in view.ends[i])
    return n / max(done - t0, 1e-6), before


def _poison(c: Cluster, res: Result, size: dict[str, Any], broker: str) -> None:
    workers = two_workers(c)
    canary = c.dir / "canary-pickle"
    kinds = poison_kinds(canary, size["huge_mb"], size["bomb_mb"])
    base_rate, _ = _phase(c, "t", size["good"], [])  # also warms the workers up
    rss = _RSS(workers)
    base_rss = max(p.memory_info().rss for p in rss.procs)
    rss.start()
    markers = {f"poison-{p['kind']}-{uuid.uuid4().hex[:8]}": p for p in kinds}
    publish: Any
    if broker == "redis":  # elements built beforehand: the phase times only publishing
        raw = c.server.client(timeout=30)
        elements = {m: redis_element(p, m) for m, p in markers.items()}

        def publish(p: dict[str, Any], marker: str) -> None:
            raw.lpush("celery", elements[marker])
    else:
        publish = _RabbitPublisher(c)
    sent_at: dict[str, tuple[str, float]] = {}

    def one(marker: str, p: dict[str, Any]) -> Any:
        def go() -> None:
            sent_at[marker] = (p["kind"], time.time())
            publish(p, marker)
        return go

    try:
        rate, before = _phase(c, "t", size["good"], [one(m, p) for m, p in markers.items()])
        deadline = time.monotonic() + 30
        letters: dict[str, Any] = {}
        while time.monotonic() < deadline and len(letters) < len(kinds):
            letters = _match(c.app.transport.dead_letters("celery", limit=1000), sent_at)
            time.sleep(0.2)
    finally:
        rss.halt.set()
        rss.join(5)
        if broker == "redis":
            raw.close()
        else:
            publish.close()
    time.sleep(1.0)
    letters = _match(c.app.transport.dead_letters("celery", limit=1000), sent_at)
    view = c.view()
    a = account(res, view, c.dead_ids(), c, kinds={"t"})
    outcome = {kind: (f"{d.reason[:48]}" if d else "NOT dead-lettered")
               for marker, (kind, _) in sent_at.items() for d in [letters.get(marker)]}
    # Quarantine: from the poison's turn in the queue (it was published, and the good
    # task published right before it started) to its dead letter.
    turn = {m: max(sent_at[m][1], min((r.start for r in view.starts.get(b, [])),
                                      default=sent_at[m][1]))
            for m, b in zip(markers, before, strict=True)}
    latency = [max(0.0, d.dead_at - turn[m]) for m, d in letters.items()]
    unknown = next((m for m, (k, _) in sent_at.items() if k == "unknown_task"), None)
    state = c.app.AsyncResult(unknown).state if unknown else None
    res.tasks += len(kinds)
    res.faults = len(kinds)
    res.recovery, res.recovery_label = sorted(latency), "its turn→dead-letter"
    ratio = rate / base_rate if base_rate else 0.0
    res.figures.update(outcome=outcome, throughput_ratio=round(ratio, 2),
                       rss_base_mb=round(base_rss / 2**20), rss_peak_mb=round(rss.peak / 2**20),
                       unknown_task_state=state)
    alive_check(res, c, workers)
    missing = sorted(k for k, v in outcome.items() if v == "NOT dead-lettered")
    res.check("each bad message dead-lettered with a reason",
              not missing and all(d.reason for d in letters.values()), missing)
    res.check("each dead-lettered once, on its first delivery (no loop)",
              all(d.attempts <= 1 for d in letters.values()) and len(letters) == len(kinds),
              {sent_at[m][0]: d.attempts for m, d in letters.items() if d.attempts > 1})
    res.check("quarantined <= 1 s", bool(latency) and max(latency) <= 1.0,
              round(max(latency, default=0.0), 2))
    res.check("canary from the pickle payload absent", not canary.exists(), str(canary))
    res.check("unknown task recorded FAILURE", state == "FAILURE", state)
    res.check("good tasks: lost == 0", res.lost == 0, a.lost[:5])
    res.check("good tasks: dup == 0", res.duplicates == 0, a.duplicated_ids[:5])
    res.check("good-task throughput >= min_ratio of baseline", ratio >= size["min_ratio"],
              f"{ratio:.2f} < {size['min_ratio']}")
    res.check("worker RSS < 2x baseline", rss.peak < 2 * base_rss,
              f"{rss.peak / 2**20:.0f} MB vs {base_rss / 2**20:.0f} MB")
    res.check("broker drained", c.drained(), c.stats())


def _match(letters: list[Any], sent_at: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Dead letters by marker: the message id, else the marker inside the payload."""
    out = {}
    for d in letters:
        for marker in sent_at:
            if d.message_id == marker or marker.encode() in d.payload:
                out[marker] = d
                break
    return out


@scenario("R12-redis", "poison messages interleaved with good tasks (Redis, raw LPUSH)", ci={
    "good": 600, "huge_mb": 12, "bomb_mb": 10, "min_ratio": CI_MIN_RATIO}, soak={
    "good": 5000, "huge_mb": 64, "bomb_mb": 1000, "min_ratio": 0.9},
    broker="redis", server=redis_server(), url=redis_url)
def r12_redis(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    _poison(c, res, size, "redis")


@scenario("R12-rabbitmq", "poison messages interleaved with good tasks (RabbitMQ,"
          " raw basic_publish)", ci={"good": 600, "huge_mb": 12, "bomb_mb": 10,
                                     "min_ratio": CI_MIN_RATIO}, soak={
    "good": 5000, "huge_mb": 64, "bomb_mb": 1000, "min_ratio": 0.9},
    broker="rabbitmq", server=rabbit_server, url=lambda s: s.url())
def r12_rabbitmq(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    _poison(c, res, size, "rabbitmq")

