"""``tqmon demo``: an embedded broker, two workers and a workload, so the dashboard is alive.

:class:`Demo` makes a temporary directory holding the SQLite broker file, starts two prefork
worker processes of :mod:`tqmon.demo_app` and one workload process (``python -m tqmon.demo``)
that keeps sending successes, failures with distinct signatures, retries, slow and
rate-limited tasks, chains, groups, chords, a revoked task and a terminated one. Every child
runs in its own session (terminal signals are not theirs) and, on Linux, dies with its parent
(``PR_SET_PDEATHSIG``); :meth:`Demo.stop` ends them by process group — SIGTERM, then SIGKILL —
and deletes the directory. Use it as a context manager so a crash or Ctrl-C still cleans up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Worker node names (``%h`` is the host).
WORKER_NAMES = ("demo1@%h", "demo2@%h")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM this child when the process that started it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Demo:
    """The demo cluster: broker file, worker processes, workload process.

    Args:
        workers: how many worker processes (named ``demo1@host``, ``demo2@host``, ...).
        concurrency: pool slots per worker.
        workload: start the workload process.
        seed: the workload's random seed (a fixed one makes recordings alike).
        directory: where to put the broker file (default: a new temp dir, deleted on stop).

    Attributes:
        url: the broker (and result store) URL, ``sqlite:////…/demo.db``.
    """

    def __init__(self, workers: int = 2, concurrency: int = 2, workload: bool = True,
                 seed: int | None = 7, directory: str | os.PathLike[str] | None = None) -> None:
        self.n_workers = workers
        self.concurrency = concurrency
        self.with_workload = workload
        self.seed = seed
        self._own_dir = directory is None
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="tqmon-demo-"))
        self.url = "sqlite:///" + str((self.dir / "demo.db").resolve())
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of every demo process (broker, result store, import path)."""
        env = dict(os.environ)
        env["TQ_BROKER_URL"] = self.url
        env["TQ_RESULT_BACKEND"] = self.url
        env.pop("TQ_APP", None)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        return env

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / log_name, "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [sys.executable, *args], env=self.env(), cwd=str(self.dir),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        finally:
            log.close()
        with self._lock:
            self.procs.append(proc)
        return proc

    def start(self, ready_timeout: float = 60.0) -> None:
        """Start the workers, wait until they are registered, then start the workload.

        Raises:
            RuntimeError: a worker did not come up in time (its log tail is in the message).
        """
        from tqcore import App

        for i in range(self.n_workers):
            name = WORKER_NAMES[i] if i < len(WORKER_NAMES) else f"demo{i + 1}@%h"
            self._spawn(["-m", "tqcore", "-A", "tqmon.demo_app", "worker", "-P", "prefork",
                         "-c", str(self.concurrency), "-n", name, "-Q", "celery,emails,media",
                         "-l", "INFO"], f"worker{i + 1}.log")
        probe = App("tqmon-demo-probe", broker=self.url, backend=self.url, set_as_current=False)
        deadline = time.monotonic() + ready_timeout
        try:
            while len(probe.transport.list_workers()) < self.n_workers:
                dead = [p for p in self.procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError("demo workers did not start:\n" + self.log_tail())
                time.sleep(0.2)
        finally:
            probe.close()
        if self.with_workload:
            args = ["-m", "tqmon.demo", "--seed", str(self.seed if self.seed is not None else -1)]
            self._spawn(args, "workload.log")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of every demo log (for error messages)."""
        out = []
        for path in sorted(self.dir.glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop every process this demo started (by process group), then delete the temp dir."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            procs = list(self.procs)
        for proc in reversed(procs):  # the workload first, so nothing new arrives
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in procs:
            # The group also holds the worker's prefork children.
            self._signal(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        # The child leads its own session, so its pgid is its pid: only what we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGKILL or proc.poll() is None:
                os.killpg(proc.pid, sig)

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the workload (runs in its own process: ``python -m tqmon.demo``) ----------------------
def run_workload(stop: threading.Event, seed: int | None = 7, tick: float = 0.25) -> None:
    """Send the demo's traffic until ``stop`` is set.

    Every tick (``tick`` s) it may send, on its own schedule: charges, emails, slow image
    resizes (a group), a ``validate → reserve → charge`` chain, a ``group(validate…) → notify``
    chord, a retrying ``fetch_rates``, a flaky ``build_report``; now and then a task that is
    revoked before it runs, and a very slow resize that is terminated while running.
    """
    from tqcore import chain, chord, group
    from tqcore.exceptions import TqError
    from tqmon import demo_app as d

    rng = random.Random(seed if seed is not None and seed >= 0 else None)
    order = 1000
    n = 0
    terminate_at: list[tuple[float, str]] = []

    def next_order() -> str:
        nonlocal order
        order += 1
        return f"ord-{order}"

    while not stop.is_set():
        started = time.monotonic()
        try:
            if n % 2 == 0:
                d.charge.delay(next_order(), rng.choice([1299, 4999, 2500, 18900]),
                               card=rng.choice(["visa-4242", "mc-5454", "amex-0005"]))
            if n % 4 == 1:
                d.send_email.delay(f"user{rng.randint(1, 999)}@example.com",
                                   template=rng.choice(["receipt", "welcome", "reset"]))
            if n % 12 == 3:
                group(d.resize_image.s(rng.randint(1, 9999)) for _ in range(3)).apply_async()
            if n % 20 == 5:
                o = next_order()
                chain(d.validate.s(o), d.reserve.s(),
                      d.charge.si(o, rng.choice([999, 4200]))).apply_async()
            if n % 32 == 9:
                chord([d.validate.s(next_order()) for _ in range(4)],
                      d.notify.s(channel="#orders")).apply_async()
            if n % 16 == 7:
                d.fetch_rates.delay(rng.choice(["EUR", "GBP", "JPY"]))
            if n % 8 == 2:
                d.build_report.delay(rng.choice(["daily-sales", "churn", "inventory"]),
                                     rng.randint(1, 500))
            if n % 80 == 20:  # queued with a countdown, revoked before it can run
                res = d.resize_image.apply_async((rng.randint(1, 9999),), countdown=3)
                d.app.control.revoke(res.id)
            if n % 120 == 40:  # a stuck resize, terminated once it has run a while
                res = d.resize_image.apply_async((rng.randint(1, 9999),),
                                                 kwargs={"seconds": 60.0})
                terminate_at.append((time.monotonic() + 4.0, res.id))
            for due, task_id in list(terminate_at):
                if time.monotonic() >= due:
                    terminate_at.remove((due, task_id))
                    d.app.control.revoke(task_id, terminate=True, signal="SIGTERM")
        except TqError as exc:  # the broker went away (the demo is stopping): keep trying
            logger.warning("workload: %s", exc)
        n += 1
        stop.wait(max(0.0, tick - (time.monotonic() - started)))


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tqmon.demo",
                                     description="The tqmon demo's workload (started by"
                                                 " `tqmon demo`).")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tick", type=float, default=0.25)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s] %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    logger.info("workload started (seed %s, id %s)", ns.seed, uuid.uuid4().hex[:8])
    run_workload(stop, ns.seed, ns.tick)


if __name__ == "__main__":
    _main()
