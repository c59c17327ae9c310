"""Fixtures for the remote-control suite: real prefork workers on a private SQLite broker.

A :class:`Cluster` is one broker file (``tq.db``, also the result backend), one ledger
(``ledger.jsonl``, written by the tasks of :mod:`tests.remote.remote_app`) and the
worker processes started on them, exactly as an operator would start them::

    cd tests/remote
    TQ_BROKER_URL=sqlite:////tmp/.../tq.db \\
        python3 -m tqcore -A remote_app worker -P prefork -c 2 -n w1@%h

The ops CLI (``tqcore inspect|control|retry|events ...``) is run the same way, as a
subprocess with only the environment to find the broker. Starting workers is the
slow part, so a cluster lives for a test module (``cluster`` fixture); tests of a
module must leave it as they found it (a dead worker they add is waited out).

Workers are stopped by pid (SIGTERM, then SIGKILL of their own process group). On a
failing test the tails of the workers' logs are attached to the report.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
APP_DIR = Path(__file__).resolve().parent  # the workers' cwd: holds remote_app.py
APP_MODULE = "remote_app"
if str(REPO) not in sys.path:  # `python3 -m pytest` adds the cwd; a bare `pytest` does not
    sys.path.insert(0, str(REPO))

HOST = socket.gethostname()  # what `%h` expands to in `-n w1@%h`
STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0
CLI_TIMEOUT = 90.0
LOG_TAIL_LINES = 60

_live_logs: list[Path] = []


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def node(name: str) -> str:
    """The full node name of worker ``name`` (``w1`` -> ``w1@<host>``)."""
    return f"{name}@{HOST}"


class Ledger:
    """The tasks' own record of what ran (see :mod:`tests.remote.remote_app`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # one write() per line: cannot be torn, but be safe
                continue
        return out

    def starts(self, task_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["ev"] == "start"
                and (task_id is None or e["id"] == task_id)]


class WorkerProcess:
    """A ``tqcore worker`` subprocess in its own session, its log in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.node = node(name)
        self.command = [sys.executable, "-m", "tqcore", "-A", APP_MODULE, "worker",
                        "-n", f"{name}@%h", *args]
        self.log_path = log_path
        with log_path.open("ab") as log:
            log.write(f"===== {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command, cwd=APP_DIR, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid
        _live_logs.append(log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the worker's process group (its own: started in a new session)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=SHUTDOWN_TIMEOUT)

    def stop(self) -> int | None:
        """Warm shutdown; SIGKILL the group if it does not exit in time."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """One broker file, ledger, the test process's app pointed at them, and workers."""

    def __init__(self, base: Path, app: Any) -> None:
        self.dir = base
        self.url = f"sqlite:///{base / 'tq.db'}"  # base is absolute: sqlite:////tmp/...
        self.ledger = Ledger(base / "ledger.jsonl")
        self.app = app
        self.workers: dict[str, WorkerProcess] = {}
        self.started_at = time.time()
        env = {k: v for k, v in os.environ.items()
               if k not in ("TQ_APP", "TQ_RESULT_BACKEND", "TQ_BROKER_URL")}
        env.update({"TQ_BROKER_URL": self.url, "TQ_LEDGER": str(self.ledger.path),
                    "PYTHONUNBUFFERED": "1"})
        self.env = env

    # -- workers ---------------------------------------------------------------------
    def start_worker(self, name: str, *extra: str, pool: str = "prefork", concurrency: int = 2,
                     wait: bool = True) -> WorkerProcess:
        """Start ``tqcore worker -n NAME@%h``; by default wait until it is registered."""
        args = ["-P", pool, "-c", str(concurrency), "-l", "info", *extra]
        w = WorkerProcess(name, args, self.env, self.dir / f"{name}.log")
        self.workers[name] = w
        if wait:
            self.wait_registered(w)
        return w

    def wait_registered(self, w: WorkerProcess, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until ``w`` is in the broker's worker registry (it is consuming then)."""
        def registered() -> bool:
            if not w.alive():
                raise AssertionError(f"worker {w.name} exited with {w.proc.returncode} while"
                                     f" starting:\n{w.log_tail()}")
            info = self.app.transport.list_workers().get(w.node)
            return bool(info) and info.get("pid") == w.pid

        wait_until(registered, timeout, f"worker {w.node} (pid {w.pid}) to register")

    def registered(self) -> set[str]:
        return set(self.app.transport.list_workers())

    def stop_all(self) -> None:
        for w in self.workers.values():
            w.stop()

    # -- results -----------------------------------------------------------------------
    def state(self, task_id: str) -> str:
        return str(self.app.AsyncResult(task_id).state)

    def wait_states(self, task_ids: list[str], states: set[str], timeout: float = 90.0) -> None:
        """Wait until every task is in one of ``states``."""
        pending = list(task_ids)

        def done() -> bool:
            pending[:] = [t for t in pending if self.state(t) not in states]
            return not pending

        try:
            wait_until(done, timeout, f"{len(task_ids)} task(s) to reach {sorted(states)}",
                       interval=0.2)
        except AssertionError as exc:
            detail = {t: self.state(t) for t in pending[:10]}
            raise AssertionError(f"{exc}; still not there: {detail}") from None

    # -- CLI ---------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = CLI_TIMEOUT,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run ``python3 -m tqcore ARGS`` against this cluster's broker (env only, no -A)."""
        return subprocess.run([sys.executable, "-m", "tqcore", *args], cwd=APP_DIR,
                              env=self.env, capture_output=True, text=text, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def cli_json(self, *args: str, expect_rc: int | None = 0,
                 timeout: float = CLI_TIMEOUT) -> tuple[int, Any]:
        """Run a ``--json`` command; returns (exit code, parsed stdout)."""
        r = self.cli(*args, timeout=timeout)
        where = f"tqcore {' '.join(args)} -> rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        if expect_rc is not None:
            assert r.returncode == expect_rc, where
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {where}") from None

    def events(self, *args: str, timeout: float = CLI_TIMEOUT) -> list[dict[str, Any]]:
        """Run ``tqcore events --json ARGS``: the events it printed, one per line."""
        r = self.cli("events", "--json", *args, timeout=timeout)
        assert r.returncode == 0, f"events rc={r.returncode}: {r.stderr}"
        out = []
        for line in r.stdout.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out


@pytest.fixture(scope="module")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Cluster]]:
    """Makes the module's cluster (the test process's app points at its broker)."""
    from tests.remote import remote_app

    made: list[Cluster] = []
    saved = os.environ.get("TQ_LEDGER")

    def make() -> Cluster:
        app = remote_app.app
        app.close()  # also drops its producer event dispatcher (see test_app_close.py)
        c = Cluster(tmp_path_factory.mktemp("remote"), app)
        app.conf.broker_url = c.url
        app.conf.result_backend = c.url
        os.environ["TQ_LEDGER"] = str(c.ledger.path)
        made.append(c)
        _live_logs.clear()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop_all()
        remote_app.app.close()
        if saved is None:
            os.environ.pop("TQ_LEDGER", None)
        else:
            os.environ["TQ_LEDGER"] = saved


@pytest.fixture(scope="module")
def cluster(cluster_factory: Callable[[], Cluster]) -> Cluster:
    """Two prefork workers, ``w1@%h`` and ``w2@%h``, 2 children each."""
    c = cluster_factory()
    c.start_worker("w1", wait=False)
    c.start_worker("w2", wait=False)
    for w in c.workers.values():
        c.wait_registered(w)
    return c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the tail of each worker log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for path in list(_live_logs):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"worker log tail ({path})", tail))
