"""Runbook commands: ``inspect``, ``control``, ``status``, ``events``.

Exit codes: 0 every expected worker replied; 1 some did not (they are listed as
"no reply", never as success) or replied with an error; 2 usage error. The expected workers are the
``--destination`` ones, else every live worker in the broker's registry.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from tqcore.cli.main import CLIContext, user_errors
from tqcore.text import inert

INSPECT_COMMANDS = ("ping", "active", "reserved", "scheduled", "registered", "stats", "revoked",
                    "active_queues", "query_task", "conf", "clock")


def _destinations(value: str | None) -> list[str] | None:
    return [d.strip() for d in value.split(",") if d.strip()] if value else None


def report(replies: list[dict[str, Any]], expected: Sequence[str], as_json: bool) -> int:
    """Print per-worker replies and the workers that did not answer; returns the exit code."""
    merged: dict[str, Any] = {}
    for reply in replies:
        merged.update(reply)
    missing = [node for node in expected if node not in merged]
    if as_json:
        click.echo(json.dumps({"replies": merged, "no_reply": missing}, indent=2, default=str))
    else:
        for node, value in sorted(merged.items()):
            bad = isinstance(value, dict) and "error" in value
            click.echo(f"-> {inert(node)}: {'ERROR' if bad else 'OK'}")
            text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
            for line in text.splitlines():
                click.echo(f"    {inert(line)}")
        for node in missing:
            click.echo(f"-> {inert(node)}: no reply")
        if not merged and not missing:
            click.echo("Error: no workers replied and none are registered", err=True)
    errors = [n for n, v in merged.items() if isinstance(v, dict) and "error" in v]
    if missing or errors or not merged:
        return 1
    return 0


_timeout_opt = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                            help="Seconds to wait for replies.")
_dest_opt = click.option("-d", "--destination", default=None,
                         help="Comma-separated worker names (default: all).")
_json_opt = click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON.")


@click.command()
@click.argument("command", type=click.Choice(INSPECT_COMMANDS))
@click.argument("args", nargs=-1)
@_timeout_opt
@_dest_opt
@_json_opt
@click.pass_obj
@user_errors
def inspect(obj: CLIContext, command: str, args: tuple[str, ...], timeout: float,
            destination: str | None, as_json: bool) -> None:
    """Ask workers: ping, active, reserved, scheduled, registered, stats, revoked,
    active_queues, query_task ID..., conf, clock."""
    control = obj.app.control
    dest = _destinations(destination)
    arguments: dict[str, Any] = {"ids": list(args)} if command == "query_task" else {}
    expected = control.expected_nodes(dest)
    replies = control.broadcast(command, arguments, destination=dest, reply=True,
                                timeout=timeout, limit=len(expected) or None)
    sys.exit(report(replies, expected, as_json))


def _control_arguments(command: str, args: tuple[str, ...], terminate: bool,
                       signal: str) -> dict[str, Any]:
    """Celery's argument names for each control command, from positional CLI args."""
    def need(n: int, usage: str) -> None:
        if len(args) < n:
            raise click.UsageError(f"usage: tqcore control {command} {usage}")

    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise click.UsageError(f"not a number: {value!r}") from None

    if command == "revoke":
        need(1, "TASK_ID... [--terminate] [--signal SIG]")
        return {"task_id": list(args), "terminate": terminate, "signal": signal}
    if command == "rate_limit":
        need(2, "TASK_NAME RATE (e.g. 10/s, 100/m, 0 to remove)")
        return {"task_name": args[0], "rate_limit": None if args[1] in ("0", "") else args[1]}
    if command == "time_limit":
        need(2, "TASK_NAME SOFT [HARD]")
        return {"task_name": args[0], "soft": number(args[1]),
                "hard": number(args[2]) if len(args) > 2 else None}
    if command in ("pool_grow", "pool_shrink"):
        return {"n": int(number(args[0])) if args else 1}
    if command == "autoscale":
        need(2, "MAX MIN")
        return {"max": int(number(args[0])), "min": int(number(args[1]))}
    if command in ("add_consumer", "cancel_consumer"):
        need(1, "QUEUE")
        return {"queue": args[0]}
    return {}


CONTROL_COMMANDS = ("revoke", "rate_limit", "time_limit", "pool_grow", "pool_shrink", "autoscale",
                    "add_consumer", "cancel_consumer", "shutdown", "enable_events",
                    "disable_events", "heartbeat")


@click.command()
@click.argument("command", type=click.Choice(CONTROL_COMMANDS))
@click.argument("args", nargs=-1)
@click.option("--terminate", is_flag=True, help="revoke: also stop the running task.")
@click.option("--signal", default="SIGTERM", show_default=True, help="revoke: signal to use.")
@_timeout_opt
@_dest_opt
@_json_opt
@click.pass_obj
@user_errors
def control(obj: CLIContext, command: str, args: tuple[str, ...], terminate: bool, signal: str,
            timeout: float, destination: str | None, as_json: bool) -> None:
    """Change workers: revoke, rate_limit, time_limit, pool_grow, pool_shrink, autoscale,
    add_consumer, cancel_consumer, shutdown, enable_events, disable_events, heartbeat."""
    app = obj.app
    dest = _destinations(destination)
    arguments = _control_arguments(command, args, terminate, signal)
    if command == "revoke":
        app.backend.add_revoked(arguments["task_id"])  # persisted: later workers honour it
    expected = app.control.expected_nodes(dest)
    replies = app.control.broadcast(command, arguments, destination=dest, reply=True,
                                    timeout=timeout, limit=len(expected) or None)
    sys.exit(report(replies, expected, as_json))


@click.command()
@_timeout_opt
@_json_opt
@click.pass_obj
@user_errors
def status(obj: CLIContext, timeout: float, as_json: bool) -> None:
    """Ping every registered worker and list who is online."""
    app = obj.app
    expected = app.control.expected_nodes()
    replies = app.control.broadcast("ping", destination=None, reply=True, timeout=timeout,
                                    limit=len(expected) or None)
    online = sorted({node for reply in replies for node in reply})
    missing = [n for n in expected if n not in online]
    if as_json:
        click.echo(json.dumps({"online": online, "no_reply": missing}))
    else:
        for node in online:
            click.echo(f"{inert(node)}: OK")
        for node in missing:
            click.echo(f"{inert(node)}: no reply")
        click.echo(f"\n{len(online)} node{'s' if len(online) != 1 else ''} online.")
    sys.exit(0 if online and not missing else 1)


_REPRS = frozenset({"args", "kwargs", "result", "exception"})
_REORDER_WINDOW = 0.5  # seconds events wait so late ones from other senders sort in


def _dump_line(ev: dict[str, Any]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ev.get("timestamp") or 0)))
    skip = {"hostname", "timestamp", "type", "utcoffset", "pid", "clock", "local_received"}
    # args/kwargs/result/exception already arrive as reprs: print strings as they are
    # (inert() below makes any escape visible), everything else as its repr
    fields = ", ".join(f"{k}={v}" if isinstance(v, str) and k in _REPRS else f"{k}={v!r}"
                       for k, v in ev.items() if k not in skip)
    return inert(f"{ev.get('hostname')} [{stamp}] {ev.get('type')}: {fields}", max_len=2000)


@click.command()
@click.option("--dump", "mode", flag_value="dump", default=True, help="Text lines (default).")
@click.option("--json", "mode", flag_value="json", help="One JSON object per event.")
@click.option("--replay", type=float, default=None,
              help="First replay this many seconds of history (where the broker keeps it).")
@click.option("-n", "--count", type=int, default=None, help="Stop after this many events.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.pass_obj
@user_errors
def events(obj: CLIContext, mode: str, replay: float | None, count: int | None,
           duration: float | None) -> None:
    """Tail the cluster's events (task and worker lifecycle)."""
    from tqcore import codec
    from tqcore.exceptions import DecodeError

    transport = obj.app.transport
    sub = transport.subscribe_events(replay=replay)
    deadline = None if duration is None else time.monotonic() + duration
    # Senders batch and publish independently (a worker buffers task events, a task's
    # own sends go out at once), so events are held briefly and printed in timestamp
    # order: each task's lifecycle reads in order.
    pending: list[tuple[float, int, float, dict[str, Any]]] = []
    seq = 0
    seen = 0

    def release(until: float | None) -> bool:
        nonlocal seen
        pending.sort(key=lambda item: (item[0], item[1]))
        while pending and (until is None or pending[0][2] <= until):
            ev = pending.pop(0)[3]
            click.echo(json.dumps(ev, default=str) if mode == "json" else _dump_line(ev))
            seen += 1
            if count is not None and seen >= count:
                return True
        sys.stdout.flush()
        return False

    try:
        while deadline is None or time.monotonic() < deadline:
            for raw in sub.get(0.2):
                try:
                    body = codec.loads(raw)
                except DecodeError:
                    continue
                for ev in body if isinstance(body, list) else [body]:
                    if isinstance(ev, dict):
                        seq += 1
                        stamp = ev.get("timestamp")
                        order = float(stamp) if isinstance(stamp, int | float) else 0.0
                        pending.append((order, seq, time.monotonic(), ev))
            if release(time.monotonic() - _REORDER_WINDOW):
                return
        release(None)
    except KeyboardInterrupt:
        release(None)
    finally:
        sub.close()


COMMANDS = [inspect, control, status, events]
