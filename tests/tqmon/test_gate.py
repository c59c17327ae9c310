"""The command gate against a real SQLite broker and in-process workers."""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tqcore import App
from tqcore.testing import start_worker
from tqmon.contracts import Action, ActionKind
from tqmon.gate import KINDS, CommandGate

ALL_KINDS: tuple[str, ...] = typing.get_args(ActionKind)


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    app = App("gatetest", broker=url, backend=url, set_as_current=False)

    @app.task(name="gt.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="gt.boom")
    def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    yield app
    app.close()


def wait_for_mailboxes(app: App, *names: str) -> None:
    """Until every named worker answers a ping: a worker registers (and reports ready) just
    before its mailbox thread subscribes, so a command sent in that window is missed."""
    def answered() -> bool:
        replies = app.control.ping(timeout=0.5)
        return set(names) <= {node for reply in replies for node in reply}
    wait_until(answered)


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gate_knows_every_action_kind() -> None:
    assert set(KINDS) == set(ALL_KINDS)


def sample_action(kind: str) -> Action:
    params: dict[str, Any] = {"signal": "SIGKILL"} if kind == "terminate" else {}
    if kind == "rate_limit":
        params = {"rate": "10/s"}
    if kind in ("pool_grow", "pool_shrink"):
        params = {"n": 1}
    targets = {"rate_limit": ("gt.add",), "purge": ("celery",), "retry_signature": ("abc",),
               "pool_grow": ("w1@h",), "pool_shrink": ("w1@h",), "shutdown": ("w1@h",)}
    return Action(kind, targets.get(kind, ("id-1",)), params)  # type: ignore[arg-type]


def test_read_only_refuses_every_action_and_audits_it(app: App, tmp_path: Path) -> None:
    audit = tmp_path / "audit" / "audit.jsonl"
    gate = CommandGate(app, read_only=True, audit_log_path=audit)
    app.send_task("gt.add", (1, 2))  # something a purge would delete
    for kind in ALL_KINDS:
        result = gate.run(sample_action(kind), reason="testing")
        assert not result.ok
        assert result.refused == f"read-only: {kind} disabled"
        assert not result.replies
    lines = audit_lines(audit)
    assert [line["action"] for line in lines] == list(ALL_KINDS)
    for line in lines:
        assert line["refused"] and line["read_only"] is True and line["ok"] is False
        assert line["user"] and line["host"] and line["time"] and line["reason"] == "testing"
        assert line["command"].startswith("tqcore ")
    assert app.transport.queue_stats(["celery"])[0].depth == 1  # nothing was purged


def test_read_only_is_one_way(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "a.jsonl")
    assert not gate.read_only
    gate.set_read_only()
    assert gate.read_only
    assert gate.run(sample_action("rate_limit")).refused


def test_revoke_of_a_queued_task_ends_revoked(app: App, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    gate = CommandGate(app, audit_log_path=audit)
    res = app.send_task("gt.add", (2, 2), countdown=3)
    with start_worker(app, hostname="w1@test"):
        wait_for_mailboxes(app, "w1@test")
        result = gate.run(Action("revoke", (res.id,)))
        assert result.ok, result.summary
        assert set(result.replies) == {"w1@test"} and not result.no_reply
        assert "revoked" in result.replies["w1@test"]["ok"]
        wait_until(lambda: app.backend.get_task_meta(res.id)["status"] == "REVOKED")
    line = audit_lines(audit)[-1]
    assert line["action"] == "revoke" and line["targets"] == [res.id] and line["ok"] is True
    assert line["replies"]["w1@test"]["ok"]


def test_rate_limit_replies_per_worker(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "audit.jsonl", timeout=3.0)
    with start_worker(app, hostname="w1@test"), start_worker(app, hostname="w2@test"):
        wait_for_mailboxes(app, "w1@test", "w2@test")
        result = gate.run(Action("rate_limit", ("gt.add",), {"rate": "10/m"}))
        assert result.ok, result.summary
        assert set(result.replies) == {"w1@test", "w2@test"}
        assert all("ok" in v for v in result.replies.values())
        assert result.summary.startswith("rate_limit: 2/2 workers ok")
        bad = gate.run(Action("rate_limit", ("gt.nope",), {"rate": "10/m"}))
        assert not bad.ok and "error" in bad.summary
        assert all("error" in v for v in bad.replies.values())
        one = gate.run(Action("pool_grow", ("w1@test",), {"n": 1}))
        assert set(one.replies) == {"w1@test"}, "destination limited to the target worker"


def test_expected_but_dead_worker_is_reported_as_no_reply(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "audit.jsonl", timeout=1.0)
    app.transport.register_worker("ghost@nowhere", {"hostname": "ghost@nowhere",
                                                    "queues": ["celery"]}, ttl=60)
    with start_worker(app, hostname="w1@test"):
        wait_for_mailboxes(app, "w1@test")
        result = gate.run(Action("rate_limit", ("gt.add",), {"rate": "5/s"}))
        assert not result.ok
        assert result.no_reply == ("ghost@nowhere",)
        assert "w1@test" in result.replies and "ghost@nowhere" not in result.replies
        assert "1 no reply" in result.summary and "ghost@nowhere" in result.summary
        shut = gate.run(Action("shutdown", ("ghost@nowhere",)))
        assert not shut.ok and shut.no_reply == ("ghost@nowhere",)


def test_purge_counts_and_unknown_queue(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "audit.jsonl")
    for i in range(3):
        app.send_task("gt.add", (i, i), queue="parked")
    app.send_task("gt.add", (9, 9), queue="parked", countdown=600)  # scheduled counts too
    result = gate.run(Action("purge", ("parked",)))
    assert result.ok and result.replies == {"parked": 4}
    assert "4 messages deleted" in result.summary
    assert app.transport.queue_stats(["parked"])[0].depth == 0
    missing = gate.run(Action("purge", ("no-such-queue",)))
    assert not missing.ok and "no such queue" in missing.summary


def test_retry_of_a_failed_task_and_of_one_never_failed(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "audit.jsonl")
    with start_worker(app, hostname="w1@test"):
        res = app.send_task("gt.boom", (7,))
        wait_until(lambda: app.backend.get_task_meta(res.id)["status"] == "FAILURE")
        result = gate.run(Action("retry", (res.id, "never-failed")))
        assert result.replies == {res.id: "sent", "never-failed": "no failed message kept"}
        assert not result.ok and "1 task re-sent" in result.summary
        wait_until(lambda: app.backend.get_task_meta(res.id)["status"] == "FAILURE")


def test_invalid_actions_are_refused_with_a_reason(app: App, tmp_path: Path) -> None:
    gate = CommandGate(app, audit_log_path=tmp_path / "audit.jsonl")
    cases = {
        "shutdown: name the workers": Action("shutdown", ()),
        "terminate: signal must be": Action("terminate", ("x",), {"signal": "SIGSEGV"}),
        "pool_grow: n must be": Action("pool_grow", (), {"n": 0}),
        "revoke: no targets": Action("revoke", ()),
        "unknown action": Action("explode", ("x",)),  # type: ignore[arg-type]
    }
    for reason, action in cases.items():
        result = gate.run(action)
        assert not result.ok and result.refused and reason in result.refused
    assert len(audit_lines(tmp_path / "audit.jsonl")) == len(cases)


def test_describe_gives_the_tqcore_command() -> None:
    gate = CommandGate(object())
    assert gate.describe(Action("terminate", ("abc",), {"signal": "SIGKILL"}, ("w1@h",))) == \
        "tqcore control revoke abc --terminate --signal SIGKILL -d w1@h"
    assert gate.describe(Action("revoke", ("a", "b"))) == "tqcore control revoke a b"
    assert gate.describe(Action("retry", ("a",))) == "tqcore retry a"
    assert gate.describe(Action("retry_signature", ("9f3a12ab34cd",))) == \
        "tqcore retry --signature 9f3a12ab34cd"
    assert gate.describe(Action("rate_limit", ("demo.send_email",), {"rate": "10/m"})) == \
        "tqcore control rate_limit demo.send_email 10/m"
    assert gate.describe(Action("rate_limit", ("t",), {"rate": None})) == \
        "tqcore control rate_limit t 0"
    assert gate.describe(Action("pool_shrink", ("w1@h", "w2@h"), {"n": 2})) == \
        "tqcore control pool_shrink 2 -d w1@h,w2@h"
    assert gate.describe(Action("pool_grow", ())) == "tqcore control pool_grow 1"
    assert gate.describe(Action("shutdown", ("w1@h",))) == "tqcore control shutdown -d w1@h"
    assert gate.describe(Action("purge", ("emails",))) == "tqcore purge emails -f"
    # Untrusted ids are shell-quoted; long lists are abbreviated unless max_ids=None.
    assert gate.describe(Action("revoke", ("x; rm -rf /",))) == "tqcore control revoke 'x; rm -rf /'"
    many = Action("revoke", tuple(f"id{i}" for i in range(60)))
    assert gate.describe(many).endswith("id49 … (+10 more)")
    assert gate.describe(many, max_ids=None).endswith("id58 id59")


def test_tiers() -> None:
    gate = CommandGate(object())
    assert gate.tier(Action("revoke", ("a",))) == 1
    assert gate.tier(Action("revoke", ("a", "b"))) == 2
    assert gate.tier(Action("revoke", tuple(str(i) for i in range(1001)))) == 3
    assert gate.tier(Action("terminate", ("a",))) == 2
    assert gate.tier(Action("retry", ("a",))) == 1
    assert gate.tier(Action("retry", ("a", "b"))) == 2
    assert gate.tier(Action("retry_signature", ("s",))) == 2
    assert gate.tier(Action("rate_limit", ("t",), {"rate": "1/s"})) == 1
    assert gate.tier(Action("pool_grow", ("w1",), {"n": 1})) == 1
    assert gate.tier(Action("pool_grow", ("w1",), {"n": 3})) == 2
    assert gate.tier(Action("pool_shrink", ())) == 2  # every worker
    assert gate.tier(Action("shutdown", ("w1",))) == 2
    assert gate.tier(Action("shutdown", ("w1", "w2"))) == 3
    assert gate.tier(Action("purge", ("q",))) == 3


def test_refusals_made_by_the_ui_are_audited_too(app: App, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    gate = CommandGate(app, audit_log_path=audit)
    gate.record_refusal("purge", "broker unreachable: purge disabled until reconnected")
    line = audit_lines(audit)[-1]
    assert line["action"] == "purge" and line["ok"] is False
    assert line["refused"] == "broker unreachable: purge disabled until reconnected"
