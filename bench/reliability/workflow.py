"""Workflow and control scenarios: the chord completion race (R17) and
``revoke(terminate=True)`` under churn (R18)."""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from typing import Any

import psutil

from bench.reliability import app as tasks
from bench.reliability.chaos import Cluster, wait_for
from bench.reliability.crash import CONCURRENCY, PREFETCH, _kill_and_restart, account
from bench.reliability.flow import wait_progress
from bench.reliability.report import Result
from bench.reliability.suite import scenario
from tqcore import chord


def _send_chords(c: Cluster, tag: str, count: int, size: int) -> list[tuple[str, float]]:
    """Send ``count`` chords of ``size`` members; returns (body id, sent at) per chord."""
    bodies = []
    for k in range(count):
        t = time.time()
        res = chord([tasks.part.s(i) for i in range(size)])(tasks.join.s(k, size))
        for member in getattr(res.parent, "results", None) or []:
            c.record(member.id, f"{tag}-part")
        c.record(res.id, f"{tag}-join")
        bodies.append((res.id, t))
    return bodies


def _chord_phase(c: Cluster, size: dict[str, Any], tag: str, kills: int) -> dict[str, Any]:
    n, count = size["size"], size["chords"]
    opts: dict[str, Any] = {"concurrency": CONCURRENCY, "prefetch": PREFETCH}
    for name in ("a", "b"):
        c.start_worker(f"{tag}-{name}", **opts)
    already = len(c.view().completed())  # an earlier phase's tasks
    bodies = _send_chords(c, tag, count, n)
    total = n * count
    for threshold in sorted(c.rng.sample(range(total // 10, total * 8 // 10), kills)):
        wait_progress(c, want=already + threshold, stall=30)
        victim = c.rng.choice(c.live_workers())
        _kill_and_restart(c, victim, f"{tag}-{len(c.workers) + 1}", **opts)
    body_ids = {b for b, _ in bodies}
    wait_progress(c, body_ids, stall=30, timeout=300)
    time.sleep(c.lease + 1.0)  # a second body (or a re-run header) would show up now
    view = c.view()
    # A body run again as a redelivery of its one message (a higher delivery attempt) is
    # the body's own at-least-once: its worker was killed after it ran and before it acked.
    # That is a duplicate bounded by the in-flight check. A body published twice shows as a
    # second message, whose delivery attempts start again at 1.
    fired = {b: [r.attempt for r in sorted(view.starts.get(b, []), key=lambda r: r.start)]
             for b in body_ids}
    results = {b: [r.extra for r in view.ends.get(b, [])] for b in body_ids}
    done = [max(r.end or 0 for r in view.ends[b]) - t for b, t in bodies if view.ends.get(b)]
    for w in c.live_workers():
        c.stop_worker(w)
    return {"fired": fired, "results": results, "completion": done,
            "body_redeliveries": sum(len(v) - 1 for v in fired.values() if v),
            "header_reruns": sum(len(view.ends.get(i, [])) - 1 for i in view.ids(f"{tag}-part")
                                 if view.ends.get(i))}


@scenario("R17", "chord completion race (+ workers SIGKILLed)", ci={
    "chords": 4, "size": 100, "kills": 2}, soak={"chords": 10, "size": 1000, "kills": 4})
def r17(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    clean = _chord_phase(c, size, "clean", 0)
    killed = _chord_phase(c, size, "kill", size["kills"])
    view = c.view()
    a = account(res, view, c.dead_ids(), c)
    res.recovery = clean["completion"] + killed["completion"]
    res.recovery_label = "chord send→body done"
    phases = (clean, killed)
    per_chord = Counter(len(v) for ph in phases for v in ph["fired"].values())
    twice = [(b, v) for ph in phases for b, v in ph["fired"].items()
             if not v or any(x >= y for x, y in zip(v, v[1:]))]
    wrong = [(b, v) for ph in phases for b, v in ph["results"].items()
             if not v or not all(x.endswith(":ok") for x in v)]
    res.figures.update(bodies_per_chord=dict(per_chord), header_reruns=killed["header_reruns"],
                       body_redeliveries=killed["body_redeliveries"],
                       chords=2 * size["chords"], members=size["size"])
    res.check("each body fired exactly once (re-runs only as redeliveries)", not twice, twice[:3])
    res.check("every body run got the full ordered results", not wrong, wrong[:3])
    res.check("lost == 0", res.lost == 0, a.lost[:5])
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])
    res.check("clean run: no duplicates", clean["header_reruns"] + clean["body_redeliveries"] == 0,
              (clean["header_reruns"], clean["body_redeliveries"]))
    res.check("dup <= Σ in-flight", res.duplicates <= CONCURRENCY * PREFETCH * len(c.faults),
              res.duplicates)


def _churn(c: Cluster, count: int, rate: float, stop: threading.Event) -> None:
    for i in range(count):
        if stop.is_set():
            return
        c.send(tasks.early, i, 0.005, kind="short")
        time.sleep(1.0 / rate)


@scenario("R18", "revoke(terminate, SIGKILL) of long tasks while short ones churn", ci={
    "targets": 10, "shorts": 1000, "rate": 150.0}, soak={
    "targets": 100, "shorts": 10000, "rate": 150.0})
def r18(c: Cluster, res: Result, size: dict[str, Any]) -> None:
    for name in ("w1", "w2"):
        c.start_worker(name, concurrency=CONCURRENCY)
    stop = threading.Event()
    churn = threading.Thread(target=_churn, args=(c, size["shorts"], size["rate"], stop),
                             daemon=True)
    churn.start()
    latency: list[float] = []
    targets = []
    try:
        for k in range(size["targets"]):
            t = c.send(tasks.late, k, 60.0, kind="target")
            targets.append(t)
            run = wait_for(functools.partial(_started, c, t.id), 20, "a target start")
            time.sleep(c.rng.uniform(0.0, 0.3))
            pid = run[0].pid
            t0 = time.monotonic()
            c.app.control.revoke(t.id, terminate=True, signal="SIGKILL")
            wait_for(functools.partial(_gone, pid), 10, f"target {t.id} to stop", interval=0.01)
            latency.append(time.monotonic() - t0)
    finally:
        churn.join(size["shorts"] / size["rate"] + 30)
        stop.set()
    view = c.view()
    wait_progress(c, view.ids("short"), stall=20, or_drained=True)
    wait_for(lambda: all(t.state == "REVOKED" for t in targets), 10, "targets REVOKED")
    # revoke while no worker runs: honoured by a worker started afterwards
    for w in c.live_workers():
        c.stop_worker(w)
    offline = c.send(tasks.late, -1, 0.0, kind="offline")
    canary = c.send(tasks.late, -2, 0.0, kind="canary")
    c.app.control.revoke(offline.id)
    c.start_worker("w3", concurrency=CONCURRENCY)
    wait_progress(c, {canary.id}, stall=20)
    wait_for(lambda: offline.state == "REVOKED", 10, "the offline revoke to be honoured")
    time.sleep(1.0)
    view = c.view()
    a = account(res, view, c.dead_ids(), c, kinds={"short", "canary"})
    collateral = [i for i in view.ids("short") if view.starts.get(i) and not view.ends.get(i)]
    target_runs = [len(view.starts.get(t.id, [])) for t in targets]
    res.faults = len(targets)
    res.recovery = latency
    res.recovery_label = "revoke→target stopped"
    res.figures.update(collateral=len(collateral), target_starts=max(target_runs),
                       offline_state=offline.state,
                       offline_ran=len(view.starts.get(offline.id, [])))
    res.check("targets stop <= 2 s", max(latency) <= 2.0, max(latency))
    res.check("targets never completed nor re-ran", target_runs == [1] * len(targets)
              and not any(view.ends.get(t.id) for t in targets), target_runs)
    res.check("collateral kills == 0", not collateral, collateral[:3])
    res.check("shorts: lost == 0", res.lost == 0, a.lost[:5])
    res.check("shorts: dup == 0", res.duplicates == 0, a.duplicated_ids[:5])
    res.check("offline revoke honoured, never ran",
              offline.state == "REVOKED" and not view.starts.get(offline.id), offline.state)
    res.check("phantom == 0", res.phantom == 0, a.phantom[:5])


def _started(c: Cluster, task_id: str) -> Any:
    return c.view().starts.get(task_id)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
