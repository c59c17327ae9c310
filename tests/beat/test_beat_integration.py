"""Beat end to end: runs on time, persisted across restarts, one leader among several.

Most tests drive the scheduler with an injected clock (fast and exact); the last ones
run real ``tqcore beat`` processes against an SQLite broker for about a minute.
"""

from __future__ import annotations

import collections
import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.locks.redis_server import redis_server
from tqcore import App, chain
from tqcore.beat import Beat, ScheduleEntry, Scheduler, crontab, entries_from_app, schedule
from tqcore.beat.state import BeatStore, EntryState, MemoryBeatStore, beat_store_for_url
from tqcore.exceptions import ImproperlyConfigured
from tqcore.message import decode_task
from tqcore.testing import start_worker

REPO = Path(__file__).resolve().parents[2]
UTC = dt.UTC
START = dt.datetime(2024, 1, 1, 0, 0, 30, 500000, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """A scheduler ``send`` that remembers (entry, slot, sent at)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[str, float, float]] = []

    def __call__(self, entry: ScheduleEntry, slot: float) -> None:
        self.sent.append((entry.name, slot, self.clock()))

    def slots(self, name: str) -> list[float]:
        return [slot for n, slot, _ in self.sent if n == name]


def make_app(**conf: Any) -> App:
    url = f"memory://beat-{uuid.uuid4().hex}"
    app = App(f"beat-{uuid.uuid4().hex[:8]}", broker=url, backend=url, set_as_current=False,
              **conf)
    app.conf.beat_schedule = {
        "every-second": {"task": "proj.tick", "schedule": 1.0},
        "every-minute": {"task": "proj.minute", "schedule": crontab()},
    }
    return app


def run_scheduler(sched: Scheduler, clock: FakeClock, until: float) -> None:
    """Tick exactly when the scheduler says the next run is due, up to ``until`` included."""
    while True:
        delay = sched.tick()
        if clock() >= until:
            return
        clock.advance(max(min(delay, until - clock()), 0.0) or 0.001)


def assert_every_second(slots: list[float], first: float, last: float) -> None:
    assert slots == sorted(slots)
    assert len(slots) == len(set(slots)), "a run was sent twice"
    assert slots[0] == pytest.approx(first, abs=1e-3) and slots[-1] == pytest.approx(last,
                                                                                      abs=1e-3)
    steps = {round(b - a, 3) for a, b in zip(slots, slots[1:])}
    assert steps == {1.0}, f"a run was skipped: steps {sorted(steps)}"


# -- on time, with an injected clock ---------------------------------------------------
def test_interval_and_crontab_fire_on_time() -> None:
    clock = FakeClock()
    rec = Recorder(clock)
    sched = Scheduler(make_app(), MemoryBeatStore(), namespace="ns", clock=clock, send=rec)
    sched.setup()
    run_scheduler(sched, clock, START + 150)
    assert_every_second(rec.slots("every-second"), START + 1, START + 150)
    minutes = [dt.datetime(2024, 1, 1, 0, m, tzinfo=UTC).timestamp() for m in (1, 2, 3)]
    assert rec.slots("every-minute") == minutes
    for _, slot, at in rec.sent:
        assert at - slot < 1e-6, "beat must wake exactly when a run is due"


def test_restart_in_the_middle_skips_and_repeats_nothing() -> None:
    app, store, clock = make_app(), MemoryBeatStore(), FakeClock()
    rec = Recorder(clock)
    first = Scheduler(app, store, namespace="ns", clock=clock, send=rec)
    first.setup()
    run_scheduler(first, clock, START + 55.2)
    clock.advance(7.1)  # down across a minute boundary and seven interval runs
    second = Scheduler(app, store, namespace="ns", clock=clock, send=rec)
    second.setup()
    restarted_at = clock()
    run_scheduler(second, clock, START + 130)
    assert_every_second(rec.slots("every-second"), START + 1, START + 130)
    minutes = [dt.datetime(2024, 1, 1, 0, m, tzinfo=UTC).timestamp() for m in (1, 2)]
    assert rec.slots("every-minute") == minutes
    caught_up = [(n, s) for n, s, at in rec.sent if at - s > 1e-6]
    assert caught_up and all(at == restarted_at for _, s, at in rec.sent if at - s > 1e-6)


def test_downtime_longer_than_max_catchup_keeps_the_newest_runs() -> None:
    app, store, clock = make_app(), MemoryBeatStore(), FakeClock()
    rec = Recorder(clock)
    first = Scheduler(app, store, namespace="ns", clock=clock, send=rec)
    first.setup()
    run_scheduler(first, clock, START + 10.5)
    clock.advance(100)
    second = Scheduler(app, store, namespace="ns", clock=clock, send=rec, max_catchup=5)
    second.setup()
    second.tick()
    slots = rec.slots("every-second")
    assert slots[:10] == [START + k for k in range(1, 11)]
    assert slots[10:] == [START + k for k in range(106, 111)]


def test_two_schedulers_that_both_think_they_lead_send_each_run_once() -> None:
    app, store, clock = make_app(), MemoryBeatStore(), FakeClock()
    rec_a, rec_b = Recorder(clock), Recorder(clock)
    a = Scheduler(app, store, namespace="ns", clock=clock, send=rec_a)
    b = Scheduler(app, store, namespace="ns", clock=clock, send=rec_b)
    a.setup()
    b.setup()
    while clock() < START + 70:
        a.tick()
        b.tick()
        clock.advance(0.37)
    both = sorted(rec_a.slots("every-second") + rec_b.slots("every-second"))
    assert_every_second(both, START + 1, both[-1])
    assert both[-1] > START + 68
    assert len(rec_a.slots("every-minute") + rec_b.slots("every-minute")) == 1


def test_two_beats_elect_one_leader_and_a_standby_takes_over() -> None:
    app, clock = make_app(), FakeClock()
    beats = [Beat(app, clock=clock, lock_timeout=0.5, hostname=f"b{i}") for i in (1, 2)]
    recs = []
    for b in beats:
        rec = Recorder(clock)
        b.scheduler.send = rec
        recs.append(rec)
    while clock() < START + 30:
        for b in beats:
            b.step()
        clock.advance(0.25)
    assert [b.is_leader for b in beats] == [True, False]
    time.sleep(0.6)  # beat 1 "dies": its lock expires
    while clock() < START + 70:
        beats[1].step()
        clock.advance(0.25)
    assert beats[1].is_leader
    assert not beats[0].step() and not beats[0].is_leader  # it finds it lost the lead
    first, second = recs[0].slots("every-second"), recs[1].slots("every-second")
    assert first and second and max(first) < min(second)
    assert_every_second(sorted(first + second), START + 1, first[0] + len(first + second) - 1)


# -- what beat sends and publishes -----------------------------------------------------
def test_messages_carry_the_beat_header_and_a_run_id() -> None:
    app, clock = make_app(), FakeClock()
    app.conf.beat_schedule = {"add": {"task": "proj.add", "schedule": 5.0, "args": (1, 2),
                                      "kwargs": {"z": 3},
                                      "options": {"queue": "periodic", "priority": 7}}}
    sched = Scheduler(app, MemoryBeatStore(), namespace="ns", clock=clock)
    sched.setup()
    clock.advance(5.0)
    sched.tick()
    [delivery] = app.transport.claim(["periodic"], consumer="t", limit=10, lease=30)
    msg = decode_task(delivery.payload)
    assert msg.name == "proj.add" and msg.args == [1, 2] and msg.kwargs == {"z": 3}
    assert msg.headers["celery_beat_task"] is True
    assert msg.headers["beat_entry"] == "add"
    assert msg.headers["beat_scheduled_at"] == dt.datetime.fromtimestamp(
        START + 5, UTC).isoformat()
    assert msg.id == sched.task_id(sched.entries["add"], START + 5)
    assert delivery.priority == 7


def test_a_canvas_entry_sends_the_workflow() -> None:
    app, clock = make_app(), FakeClock()

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.beat_schedule = {}
    from tqcore.beat import add_periodic_task

    add_periodic_task(app, 2.0, chain(add.s(1, 1), add.s(10)), name="workflow")
    sched = Scheduler(app, MemoryBeatStore(), namespace="ns", clock=clock)
    sched.setup()
    clock.advance(2.0)
    sched.tick()
    [delivery] = app.transport.claim(["celery"], consumer="t", limit=10, lease=30)
    msg = decode_task(delivery.payload)
    assert msg.name == "proj.add" and msg.args == [1, 1]
    assert [step["task"] for step in msg.embed["chain"]] == ["proj.add"]
    assert msg.headers["celery_beat_task"] is True


def test_each_tick_publishes_the_schedule_as_an_event() -> None:
    app, clock = make_app(), FakeClock()
    sub = app.transport.subscribe_events()
    beat = Beat(app, clock=clock, hostname="beat-under-test")
    from tqcore.events.dispatcher import EventDispatcher

    beat.scheduler.events = EventDispatcher(app.transport, beat.hostname, buffer_limit=0)
    beat.scheduler.send = Recorder(clock)
    beat.step()
    clock.advance(1.0)
    beat.step()
    events = [json.loads(body) for body in sub.get(1.0)]
    ticks = [e for e in events if isinstance(e, dict) and e.get("type") == "beat-tick"]
    assert ticks, events
    last = ticks[-1]
    assert last["hostname"] == "beat-under-test" and last["namespace"] == app.main
    by_name = {e["name"]: e for e in last["entries"]}
    assert set(by_name) == {"every-second", "every-minute"}
    assert by_name["every-second"]["task"] == "proj.tick"
    assert by_name["every-second"]["last_run"] == pytest.approx(START + 1, abs=1e-3)
    assert by_name["every-second"]["next_run"] == pytest.approx(START + 2, abs=1e-3)
    assert by_name["every-minute"]["last_run"] is None
    assert by_name["every-minute"]["next_run"] == dt.datetime(2024, 1, 1, 0, 1,
                                                              tzinfo=UTC).timestamp()
    assert by_name["every-second"]["schedule"] == "every 1s"


def test_changing_an_entrys_schedule_counts_from_now() -> None:
    app, store, clock = make_app(), MemoryBeatStore(), FakeClock()
    app.conf.beat_schedule = {"e": {"task": "proj.t", "schedule": 10.0}}
    rec = Recorder(clock)
    s1 = Scheduler(app, store, namespace="ns", clock=clock, send=rec)
    s1.setup()
    run_scheduler(s1, clock, START + 25)
    app.conf.beat_schedule = {"e": {"task": "proj.t", "schedule": 3.0}}
    s2 = Scheduler(app, store, namespace="ns", clock=clock, send=rec)
    s2.setup()
    assert s2.entries["e"].total_run_count == 2
    assert s2.entries["e"].next_run == pytest.approx(START + 28, abs=1e-3)


# -- configuration ---------------------------------------------------------------------
def test_add_periodic_task_accepts_celerys_forms() -> None:
    app = make_app()

    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.beat_schedule = {}
    app.add_periodic_task(10.0, add.s(2, 2), name="add-10")
    app.add_periodic_task(dt.timedelta(minutes=1), add.s(1).set(queue="q"), args=(5,),
                          name="add-1m")
    app.add_periodic_task(crontab(minute=0, hour=7, day_of_week="mon"), add, args=(1, 1),
                          name="weekly")
    key = app.add_periodic_task(30, "proj.add", args=(3, 4), expires=20)
    app.conf.timezone = "Europe/Paris"
    entries = entries_from_app(app)
    assert entries["add-10"].schedule == schedule(10) and entries["add-10"].args == (2, 2)
    assert entries["add-1m"].args == (1, 5) and entries["add-1m"].options["queue"] == "q"
    weekly = entries["weekly"].schedule
    assert isinstance(weekly, crontab) and str(weekly.timezone) == "Europe/Paris"
    assert entries[key].options == {"expires": 20} and entries[key].task == "proj.add"


@pytest.mark.parametrize("bad", [
    {"x": {"schedule": 1.0}},
    {"x": {"task": "t"}},
    {"x": {"task": "t", "schedule": "not cron"}},
    {"x": {"task": "t", "schedule": -1}},
    {"x": "proj.t"},
])
def test_bad_beat_schedule_is_a_configuration_error(bad: dict[str, Any]) -> None:
    app = make_app()
    app.conf.beat_schedule = bad
    with pytest.raises(ImproperlyConfigured):
        entries_from_app(app)


# -- the stores ------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite", "redis"])
def beat_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BeatStore]:
    if request.param == "memory":
        yield beat_store_for_url(f"memory://{uuid.uuid4().hex}")
    elif request.param == "sqlite":
        yield beat_store_for_url(f"sqlite:///{tmp_path / 'beat.db'}")
    else:
        with redis_server() as url:
            store = beat_store_for_url(url)
            yield store
            store.close()


def test_store_compare_and_set(beat_store: BeatStore) -> None:
    ns = f"ns-{uuid.uuid4().hex}"
    assert beat_store.load(ns) == {}
    s1 = EntryState(1000, "every 1.0s", 0)
    assert beat_store.record(ns, "e", None, s1)
    assert not beat_store.record(ns, "e", None, s1), "no row is expected any more"
    s2 = EntryState(2000, "every 1.0s", 1)
    assert not beat_store.record(ns, "e", 999, s2)
    assert beat_store.record(ns, "e", 1000, s2)
    assert beat_store.load(ns) == {"e": s2}
    assert beat_store.load(ns + "-other") == {}


# -- real processes --------------------------------------------------------------------
PROJ = '''
import os
import time

from tqcore import App
from tqcore.beat import crontab

app = App("beatproj", broker=os.environ["TQ_BROKER_URL"])


@app.task(name="beatproj.record", bind=True)
def record(self, entry):
    headers = self.request.headers or {}
    line = f"{entry} {headers.get('beat_scheduled_at')} {time.time()!r} {self.request.id}\\n"
    with open(os.environ["BEAT_LEDGER"], "a") as f:
        f.write(line)


app.conf.beat_schedule = {
    "every-second": {"task": "beatproj.record", "schedule": 1.0, "args": ("every-second",)},
    "every-minute": {"task": "beatproj.record", "schedule": crontab(),
                     "args": ("every-minute",)},
}
'''


class Project:
    """An app module in a temp dir, its ledger, and beat processes started by pid."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.module = f"beatproj_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{self.module}.py").write_text(PROJ)
        self.ledger = tmp_path / "ledger.log"
        self.env = {**os.environ, "TQ_BROKER_URL": f"sqlite:///{tmp_path / 'tq.db'}",
                    "TQ_RESULT_BACKEND": f"sqlite:///{tmp_path / 'tq.db'}",
                    "BEAT_LEDGER": str(self.ledger),
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (os.environ.get("PYTHONPATH"), str(REPO)) if p)}
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def app(self) -> App:
        os.environ["BEAT_LEDGER"] = str(self.ledger)
        os.environ["TQ_BROKER_URL"] = self.env["TQ_BROKER_URL"]
        sys.path.insert(0, str(self.dir))
        try:
            module = importlib.import_module(self.module)
        finally:
            sys.path.remove(str(self.dir))
            del os.environ["TQ_BROKER_URL"]
        app: App = module.app
        app.conf.result_backend = self.env["TQ_RESULT_BACKEND"]
        return app

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.dir / f"proc{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "tqcore", "-A", self.module, *args],
                                    cwd=self.dir, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((proc, log))
        return proc, log

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def runs(self) -> dict[str, list[tuple[float, float, str]]]:
        out: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
        if not self.ledger.exists():
            return out
        for line in self.ledger.read_text().splitlines():
            entry, scheduled, ran, task_id = line.split()
            out[entry].append((dt.datetime.fromisoformat(scheduled).timestamp(), float(ran),
                               task_id))
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.procs)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def leads(log: Path) -> bool:
    return "leads schedule" in log.read_text()


@pytest.fixture()
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    proj.stop_all()


def test_real_beats_on_time_through_a_restart_and_a_crash(project: Project) -> None:
    """~65 s: two beat processes; the leader is restarted (SIGTERM) after 20 s and the
    next leader SIGKILLed after 40 s. Every run of the every-second entry and every
    minute of the crontab entry is sent exactly once, on time except right after the
    crash (lock expiry, 3 s)."""
    app = project.app()
    with start_worker(app, pool="threads", concurrency=4):
        a, a_log = project.start("beat", "--lock-timeout", "3", "-l", "info")
        wait_for(lambda: leads(a_log), 30, "the first beat to lead\n" + project.logs())
        started = time.time()
        b, b_log = project.start("beat", "--lock-timeout", "3", "-l", "info")
        time.sleep(20)
        a.send_signal(signal.SIGTERM)  # a clean restart: b takes over at once
        assert a.wait(15) == 0
        restart = time.time()
        wait_for(lambda: leads(b_log), 5, "the standby to take over\n" + project.logs())
        c, c_log = project.start("beat", "--lock-timeout", "3", "-l", "info")
        time.sleep(20)
        os.killpg(b.pid, signal.SIGKILL)  # a crash: c takes over once the lock expires
        b.wait(5)
        crash = time.time()
        wait_for(lambda: leads(c_log), 10, "the standby to take over\n" + project.logs())
        time.sleep(20)
        stopping = time.time()
        c.send_signal(signal.SIGTERM)
        assert c.wait(15) == 0
        stopped = time.time()
        time.sleep(1.0)  # let the worker finish the last runs
    runs = project.runs()
    every_second = sorted(runs["every-second"])
    slots = [s for s, _, _ in every_second]
    assert len(slots) == len(set(slots)), f"a run was sent twice\n{project.logs()}"
    assert len({tid for _, _, tid in every_second}) == len(slots)
    steps = {round(b - a, 3) for a, b in zip(slots, slots[1:])}
    assert steps == {1.0}, f"runs were skipped: {sorted(steps)}\n{project.logs()}"
    assert slots[0] <= started + 1.5 and slots[-1] >= stopped - 1.5
    # Execution time, not send time: it includes the worker's pickup (the scheduler's own
    # timing is checked exactly with an injected clock above).
    lateness = sorted(round(ran - slot, 2) for slot, ran, _ in every_second)
    for slot, ran, _ in every_second:
        late = ran - slot
        limit = 6.0 if crash - 1 <= slot <= crash + 5 else 2.0 if (
            restart - 1 <= slot <= restart + 2) else 1.0
        assert -0.05 < late < limit, (f"run due {slot} ran {late:.2f}s late (restart {restart}, "
                                      f"crash {crash}; all: {lateness})\n{project.logs()}")
    minutes = sorted(runs["every-minute"])
    marks = [s for s, _, _ in minutes]
    assert len(marks) == len(set(marks))
    boundaries = range(int(started // 60 - 1) * 60, int(stopped // 60 + 2) * 60, 60)
    must = {m for m in boundaries if started + 1 <= m <= stopping - 1}
    may = {m for m in boundaries if started - 5 <= m <= stopped + 1}
    assert must and must <= set(marks) <= may, f"{marks}: missing {must - set(marks)}, " \
        f"unexpected {set(marks) - may}\n{project.logs()}"
    for slot, ran, _ in minutes:
        assert ran - slot < (6.0 if crash - 1 <= slot <= crash + 5 else 2.0)


def test_worker_dash_b_runs_beat_in_the_worker(project: Project) -> None:
    proc, log = project.start("worker", "-B", "-P", "threads", "-c", "2", "-l", "info")
    wait_for(lambda: len(project.runs()["every-second"]) >= 3, 40,
             "periodic runs from worker -B\n" + project.logs())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, project.logs()
    slots = [s for s, _, _ in sorted(project.runs()["every-second"])]
    assert len(slots) == len(set(slots))


def test_beat_cli_rejects_a_bad_schedule_in_one_line(project: Project) -> None:
    (project.dir / "badbeat.py").write_text(textwrap.dedent('''
        from tqcore import App
        app = App("badbeat")
        app.conf.beat_schedule = {"x": {"task": "t", "schedule": "every day"}}
    '''))
    out = subprocess.run([sys.executable, "-m", "tqcore", "-A", "badbeat", "beat"],
                         cwd=project.dir, env=project.env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("Error: beat_schedule['x']")
    assert "Traceback" not in out.stderr
