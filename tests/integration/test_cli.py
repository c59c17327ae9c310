"""The ``tqcore`` command as a user runs it: ``python3 -m tqcore ...`` in a subprocess.

Every user error (bad JSON, bad broker URL, unknown app module or task, unknown
queue) must be ONE line on stderr starting with ``Error:``, exit status 2, and no
traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from tests.integration.conftest import APP_MODULE, Harness, wait_until
from tests.integration.proj import add
from tqcore.testing import start_worker

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COMMANDS = ("call", "result", "queues", "purge", "worker")


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 2, exactly one stderr line starting ``Error:``, no traceback, no stdout."""
    detail = f"rc={proc.returncode}\nstdout={proc.stdout!r}\nstderr={proc.stderr!r}"
    assert proc.returncode == 2, detail
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, detail
    assert lines[0].startswith("Error:"), detail
    assert "Traceback" not in proc.stderr + proc.stdout, detail
    assert proc.stdout.strip() == "", detail


def queue_json(tq: Harness) -> dict[str, dict[str, object]]:
    proc = tq.cli("queues", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    return {row["name"]: row for row in rows}


def test_call_prints_id_and_result_shows_success(tq: Harness) -> None:
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        proc = tq.cli("-A", APP_MODULE, "call", "integ.add", "-a", "[2, 2]")
        assert proc.returncode == 0, proc.stderr
        task_id = proc.stdout.strip()
        assert UUID.match(task_id), f"call printed {proc.stdout!r}"

        def shows_success() -> bool:
            out = tq.cli("result", task_id)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip() == "SUCCESS: 4"

        wait_until(shows_success, 60, "`tqcore result ID` to print 'SUCCESS: 4'", interval=0.3)

    proc = tq.cli("result", task_id, "--json")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == 4
    assert meta["task_id"] == task_id
    assert len(tq.ledger.starts(task_id)) == 1


def test_result_of_unknown_id_is_pending(tq: Harness) -> None:
    proc = tq.cli("result", "00000000-0000-0000-0000-000000000000")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("PENDING")


def test_queues_json_counts_and_purge(tq: Harness) -> None:
    ids = []
    for i in range(3):
        proc = tq.cli("-A", APP_MODULE, "call", "integ.add", "-a", json.dumps([i, i]))
        assert proc.returncode == 0, proc.stderr
        ids.append(proc.stdout.strip())
    assert all(UUID.match(i) for i in ids)

    row = queue_json(tq)["celery"]
    assert row["depth"] == 3
    assert row["in_flight"] == 0
    assert row["scheduled"] == 0
    assert row["dead_lettered"] == 0
    assert row["consumers"] == 0
    assert isinstance(row["oldest_age"], int | float) and row["oldest_age"] >= 0
    text = tq.cli("queues")
    assert text.returncode == 0 and "celery" in text.stdout

    proc = tq.cli("purge", "-Q", "celery", "-f")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\b3\b", proc.stdout), f"purge did not report 3: {proc.stdout!r}"
    assert queue_json(tq)["celery"]["depth"] == 0
    assert tq.stats().depth == 0
    # Purged means gone: a worker started now runs none of them.
    with start_worker(tq.app, pool="threads", concurrency=2, lease=2.0):
        assert add.delay(5, 5).get(timeout=30) == 10
    time.sleep(0.3)
    assert all(not tq.ledger.starts(i) for i in ids)


def test_call_with_queue_and_countdown_waits_broker_side(tq: Harness) -> None:
    proc = tq.cli("-A", APP_MODULE, "call", "integ.add", "-a", "[1, 2]", "-Q", "other",
                  "--countdown", "60")
    assert proc.returncode == 0, proc.stderr
    assert UUID.match(proc.stdout.strip())
    rows = queue_json(tq)
    assert (rows["other"]["depth"], rows["other"]["scheduled"], rows["other"]["in_flight"]) \
        == (0, 1, 0)
    assert all(r["depth"] == 0 and r["scheduled"] == 0 for n, r in rows.items() if n != "other")


def test_purge_unknown_queue_is_one_line_error(tq: Harness) -> None:
    add.delay(1, 1)  # the broker file exists and knows "celery"
    assert_one_line_error(tq.cli("purge", "-Q", "no-such-queue", "-f"))
    assert tq.stats().depth == 1, "purging an unknown queue touched another one"


@pytest.mark.parametrize("argv", [
    ["-A", APP_MODULE, "call", "integ.add", "-a", "[1,"],
    ["-A", APP_MODULE, "call", "integ.add", "-k", "{bad"],
    ["-A", APP_MODULE, "call", "integ.add", "-a", '{"x": 1}'],
    ["call", "integ.add", "-a", "not json"],
    ["-b", "nonsense", "queues"],
    ["-b", "nonsense", "call", "integ.add", "-a", "[1, 2]"],
    ["-b", "redis2://x", "queues"],
    ["-b", "redis2://x", "-A", APP_MODULE, "call", "integ.add", "-a", "[1, 2]"],
    ["-b", "nonsense", "-A", APP_MODULE, "worker"],
    ["-A", "no.such.module", "worker"],
    ["-A", "no.such.module", "call", "integ.add"],
    ["-A", APP_MODULE, "call", "unknown.task"],
], ids=["bad-args-json", "bad-kwargs-json", "args-not-array", "bad-json-no-app",
        "bad-url", "bad-url-call", "unknown-scheme", "unknown-scheme-call",
        "bad-url-worker", "no-module-worker", "no-module-call", "unknown-task"])
def test_user_errors_are_one_line(tq: Harness, argv: list[str]) -> None:
    proc = tq.cli(*argv, timeout=30)
    assert_one_line_error(proc)
    # Nothing was sent to the (valid) broker file of this test.
    assert all(s.depth == 0 and s.scheduled == 0 for s in tq.app.transport.queue_stats())


def test_help_lists_the_commands(tq: Harness) -> None:
    runs = [tq.cli("--help")]
    script = shutil.which("tqcore")
    if script:
        runs.append(subprocess.run([script, "--help"], capture_output=True, text=True,
                                   timeout=60, env=tq.env))
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
        for cmd in COMMANDS:
            assert re.search(rf"^\s+{cmd}\b", proc.stdout, re.M), f"--help lacks {cmd}:\n{proc.stdout}"
