"""``tqcore beat``: send periodic tasks (like ``celery beat``).

Run one or several: they elect one leader through the broker's store, and a standby
takes over when the leader stops or dies.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from tqcore.cli.main import CLIContext, user_errors
from tqcore.cli.worker_cmd import setup_logging


@click.command()
@click.option("-s", "--schedule", "schedule", default=None, metavar="URL|PATH",
              help="Where beat keeps each entry's last run: a sqlite://, redis:// or "
                   "memory:// URL, or an SQLite file path (beat_schedule_filename). "
                   "Default: the broker's store.")
@click.option("--max-interval", type=float, default=None,
              help="Most seconds between two checks (beat_max_loop_interval, default 5).")
@click.option("--lock-timeout", type=float, default=None,
              help="Seconds a dead leader keeps the lead before a standby beat takes "
                   "over (beat_lock_timeout, default 10).")
@click.option("--max-catchup", type=int, default=None,
              help="Most missed runs sent per entry after downtime (beat_max_catchup, "
                   "default 100).")
@click.option("-n", "--hostname", default=None, help="This beat's node name in events.")
@click.option("-l", "--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("-f", "--logfile", default=None, help="Log to this file instead of stderr.")
@click.pass_obj
@user_errors
def beat(obj: CLIContext, schedule: str | None, max_interval: float | None,
         lock_timeout: float | None, max_catchup: int | None, hostname: str | None,
         loglevel: str, logfile: str | None) -> None:
    """Send the app's periodic tasks (beat_schedule). SIGTERM or Ctrl-C: stop."""
    from tqcore.beat import Beat, entries_from_app

    for name, value in (("--max-interval", max_interval), ("--lock-timeout", lock_timeout),
                        ("--max-catchup", max_catchup)):
        if value is not None and value <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    setup_logging(loglevel, logfile)
    app = obj.app
    app.transport  # noqa: B018 - fail fast on a bad broker URL
    entries_from_app(app)  # a malformed beat_schedule is a usage error, before we start
    service = Beat(app, schedule=schedule, max_interval=max_interval,
                   lock_timeout=lock_timeout, max_catchup=max_catchup, hostname=hostname)

    def on_term(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("tqcore.beat").warning("%s received: stopping",
                                                 signal.Signals(signum).name)
        service.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_term)
    service.run()
