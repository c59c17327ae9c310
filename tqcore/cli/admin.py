"""Scripting commands: ``call``, ``result``, ``queues``, ``purge`` (each read one with ``--json``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tqcore.cli.main import EXIT_USAGE, CLIContext, parse_json, user_errors


def _known_task(obj: CLIContext, name: str) -> None:
    """Refuse a task name nobody knows: not in ``-A``'s app, or no live worker has it."""
    if obj.app_spec:
        if name not in obj.app.tasks:
            raise click.UsageError(f"unknown task {name!r} (not registered in {obj.app_spec})")
        return
    workers = obj.app.transport.list_workers()
    if workers and not any(name in (info.get("tasks") or []) for info in workers.values()):
        raise click.UsageError(f"unknown task {name!r}: no live worker registers it")
    if not workers:
        click.echo(f"warning: no live worker; {name!r} is queued unchecked", err=True)


@click.command()
@click.argument("name")
@click.option("-a", "--args", "args_json", default=None, help="Positional arguments, a JSON array.")
@click.option("-k", "--kwargs", "kwargs_json", default=None, help="Keyword arguments, a JSON object.")
@click.option("--countdown", type=float, default=None, help="Seconds to wait before running.")
@click.option("--eta", default=None, help="ISO-8601 time to run at.")
@click.option("--expires", type=float, default=None, help="Seconds after which not to run it.")
@click.option("-Q", "--queue", default=None, help="Queue to send to.")
@click.option("--priority", type=click.IntRange(0, 9), default=None)
@click.pass_obj
@user_errors
def call(obj: CLIContext, name: str, args_json: str | None, kwargs_json: str | None,
         countdown: float | None, eta: str | None, expires: float | None, queue: str | None,
         priority: int | None) -> None:
    """Send task NAME and print its id."""
    args = parse_json(args_json, "-a/--args", list)
    kwargs = parse_json(kwargs_json, "-k/--kwargs", dict)
    _known_task(obj, name)
    task = obj.app.tasks.get(name)
    res = obj.app.send_task(name, args, kwargs, countdown=countdown, eta=eta, expires=expires,
                            queue=queue, priority=priority, task_type=task)
    click.echo(res.id)


@click.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the stored meta as JSON.")
@click.option("--traceback", "show_tb", is_flag=True, help="Print the traceback of a failure.")
@click.option("-w", "--wait", type=float, default=None, help="Wait up to this many seconds.")
@click.pass_obj
@user_errors
def result(obj: CLIContext, task_id: str, as_json: bool, show_tb: bool,
           wait: float | None) -> None:
    """Show the state and result of TASK_ID."""
    from tqcore.exceptions import TimeoutError as TqTimeout

    backend = obj.app.backend
    if wait:
        try:
            meta = backend.wait_for(task_id, timeout=wait)
        except TqTimeout:
            meta = backend.get_task_meta(task_id)
    else:
        meta = backend.get_task_meta(task_id)
    if as_json:
        click.echo(json.dumps(meta, indent=2, default=str))
        return
    status = meta.get("status")
    value = meta.get("result")
    if isinstance(value, dict) and "exc_type" in value:
        msg = " ".join(str(a) for a in value.get("exc_message") or [])
        value = f"{value['exc_type']}: {msg}"
    click.echo(f"{status}: {json.dumps(value, default=str) if not isinstance(value, str) else value}")
    if show_tb and meta.get("traceback"):
        click.echo(meta["traceback"])


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@user_errors
def queues(obj: CLIContext, as_json: bool) -> None:
    """List queues: depth, oldest message age, scheduled, in flight, dead-lettered."""
    stats = obj.app.transport.queue_stats()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in stats], indent=2))
        return
    header = f"{'QUEUE':<24} {'DEPTH':>8} {'OLDEST':>8} {'SCHED':>7} {'INFLIGHT':>8} {'DEAD':>6} {'CONS':>5}"
    click.echo(header)
    for s in stats:
        consumers = "-" if s.consumers is None else str(s.consumers)
        click.echo(f"{s.name[:24]:<24} {s.depth:>8} {_age(s.oldest_age):>8} {s.scheduled:>7}"
                   f" {s.in_flight:>8} {s.dead_lettered:>6} {consumers:>5}")


@click.command()
@click.option("-Q", "--queues", "queue_names", required=True,
              help="Comma-separated queues to purge.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@user_errors
def purge(obj: CLIContext, queue_names: str, force: bool, as_json: bool) -> None:
    """Delete every waiting message of the queues (in-flight ones are left alone)."""
    names = [q.strip() for q in queue_names.split(",") if q.strip()]
    transport = obj.app.transport
    known = {s.name: s for s in transport.queue_stats()}
    missing = [n for n in names if n not in known]
    if missing:
        click.echo(f"Error: no such queue: {', '.join(missing)}", err=True)
        sys.exit(EXIT_USAGE)
    if not force:
        total = sum(known[n].depth + known[n].scheduled for n in names)
        if not sys.stdin.isatty():
            click.echo("Error: refusing to purge without a terminal to confirm; use -f", err=True)
            sys.exit(EXIT_USAGE)
        click.confirm(f"Purge {total} message(s) from {', '.join(names)}?", abort=True)
    counts: dict[str, Any] = {n: transport.purge(n) for n in names}
    if as_json:
        click.echo(json.dumps(counts))
    else:
        for n, c in counts.items():
            click.echo(f"purged {c} message(s) from {n}")


@click.command()
@click.argument("task_ids", nargs=-1)
@click.option("--name", default=None, help="Retry failed tasks of this task name.")
@click.option("--exc", "exc_type", default=None, help="Retry failures of this exception type.")
@click.option("--signature", default=None, help="Retry failures with this signature id.")
@click.option("--dry-run", is_flag=True, help="List what would be sent; send nothing.")
@click.option("--limit", type=int, default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@user_errors
def retry(obj: CLIContext, task_ids: tuple[str, ...], name: str | None, exc_type: str | None,
          signature: str | None, dry_run: bool, limit: int, as_json: bool) -> None:
    """Re-run failed tasks from their original message (same id, same args)."""
    from tqcore.retry import retry_failed
    from tqcore.text import inert

    out = retry_failed(obj.app, list(task_ids) or None, name=name, exc_type=exc_type,
                       signature=signature, dry_run=dry_run, limit=limit)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        verb = "would retry" if dry_run else "retried"
        sent = {s["task_id"] for s in out["selected"]} if dry_run else set(out["sent"])
        for s in out["selected"]:
            if s["task_id"] in sent:
                click.echo(f"{verb} {s['task_id']} {inert(s['name'])} ({inert(s['exc_type'])},"
                           f" signature {s['signature']}, queue {inert(s['queue'])})")
        for tid, why in out["errors"].items():
            click.echo(f"failed to retry {tid}: {inert(why)}")
        for tid in out["missing"]:
            click.echo(f"no failed message kept for {inert(tid)}")
        click.echo(f"{len(sent)} task(s) {verb}.")
    sys.exit(1 if out["missing"] or out["errors"] or not out["selected"] else 0)


COMMANDS = [call, result, queues, purge, retry]
