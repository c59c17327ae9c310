"""The ``tqmon`` command.

::

    tqmon [--broker URL] [-A module[:app]] [--read-only] [--audit-log FILE]
          [--replay-history SECONDS] [--record FILE]     open the dashboard
    tqmon demo [--read-only] [--no-ui] [--duration S] [--record FILE]
    tqmon record -o FILE [--broker URL] [-A app] [--duration S]
    tqmon replay FILE [--speed X] [--freeze]

The dashboard is :class:`tqmon.app.TqmonApp`, constructed as
``TqmonApp(source_factory=<callable returning a Source>, gate=<CommandGate | None>,
read_only=bool, broker_label=str)``. User errors print one line and exit with status 2.
Only this module prints.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from tqcore.exceptions import ImproperlyConfigured, TqError, TransportError
from tqcore.text import inert
from tqcore.urls import redact
from tqmon.contracts import EventBatch, LinkStatus, Source

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
#: Garbage-collector thresholds for the monitor process. The cluster model holds ~10^6
#: long-lived objects; with Python's default (700, 10, 10) full collections rescan them all
#: every few thousand events and halve ingest (bench/tqmon_ingest.py measures both).
GC_THRESHOLD = (100_000, 50, 100)


def tune_gc() -> None:
    """Collect the young generation less often (the monitor keeps what it allocates)."""
    gc.set_threshold(*GC_THRESHOLD)


def default_audit_log() -> Path:
    """``$XDG_STATE_HOME/tqmon/audit.jsonl`` (``~/.local/state/tqmon/audit.jsonl``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "tqmon" / "audit.jsonl"


def resolve_app(app_spec: str | None, broker: str | None) -> Any:
    """The :class:`tqcore.App` to watch: ``-A`` (with ``--broker`` overriding its URL), else a
    bare app for ``--broker`` / ``TQ_BROKER_URL`` / the embedded default file.

    Raises:
        click.UsageError: the app cannot be imported, or the URL is not usable.
    """
    from tqcore.app import App
    from tqcore.cli.main import find_app

    app = find_app(app_spec) if app_spec else App("tqmon", set_as_current=False)
    if broker:
        app.conf.broker_url = broker
    try:
        app.transport  # noqa: B018 - a bad scheme or URL is a usage error, not an outage
    except ImproperlyConfigured as exc:
        raise click.UsageError(str(exc)) from None
    except TransportError as exc:  # unreachable: the dashboard shows it and retries
        logger.info("broker not reachable yet: %s", exc)
    return app


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TqError as exc:
            click.echo(f"Error: {inert(exc)}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def setup_logging(ui: bool) -> None:
    """Log to stderr when headless; to ``$XDG_STATE_HOME/tqmon/tqmon.log`` under the UI (a
    stderr line would tear the screen). ``TQMON_LOGLEVEL`` sets the level (WARNING)."""
    level = os.environ.get("TQMON_LOGLEVEL", "WARNING").upper()
    handler: logging.Handler
    if ui:
        path = default_audit_log().with_name("tqmon.log")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
        except OSError:
            handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = logging.getLevelName(level)
    root.setLevel(numeric if isinstance(numeric, int) else logging.WARNING)


def run_dashboard(source_factory: Callable[[], Source], gate: Any, read_only: bool,
                  broker_label: str) -> None:
    """Open the Textual dashboard (``tqmon.app.TqmonApp``) and block until it exits."""
    try:
        from tqmon.app import TqmonApp
    except ImportError as exc:
        raise click.ClickException(f"the dashboard UI is not available: {exc}") from None
    setup_logging(ui=True)
    tune_gc()
    TqmonApp(source_factory=source_factory, gate=gate, read_only=read_only,
             broker_label=broker_label).run()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM/SIGHUP (handlers restored afterwards)."""
    stop = threading.Event()
    old: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            old[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for signum, h in old.items():
            signal.signal(signum, h)


def run_headless(source: Source, record: str | None, duration: float | None,
                 stop: threading.Event | None = None) -> dict[str, int]:
    """Run ``source`` without a UI (optionally recording) until ``duration`` s or a signal.

    Link changes are reported on stderr. Returns counts: items, events, batches.
    """
    from tqmon.record import Recorder

    setup_logging(ui=False)
    tune_gc()
    counts = {"items": 0, "events": 0, "batches": 0}
    last_state: list[str] = [""]

    def report(item: object) -> None:
        counts["items"] += 1
        if isinstance(item, EventBatch):
            counts["batches"] += 1
            counts["events"] += len(item.events)
        elif isinstance(item, LinkStatus) and (item.state != last_state[0]
                                               or item.state == "disconnected"):
            if item.state != last_state[0] or item.retry_in is not None and item.retry_in >= 1:
                extra = f" · retry in {item.retry_in:.0f}s" if item.retry_in is not None else ""
                detail = f" · {inert(item.detail, max_len=200)}" if item.detail else ""
                click.echo(f"[{time.strftime('%H:%M:%S')}] {item.state} {inert(item.broker)}"
                           f"{detail}{extra}", err=True)
            last_state[0] = item.state

    deadline = None if duration is None else time.monotonic() + duration
    recorder = Recorder(record, forward=report) if record else None
    post = recorder if recorder is not None else report
    with _stop_on_signals() as sig_stop:
        def cancelled() -> bool:
            return (sig_stop.is_set() or (stop is not None and stop.is_set())
                    or (deadline is not None and time.monotonic() >= deadline))

        try:
            source.run(post, cancelled)
        finally:
            if recorder is not None:
                recorder.close()
    return counts


def _make_gate(app: Any, read_only: bool, audit_log: str | None) -> Any:
    from tqmon.gate import CommandGate

    return CommandGate(app, read_only, Path(audit_log) if audit_log else default_audit_log())


def _source_factory(app: Any, replay: float | None, record: str | None
                    ) -> Callable[[], Source]:
    from tqmon.record import RecordingSource
    from tqmon.source import ClusterSource

    def factory() -> Source:
        source: Source = ClusterSource(app, replay=replay)
        if record:
            # Later calls (a restarted source) append to the same recording.
            source = RecordingSource(source, record, append=factory.calls > 0)  # type: ignore[attr-defined]
        factory.calls += 1  # type: ignore[attr-defined]
        return source

    factory.calls = 0  # type: ignore[attr-defined]
    return factory


_broker_opt = click.option("-b", "--broker", envvar="TQ_BROKER_URL", default=None,
                           help="Broker URL (default: TQ_BROKER_URL, else the embedded file).")
_app_opt = click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]", envvar="TQ_APP",
                        default=None, help="The tqcore app (its broker and result backend).")


@click.group("tqmon", invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@_broker_opt
@_app_opt
@click.option("--read-only", is_flag=True, help="Refuse every action (enforced in the gate).")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Where actions are logged (default: ~/.local/state/tqmon/audit.jsonl).")
@click.option("--replay-history", type=float, default=300.0, show_default=True,
              metavar="SECONDS", help="Read this much event history at start (0: none).")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Also record the session to this JSON-lines file.")
@click.version_option(package_name="tqcore", prog_name="tqmon")
@click.pass_context
@_user_errors
def cli(ctx: click.Context, broker: str | None, app_spec: str | None, read_only: bool,
        audit_log: str | None, replay_history: float, record: str | None) -> None:
    """tqmon: the incident dashboard for tqcore (and Celery) clusters.

    With no command, open the dashboard on the broker. `tqmon demo` shows it on a
    demo cluster with no setup.
    """
    ctx.ensure_object(dict)
    ctx.obj.update(broker=broker, app_spec=app_spec)
    if ctx.invoked_subcommand is not None:
        return
    app = resolve_app(app_spec, broker)
    label = redact(app.conf.broker())
    run_dashboard(_source_factory(app, replay_history or None, record),
                  _make_gate(app, read_only, audit_log), read_only, label)


@cli.command()
@click.option("--read-only", is_flag=True, help="Refuse every action.")
@click.option("--no-ui", is_flag=True, help="Run the cluster and the feed without the dashboard.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("-o", "--record", type=click.Path(dir_okay=False), default=None,
              help="Record the session to this JSON-lines file.")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Where actions are logged (default: the demo's temp dir).")
@click.option("--seed", type=int, default=7, show_default=True,
              help="The workload's random seed (-1: random).")
@_user_errors
def demo(read_only: bool, no_ui: bool, duration: float | None, record: str | None,
         audit_log: str | None, seed: int) -> None:
    """Start a demo cluster (embedded broker, two workers, a workload) and watch it.

    Everything it starts is stopped when the dashboard exits.
    """
    from tqcore.app import App
    from tqmon.demo import Demo
    from tqmon.source import ClusterSource

    click.echo("Starting the demo cluster (embedded SQLite broker, 2 workers)…", err=True)
    with Demo(seed=seed) as cluster, _term_as_exit():
        try:
            cluster.start()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        app = App("tqmon-demo", broker=cluster.url, backend=cluster.url, set_as_current=False)
        audit = audit_log or str(cluster.dir / "audit.jsonl")
        if no_ui:
            click.echo(f"Demo broker: {cluster.url}  (Ctrl-C to stop)", err=True)
            counts = run_headless(ClusterSource(app, replay=120), record, duration)
            click.echo(f"{counts['events']} events in {counts['batches']} batches"
                       + (f", recorded to {record}" if record else ""), err=True)
            return
        run_dashboard(_source_factory(app, 120, record), _make_gate(app, read_only, audit),
                      read_only, f"demo · {redact(cluster.url)}")


@contextlib.contextmanager
def _term_as_exit() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks (the demo's cleanup) run."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for signum, h in old.items():
            signal.signal(signum, h)


@cli.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The recording to write (JSON lines).")
@_broker_opt
@_app_opt
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--replay-history", type=float, default=0.0, metavar="SECONDS",
              help="Start with this much of the broker's event history.")
@click.pass_obj
@_user_errors
def record(obj: dict[str, Any], output: str, broker: str | None, app_spec: str | None,
           duration: float | None, replay_history: float) -> None:
    """Record the cluster's feed to a file, headless (replay it with `tqmon replay`)."""
    from tqmon.source import ClusterSource

    app = resolve_app(app_spec or obj.get("app_spec"), broker or obj.get("broker"))
    click.echo(f"Recording {redact(app.conf.broker())} to {output} (Ctrl-C to stop)", err=True)
    counts = run_headless(ClusterSource(app, replay=replay_history or None), output, duration)
    click.echo(f"Recorded {counts['items']} items ({counts['events']} events) to {output}",
               err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="Playback speed factor.")
@click.option("--freeze", is_flag=True, help="Show the end state at once (no playback).")
@_user_errors
def replay(file: str, speed: float, freeze: bool) -> None:
    """Replay a recording in the dashboard (no broker needed; read-only)."""
    from tqmon.record import ReplaySource

    if not Path(file).is_file():
        raise click.UsageError(f"no such recording: {file}")
    if speed <= 0:
        raise click.UsageError("--speed must be positive")
    run_dashboard(lambda: ReplaySource(file, speed=speed, freeze=freeze), None, True,
                  f"replay · {Path(file).name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tqmon`` and ``python -m tqmon``: usage errors are one line."""
    try:
        cli.main(args=argv, prog_name="tqmon", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except TqError as exc:
        click.echo(f"Error: {inert(exc)}", err=True)
        sys.exit(EXIT_USAGE)
