"""Fixtures: one broker, one result backend and one real worker process per broker.

Every test in this package runs once per broker (the package-scoped ``tq_env`` fixture
is parametrized, so pytest groups the tests by broker and restarts the worker between
groups):

``sqlite``
    broker and result backend in one file, ``sqlite:////<tmp>/tq.db``.
``redis``
    broker and result backend on the session's private redis-server
    (``tests/servers/redis_server.py``), under a key prefix of their own
    (``redis://127.0.0.1:<port>/0?prefix=accept-<uuid>:``).
``amqp``
    broker on the session's private RabbitMQ node (``tests/servers/rabbitmq_server.py``)
    under an entity prefix of their own, deleted at the end; results go to the Redis
    backend on the private redis-server (RabbitMQ deployments keep results elsewhere).

Without ``redis-server`` (or ``rabbitmq-server``) the params that need it are skipped,
or fail when ``CI=true``, as the server fixtures decide.

The worker runs exactly as a user would run it::

    python3 -m tqcore -A tests.acceptance.proj.tasks worker -P threads -c 4 -l info

with ``TQ_BROKER_URL`` and ``TQ_RESULT_BACKEND`` set to the broker's URLs and
``TQ_TEST_DIR`` naming the directory where tasks leave records. The test process
talks to the same broker through ``tests.acceptance.proj.tasks.app``. When a test
fails, the tail of the worker's log is attached to its report.
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


#: The brokers every acceptance test runs on (``tq_env``'s params).
BROKERS = ("sqlite", "redis", "amqp")


def _urls(request: pytest.FixtureRequest, broker: str, base: Path) -> tuple[str, str]:
    """``(broker_url, result_backend)`` for ``broker``, with a namespace of this run's own.

    The server fixtures skip (or, with ``CI=true``, fail) when their binary is missing.
    """
    if broker == "sqlite":
        url = f"sqlite:///{base / 'tq.db'}"  # base is absolute: sqlite:////tmp/...
        return url, url
    redis = request.getfixturevalue("redis_server")
    if broker == "redis":
        url = redis.private_url("accept")
        return url, url
    if broker == "amqp":
        from tests.servers.rabbitmq_server import private_url

        # A prefix of its own, with its queues and exchanges deleted at teardown.
        rabbit = private_url(request, request.getfixturevalue("rabbitmq_server"))
        return rabbit, redis.private_url("accept-results")
    raise ValueError(f"unknown broker {broker!r}")


def _reset_connections(app: Any) -> None:
    """Drop the app's broker/backend connections, so the next use opens the new URLs."""
    app.close()
    # App.close() leaves the task-sent event dispatcher bound to the old transport.
    app._events = None


@pytest.fixture(scope="package", params=BROKERS)
def tq_env(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One broker's URLs: the env (for the worker) and the test-process app point at them."""
    broker: str = request.param
    base = tmp_path_factory.mktemp(f"tqaccept-{broker}")
    url, backend = _urls(request, broker, base)
    records = base / "records"
    records.mkdir()
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    os.environ["TQ_BROKER_URL"] = url
    os.environ["TQ_RESULT_BACKEND"] = backend
    os.environ["TQ_TEST_DIR"] = str(records)

    # The app module may have been imported at collection time, before the env was
    # set, and the previous broker's connections may still be open: configure it
    # explicitly, before its first use on this broker.
    from tests.acceptance.proj.tasks import app

    _reset_connections(app)
    app.conf.broker_url = url
    # other test modules create apps too; by-name signatures here mean this one
    app.set_current()
    app.conf.result_backend = backend
    try:
        yield {"broker": broker, "dir": base, "url": url, "backend": backend,
               "records": records, "app": app}
    finally:
        _reset_connections(app)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def app(tq_env: dict[str, Any]) -> Any:
    """The project's app, configured for this run's broker (no worker implied)."""
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
        print(f"\nacceptance worker ({tq_env['broker']}) exited with {code}; "
              f"log: {proc.log_path}")


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
