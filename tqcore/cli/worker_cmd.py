"""``tqcore worker``: run a worker (like ``celery worker``)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import click

from tqcore.cli.main import CLIContext, user_errors

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def setup_logging(level: str, logfile: str | None = None) -> None:
    """Celery-like log lines on stderr (or ``logfile``)."""
    handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@click.command()
@click.option("-c", "--concurrency", type=int, default=None,
              help="Pool slots (default: number of CPUs).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "processes", "threads", "solo"]),
              default="prefork", show_default=True, help="Pool implementation.")
@click.option("--max-tasks-per-child", type=int, default=None,
              help="prefork: replace a child after this many tasks.")
@click.option("--max-memory-per-child", type=int, default=None,
              help="prefork: replace a child once its RSS passes this many KiB.")
@click.option("--autoscale", default=None, metavar="MAX,MIN",
              help="prefork: grow up to MAX children under load, shrink to MIN when idle.")
@click.option("--soft-shutdown-timeout", type=float, default=None,
              help="Warm shutdown: seconds running tasks get before they are handed back.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", default=None, help="Node name, e.g. w1@%h.")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("-f", "--logfile", default=None, help="Log to this file instead of stderr.")
@click.option("--prefetch-multiplier", type=int, default=None,
              help="Unacknowledged messages held per pool slot"
                   " (worker_prefetch_multiplier).")
@click.option("--lease", type=float, default=None,
              help="Seconds a claimed message stays leased unless renewed.")
@click.option("--without-control", default="",
              help="Comma-separated control commands to refuse (e.g. shutdown,terminate).")
@click.option("-E/--without-task-events", "--task-events/--no-task-events", "task_events",
              default=None, help="Send task events (on by default).")
@click.option("-B", "--beat", "embed_beat", is_flag=True, default=False,
              help="Also run beat (periodic tasks) in this process: for development.")
@click.option("-s", "--schedule", "beat_schedule", default=None, metavar="URL|PATH",
              help="With -B: where beat keeps its state (default: the broker's store).")
@click.pass_obj
@user_errors
def worker(obj: CLIContext, concurrency: int | None, pool: str, max_tasks_per_child: int | None,
           max_memory_per_child: int | None, autoscale: str | None,
           soft_shutdown_timeout: float | None, queues: str | None,
           hostname: str | None, loglevel: str, logfile: str | None,
           prefetch_multiplier: int | None, lease: float | None, without_control: str,
           task_events: bool | None, embed_beat: bool, beat_schedule: str | None) -> None:
    """Start a worker. SIGTERM or Ctrl-C: warm shutdown; a second one: cold."""
    from tqcore.worker import Worker

    setup_logging(loglevel, logfile)
    app = obj.app
    # A malformed URL fails here at once; an unreachable broker is waited for (the
    # worker retries with backoff and logs why).
    app.transport  # noqa: B018
    app.backend  # noqa: B018
    if pool == "processes":
        pool = "prefork"
    scale = None
    if autoscale:
        try:
            high, low = (int(x) for x in autoscale.split(","))
        except ValueError:
            raise click.UsageError("--autoscale takes MAX,MIN, e.g. 10,3") from None
        scale = (max(high, low), min(high, low))
    w = Worker(app, hostname=hostname,
               queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else None,
               concurrency=concurrency, pool=pool, prefetch_multiplier=prefetch_multiplier,
               lease=lease, task_events=task_events, max_tasks_per_child=max_tasks_per_child,
               max_memory_per_child=max_memory_per_child, autoscale=scale,
               soft_shutdown_timeout=soft_shutdown_timeout,
               without_control={c.strip() for c in without_control.split(",") if c.strip()})
    signals = {"count": 0}

    def on_term(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        cold = signals["count"] > 1 or signum == signal.SIGQUIT
        logging.getLogger("tqcore.worker").warning(
            "%s received: %s shutdown", signal.Signals(signum).name, "cold" if cold else "warm")
        w.stop(cold=cold)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_term)
    beat_service = None
    if embed_beat:
        from tqcore.beat import Beat

        beat_service = Beat(app, schedule=beat_schedule)
        beat_service.start()
    try:
        w.run()
    finally:
        if beat_service is not None:
            beat_service.stop()
            beat_service.join(10)
