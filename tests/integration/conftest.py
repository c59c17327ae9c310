"""Fixtures for the integration suite: a private SQLite broker per test, a task ledger,
and real worker processes started and stopped by pid.

Each test gets ``tq`` (a :class:`Harness`): a temp dir with ``tq.db`` (broker and
result backend) and ``ledger.log`` (written by the tasks of :mod:`tests.integration.proj`).
The test process uses the same file through ``proj.app``. Worker processes run as a
user would run them::

    python3 -m tqcore -A tests.integration.proj worker -P threads -c 2 --lease 2 ...

with ``TQ_BROKER_URL`` / ``TQ_RESULT_BACKEND`` / ``TQ_LEDGER`` in their environment.
On a failing test, the tails of the workers' logs are attached to the report.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# `python3 -m pytest` puts the cwd on sys.path; a bare `pytest` does not.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

APP_MODULE = "tests.integration.proj"
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 20.0
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


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ledger line."""

    event: str
    task_id: str
    attempt: int
    retries: int
    pid: int
    t: float


class Ledger:
    """The tasks' own record of what ran (see :mod:`tests.integration.proj`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 6:  # a torn last line cannot happen with one write(), but be safe
                continue
            ev, tid, att, ret, pid, t = parts
            out.append(Entry(ev, tid, int(att), int(ret), int(pid), float(t)))
        return out

    def starts(self, task_id: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.event == "start"
                and (task_id is None or e.task_id == task_id)]

    def ends(self, task_id: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.event == "end"
                and (task_id is None or e.task_id == task_id)]

    def start_counts(self) -> Counter[str]:
        return Counter(e.task_id for e in self.starts())

    def end_counts(self) -> Counter[str]:
        return Counter(e.task_id for e in self.ends())


class WorkerProcess:
    """A ``tqcore worker`` subprocess in its own session, log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = [sys.executable, "-m", "tqcore", "-A", APP_MODULE, "worker", *args]
        self.log_path = log_path
        with log_path.open("ab") as log:
            log.write(f"===== {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pid = self.proc.pid
        _live_logs.append(log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL the worker's whole process group (ours: started with a new session)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=SHUTDOWN_TIMEOUT)

    def wait(self, timeout: float = SHUTDOWN_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        """Warm shutdown; SIGKILL the group if it does not exit in time."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                with self.log_path.open("ab") as log:
                    log.write(b"\n===== ignored SIGTERM: SIGKILL\n")
                self.kill9()
        return self.proc.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


class Harness:
    """One test's broker file, ledger, app and worker processes."""

    def __init__(self, base: Path, app: Any) -> None:
        self.dir = base
        self.url = f"sqlite:///{base / 'tq.db'}"  # base is absolute: sqlite:////tmp/...
        self.ledger = Ledger(base / "ledger.log")
        self.app = app
        self.workers: list[WorkerProcess] = []
        self.env = dict(os.environ)
        self.env.update({
            "TQ_BROKER_URL": self.url, "TQ_RESULT_BACKEND": self.url,
            "TQ_LEDGER": str(self.ledger.path), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                               else [])),
        })
        self.env.pop("TQ_APP", None)

    # -- workers -----------------------------------------------------------------
    def start_worker(self, *, pool: str = "threads", concurrency: int = 2,
                     lease: float = 2.0, prefetch: int | None = None,
                     queues: str | None = None, name: str | None = None,
                     wait: bool = True, extra: list[str] | None = None) -> WorkerProcess:
        """Start a worker process; by default wait until it registered itself."""
        name = name or f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:6]}@%h"
        args = ["-P", pool, "-c", str(concurrency), "-n", name, "-l", "info",
                "--lease", str(lease)]
        if prefetch is not None:
            args += ["--prefetch-multiplier", str(prefetch)]
        if queues:
            args += ["-Q", queues]
        args += extra or []
        w = WorkerProcess(args, self.env, self.dir / f"worker{len(self.workers) + 1}.log")
        self.workers.append(w)
        if wait:
            self.wait_registered(w)
        return w

    def wait_registered(self, w: WorkerProcess, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until ``w`` is in the broker's worker registry (it is consuming then)."""
        def registered() -> bool:
            if not w.alive():
                raise AssertionError(f"worker exited with {w.proc.returncode} while starting:\n"
                                     f"{w.log_tail()}")
            return any(info.get("pid") == w.pid
                       for info in self.app.transport.list_workers().values())

        wait_until(registered, timeout, f"worker pid {w.pid} to register")

    def cleanup(self) -> None:
        for w in self.workers:
            w.stop()

    # -- broker ------------------------------------------------------------------
    def stats(self, queue: str = "celery") -> Any:
        (s,) = self.app.transport.queue_stats([queue])
        return s

    # -- CLI ---------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python3 -m tqcore ARGS`` against this test's broker file."""
        return subprocess.run([sys.executable, "-m", "tqcore", *args], cwd=REPO,
                              env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def use_broker(h: Harness, url: str, monkeypatch: pytest.MonkeyPatch,
               backend: str | None = None) -> Harness:
    """Point harness ``h`` (its workers and this process) at ``url`` as broker and
    result backend (or ``backend``), instead of its SQLite file."""
    h.app.close()
    backend = backend or url
    h.url = url
    for key, value in (("TQ_BROKER_URL", url), ("TQ_RESULT_BACKEND", backend)):
        h.env[key] = value
        monkeypatch.setenv(key, value)
    h.app.conf.broker_url, h.app.conf.result_backend = url, backend
    return h


@pytest.fixture()
def tq(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A fresh broker file, ledger and app configuration for one test."""
    from tests.integration import proj

    app = proj.app
    app.close()
    h = Harness(tmp_path, app)
    for key in ("TQ_BROKER_URL", "TQ_RESULT_BACKEND", "TQ_LEDGER"):
        monkeypatch.setenv(key, h.env[key])  # in-process workers run tasks here
    app.conf.broker_url = h.url
    app.conf.result_backend = h.url
    _live_logs.clear()
    try:
        yield h
    finally:
        h.cleanup()
        app.close()


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
