"""Fixtures: one SQLite broker/backend file and one real worker process for the package.

The worker runs exactly as a user would run it::

    python3 -m tqcore -A tests.acceptance.proj.tasks worker -P threads -c 4 -l info

with ``TQ_BROKER_URL`` and ``TQ_RESULT_BACKEND`` both set to ``sqlite:////<tmp>/tq.db``
and ``TQ_TEST_DIR`` naming the directory where tasks leave records. The test process
talks to the same file through ``tests.acceptance.proj.tasks.app``. When a test fails,
the tail of the worker's log is attached to its report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# `python3 -m pytest` puts the cwd on sys.path; a bare `pytest` does not.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Seconds the worker gets to come up, and to exit after SIGTERM.
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 15.0
LOG_TAIL_LINES = 80

_ENV_KEYS = ("TQ_BROKER_URL", "TQ_RESULT_BACKEND", "TQ_TEST_DIR")


class WorkerProcess:
    """A ``tqcore worker`` subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "tqcore", "-A", "tests.acceptance.proj.tasks",
                "worker", "-P", "threads", "-c", "4", "-l", "info"]

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== worker start #{self.starts}: {' '.join(self.command)}\n".encode())
            log.flush()
            # Own process group, so a stuck worker and any pool children can be killed.
            self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the worker executes a task (``add.delay(1, 1)`` returns 2)."""
        from tests.acceptance.proj.tasks import add

        deadline = time.monotonic() + timeout
        result = add.delay(1, 1)
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited with {self.returncode()} while starting\n"
                                   f"{self.log_tail()}")
            if result.ready():
                value = result.get(timeout=5)
                if value != 2:
                    raise RuntimeError(f"warm-up add(1, 1) returned {value!r}")
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker did not run add(1, 1) within {timeout}s\n{self.log_tail()}")

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL the process group after SHUTDOWN_TIMEOUT."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                with self.log_path.open("ab") as log:
                    log.write(b"\n===== worker ignored SIGTERM for 15 s: SIGKILL\n")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=SHUTDOWN_TIMEOUT)
        return proc.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no worker log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


_worker: WorkerProcess | None = None


@pytest.fixture(scope="package")
def tq_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A temp dir with the broker/backend file; env and the test-process app point at it."""
    base = tmp_path_factory.mktemp("tqaccept")
    url = f"sqlite:///{base / 'tq.db'}"  # base is absolute: sqlite:////tmp/...
    records = base / "records"
    records.mkdir()
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    os.environ["TQ_BROKER_URL"] = url
    os.environ["TQ_RESULT_BACKEND"] = url
    os.environ["TQ_TEST_DIR"] = str(records)

    # The app module may have been imported at collection time, before the env was
    # set: configure it explicitly, before its first use.
    from tests.acceptance.proj.tasks import app

    app.conf.broker_url = url
    app.conf.result_backend = url
    try:
        yield {"dir": base, "url": url, "records": records, "app": app}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def app(tq_env: dict[str, Any]) -> Any:
    """The project's app, configured for this package's broker file (no worker implied)."""
    return tq_env["app"]


@pytest.fixture(scope="package")
def worker(tq_env: dict[str, Any]) -> Iterator[WorkerProcess]:
    """A running worker process serving the ``celery`` queue."""
    global _worker
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    proc = WorkerProcess(env, tq_env["dir"] / "worker.log")
    _worker = proc
    proc.start()
    try:
        proc.wait_ready()
    except Exception as exc:
        proc.stop()
        _worker = None
        pytest.fail(f"could not start the worker: {exc}", pytrace=False)
    try:
        yield proc
    finally:
        code = proc.stop()
        _worker = None
        print(f"\nacceptance worker exited with {code}; log: {proc.log_path}")


@pytest.fixture(autouse=True)
def _worker_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that kills the worker, and give the next test a fresh one."""
    if "worker" not in request.fixturenames:
        yield
        return
    proc: WorkerProcess = request.getfixturevalue("worker")
    if not proc.alive():
        proc.start()
        proc.wait_ready()
    yield
    if not proc.alive():
        code = proc.returncode()
        tail = proc.log_tail()
        proc.start()
        proc.wait_ready()
        pytest.fail(f"the worker died during this test (exit code {code}):\n{tail}",
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the worker log's tail to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _worker is not None:
        report.sections.append((f"worker log tail ({_worker.log_path})", _worker.log_tail()))
