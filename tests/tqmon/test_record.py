"""Recording and replaying: round trips, timing, bad lines, the CLI, and the demo recording."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tqcore import App
from tqcore.events import State
from tqcore.testing import start_worker
from tqmon.cli import cli
from tqmon.contracts import BrokerFigures, EventBatch, LinkStatus, QueueFigures
from tqmon.record import Recorder, RecordingSource, ReplaySource, read_recording
from tqmon.source import ClusterSource

INCIDENT = Path(__file__).parent / "data" / "incident.jsonl"

ITEMS: list[object] = [
    LinkStatus("connecting", "sqlite:////x/tq.db", since=100.0),
    BrokerFigures((QueueFigures("celery", 3, 1, 2, 0, 4.5, 2), QueueFigures("q2", 0, 0, 0, 1,
                                                                             0.0, None)),
                  {"w1@h": {"hostname": "w1@h", "queues": ["celery"]}}, 100.5),
    LinkStatus("live", "sqlite:////x/tq.db", since=100.6),
    EventBatch(({"type": "task-sent", "uuid": "a", "name": "t\x1b[2J", "timestamp": 100.7},
                {"type": "task-failed", "uuid": "a", "exception": "E('[bold]')"}), 101.0),
    LinkStatus("disconnected", "sqlite:////x/tq.db", detail="gone", retry_in=4.0, since=101.5),
]


def replay_all(path: Path, **kwargs: Any) -> list[object]:
    out: list[object] = []
    ReplaySource(path, **kwargs).run(out.append, lambda: False)
    return out


def test_round_trip_keeps_every_item(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    forwarded: list[object] = []
    with Recorder(path, forward=forwarded.append, clock=lambda: 101.5) as rec:
        for item in ITEMS:
            rec(item)
        rec("not an item")  # forwarded, not recorded
    assert forwarded == [*ITEMS, "not an item"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["link", "figures", "link", "events", "link"]
    assert lines[1]["t"] == 100.5 and lines[3]["t"] == 101.0
    assert [item for _, item in read_recording(path) if not isinstance(item, LinkStatus)] == \
        [i for i in ITEMS if not isinstance(i, LinkStatus)]
    replayed = replay_all(path, freeze=True)
    assert [i for i in replayed if not isinstance(i, LinkStatus)] == \
        [i for i in ITEMS if not isinstance(i, LinkStatus)]
    links = [i for i in replayed if isinstance(i, LinkStatus)]
    # Recorded link states show as replay, the recorded state kept in the detail.
    assert {s.state for s in links} == {"replay"}
    assert [s.detail for s in links[:3]] == ["recorded connecting", "recorded live",
                                             "recorded disconnected: gone"]
    assert replayed[-1] == LinkStatus("replay", "sqlite:////x/tq.db",
                                      detail="frozen at end of recording", since=101.5)


def test_replay_keeps_spacing_scaled_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with Recorder(path) as rec:
        for t in (1000.0, 1001.0, 1002.0):
            rec(EventBatch(({"type": "worker-heartbeat", "hostname": "w", "timestamp": t},), t))
    source = ReplaySource(path, speed=10.0)
    stamps: list[float] = []
    clocks: list[float] = []

    def post(item: object) -> None:
        if isinstance(item, EventBatch):
            stamps.append(time.monotonic())
            clocks.append(source.clock())

    started = time.monotonic()
    source.run(post, lambda: False)
    assert len(stamps) == 3
    assert 0.17 <= stamps[-1] - started <= 0.6
    assert 0.08 <= stamps[1] - stamps[0] <= 0.35
    assert clocks[0] == pytest.approx(1000.0, abs=0.5)
    assert source.clock() == 1002.0  # finished: frozen at the last item


def test_cancelled_replay_stops(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with Recorder(path) as rec:
        rec(EventBatch(({"type": "x"},), 0.0))
        rec(EventBatch(({"type": "x"},), 3600.0))
    stop = threading.Event()
    out: list[object] = []
    thread = threading.Thread(target=ReplaySource(path).run, args=(out.append, stop.is_set))
    thread.start()
    time.sleep(0.3)
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert sum(isinstance(i, EventBatch) for i in out) == 1


def test_bad_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("\n".join([
        "not json", "[1, 2]", '{"kind": "events", "events": []}', '{"t": "x", "kind": "events"}',
        '{"t": 1, "kind": "nope"}', '{"t": 1, "kind": "events", "events": [1, {"type": "ok"}]}',
        '{"t": 2, "kind": "figures", "queues": [{"depth": 1}, {"name": "q", "depth": "7"}],'
        ' "workers": []}',
        '{"t": 3, "kind": "link", "state": "exploded", "broker": "b"}',
    ]) + "\n")
    items = [item for _, item in read_recording(path)]
    assert items == [EventBatch(({"type": "ok"},), 1.0),
                     BrokerFigures((QueueFigures("q", 0, 0, 0, 0, 0.0, None),), {}, 2.0),
                     LinkStatus("disconnected", "b")]
    out = replay_all(tmp_path / "missing.jsonl")
    assert isinstance(out[0], LinkStatus) and "cannot read recording" in out[0].detail


def test_record_a_live_cluster_then_replay_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    app = App("rectest", broker=url, backend=url, set_as_current=False)

    @app.task(name="rt.add")
    def add(x: int, y: int) -> int:
        return x + y

    path = tmp_path / "live.jsonl"
    stop = threading.Event()
    live: list[object] = []
    source = RecordingSource(ClusterSource(app, poll_interval=0.2), path)
    thread = threading.Thread(target=source.run, args=(live.append, stop.is_set))
    with start_worker(app, hostname="w1@rec"):
        thread.start()
        deadline = time.monotonic() + 10
        while not any(isinstance(i, LinkStatus) and i.state == "live" for i in live):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ids = {app.send_task("rt.add", (i, 1)).id for i in range(5)}
        while not ids <= {e["uuid"] for b in live if isinstance(b, EventBatch)
                          for e in b.events if e["type"] == "task-succeeded"}:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        thread.join(5)
    app.close()
    replayed = replay_all(path, freeze=True)
    assert [i for i in replayed if isinstance(i, EventBatch)] == \
        [i for i in live if isinstance(i, EventBatch)]
    assert [i for i in replayed if isinstance(i, BrokerFigures)] == \
        [i for i in live if isinstance(i, BrokerFigures)]


def test_cli_record_then_replay_file_checks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    out = tmp_path / "cli.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["record", "-o", str(out), "--broker", url, "--duration", "1"])
    assert result.exit_code == 0, result.output
    kinds = Counter(json.loads(line)["kind"] for line in out.read_text().splitlines())
    assert kinds["link"] >= 2 and kinds["figures"] >= 1
    result = runner.invoke(cli, ["replay", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "no such recording" in result.output
    result = runner.invoke(cli, ["record", "-o", str(out), "--broker", "bogus"])
    assert result.exit_code == 2 and "not a URL" in result.output


def test_the_demo_recording_has_an_incident_in_it() -> None:
    assert INCIDENT.stat().st_size < 2 * 1024 * 1024
    source = ReplaySource(INCIDENT, freeze=True)
    items: list[object] = []
    source.run(items.append, lambda: False)
    state = State(clock=source.clock)
    for item in items:
        if isinstance(item, EventBatch):
            state.events(item.events)
    assert state.malformed == 0
    counts = state.state_counts
    assert counts["SUCCESS"] > 100 and counts["FAILURE"] >= 5 and counts["REVOKED"] >= 1
    types = Counter(e["type"] for i in items if isinstance(i, EventBatch) for e in i.events)
    assert types["task-retried"] >= 2 and types["worker-online"] == 2
    assert {s.exc_type for s in state.signatures.values()} >= {"CardDeclined", "DatabaseTimeout",
                                                               "ValueError"}
    assert {w for w in state.workers} == {"demo1@vm", "demo2@vm"}
    groups = {e.get("group") for i in items if isinstance(i, EventBatch) for e in i.events} - {None}
    chains = {e["root_id"] for i in items if isinstance(i, EventBatch) for e in i.events
              if e["type"] == "task-sent" and e.get("root_id") not in (None, e["uuid"])}
    assert len(groups) >= 3 and len(chains) >= 3
    assert any(isinstance(i, BrokerFigures) and i.workers for i in items)
    last_t = max(t for t, _ in read_recording(INCIDENT))
    assert source.clock() == last_t  # frozen: ages are those of the recording's end
