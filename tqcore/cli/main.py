"""The ``tqcore`` command: ``tqcore [-A app] [-b broker] COMMAND``.

User errors (a bad URL, an unknown app or task, bad JSON) print one line on stderr
and exit with status 2; no traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from tqcore.exceptions import TqError

EXIT_USAGE = 2


class CLIContext:
    """Options shared by every subcommand, and the app they resolve to."""

    def __init__(self, app_spec: str | None, broker: str | None, backend: str | None) -> None:
        self.app_spec = app_spec
        self.broker = broker
        self.backend = backend
        self._app: Any = None

    @property
    def app(self) -> Any:
        """The app from ``-A`` (or a bare one for the configured broker)."""
        if self._app is None:
            from tqcore.app import App

            app = find_app(self.app_spec) if self.app_spec else App("tqcore-cli",
                                                                      set_as_current=False)
            if self.broker:
                app.conf.broker_url = self.broker
            if self.backend:
                app.conf.result_backend = self.backend
            self._app = app
        return self._app


def find_app(spec: str) -> Any:
    """Import ``pkg.module:attr`` or ``pkg.module`` (then its ``app``, or any App in it).

    Raises:
        click.UsageError: the module cannot be imported or holds no app.
    """
    from tqcore.app import App

    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"cannot import app module {module_name!r}: {exc}") from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise click.UsageError(f"{spec!r} is not a tqcore App")
        return app
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, App):
            return candidate
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    raise click.UsageError(f"module {module_name!r} has no App named 'app' (use -A module:attr)")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tqcore errors into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TqError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def parse_json(value: str | None, what: str, kind: type) -> Any:
    """Decode a ``-a``/``-k`` option; one-line usage error when it is not ``kind``."""
    if value is None:
        return kind()
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None
    if not isinstance(data, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__ if kind is dict else 'array'}",
                                 param_hint=what)
    return data


@click.group("tqcore", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]", envvar="TQ_APP",
              help="The app: a module (its `app`) or module:attribute.")
@click.option("-b", "--broker", envvar="TQ_BROKER_URL", help="Broker URL (overrides the app's).")
@click.option("--result-backend", "backend", envvar="TQ_RESULT_BACKEND",
              help="Result backend URL (overrides the app's).")
@click.version_option(package_name="tqcore")
@click.pass_context
def cli(ctx: click.Context, app_spec: str | None, broker: str | None,
         backend: str | None) -> None:
    """tqcore: a task queue with Celery's API. The embedded SQLite broker needs no server."""
    ctx.obj = CLIContext(app_spec, broker, backend)


def _register() -> None:
    from tqcore.cli import admin, beat_cmd, remote, worker_cmd

    cli.add_command(worker_cmd.worker)
    cli.add_command(beat_cmd.beat)
    for cmd in admin.COMMANDS + remote.COMMANDS:
        cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tqcore`` and ``python -m tqcore``: usage errors are one line."""
    try:
        cli.main(args=argv, prog_name="tqcore", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except TqError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
