"""``TqmonApp``: the incident dashboard.

Data flow (Flower's design, with Textual messages in place of ``add_callback``):

* The *source* (``ClusterSource`` live, ``ReplaySource`` for a recording, a fake in tests) runs
  in a thread worker and calls ``post(item)``. Each item becomes a message
  (:mod:`tqmon.messages`; broker figures and link status coalesce) and is folded into the
  :class:`~tqmon.models.cluster.Cluster` **on the UI thread**, so the state has one owner and no
  lock. If the source raises, the app shows ``disconnected`` and starts it again with backoff:
  it never exits because the broker is down.
* A timer redraws the visible view at ``refresh_hz`` (3 Hz by default), inside the view's
  keyed tables, so cursors and marks stay put; ``p`` pauses redraws (events keep folding).
* Actions go through the command gate only, in a ``control`` thread worker: the app refuses
  them in read-only mode, without a gate, or while the broker is unreachable (never queued
  for later), and otherwise confirms by the gate's tier: tier 0 none, tier 1 an inline
  ``[y/N]``, tier 2 the blast-radius modal, tier 3 the modal plus typing the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.worker import get_current_worker

from tqmon.contracts import Action, ActionResult, BrokerFigures, EventBatch, LinkStatus, Source
from tqmon.messages import ActionDone, ActionFailed, EventsArrived, FiguresArrived, LinkChanged
from tqmon.models import fmt
from tqmon.models.cluster import Cluster
from tqmon.models.filtering import FilterError, compile_filter
from tqmon.models.frame import FrameInfo, frame_info, result_flash
from tqmon.models.keys import VIEW_ALIASES, VIEWS, action_spec
from tqmon.models.table import Cell
from tqmon.screens.base import ViewScreen
from tqmon.screens.events import EventsScreen
from tqmon.screens.failures import FailuresScreen
from tqmon.screens.flows import FlowsScreen
from tqmon.screens.overview import OverviewScreen
from tqmon.screens.palette import TqmonCommands
from tqmon.screens.queues import QueuesScreen
from tqmon.screens.tasks import TasksScreen
from tqmon.screens.workers import WorkersScreen

#: Actions at or above this many targets are always typed (tier 3), whatever the gate says.
TYPED_ABOVE = 1_000
#: The gate action kind → the key spec action name.
_SPEC_OF = {"retry_signature": "retry"}


class CommandGate(Protocol):
    """What the app needs from ``tqmon.gate.CommandGate``."""

    def describe(self, action: Action) -> str: ...

    def tier(self, action: Action) -> int: ...

    def run(self, action: Action, *, reason: str = "") -> ActionResult: ...


class TqmonApp(App[None]):
    """The dashboard (see the module docstring).

    Args:
        source_factory: makes the :class:`~tqmon.contracts.Source` (called in the source thread,
            again after a failure).
        gate: the command gate every action goes through (None: actions are unavailable).
        read_only: refuse every action (keys stay listed, greyed, "(RO)").
        broker_label: the broker shown in the header until the source reports one.
        clock: epoch seconds. By default the wall clock, or the source's own ``clock`` when it
            has one (a replay's recorded time); tests pass a frozen one.
        refresh_hz: view redraws per second.
    """

    CSS_PATH = "app.tcss"
    TITLE = "tqmon"
    MODES: ClassVar[dict[str, Any]] = {
        "overview": OverviewScreen, "workers": WorkersScreen, "queues": QueuesScreen,
        "tasks": TasksScreen, "failures": FailuresScreen, "flows": FlowsScreen,
        "events": EventsScreen,
    }
    DEFAULT_MODE = "overview"
    COMMANDS = App.COMMANDS | {TqmonCommands}
    BINDINGS = [
        *(Binding(str(i), f"view('{view}')", view, show=False) for i, view in
          enumerate(VIEWS, start=1)),
        Binding("ctrl+r", "force_refresh", "refresh", show=False),
    ]

    def __init__(self, source_factory: Callable[[], Source], gate: CommandGate | None = None,
                 read_only: bool = False, broker_label: str = "",
                 clock: Callable[[], float] = time.time, refresh_hz: float = 3.0) -> None:
        super().__init__()
        self._source_factory = source_factory
        self.gate = gate
        self.read_only = read_only
        self.broker_label = broker_label
        self._clock = clock
        self._follow_source_clock = clock is time.time
        self.refresh_hz = refresh_hz
        self.cluster = Cluster(self.now)
        self.paused = False
        self.flash_cells: tuple[tuple[Cell, ...], str] = ((), "")
        self.filter_history: list[str] = []
        self.command_history: list[str] = []
        #: Results of the actions run so far (newest last), for tests and ``:history``.
        self.results: list[ActionResult] = []

    # -- clock and source ----------------------------------------------------------------
    def now(self) -> float:
        """The app's clock (see ``clock``)."""
        return self._clock()

    def on_mount(self) -> None:
        self.set_interval(1.0 / self.refresh_hz, self._tick, name="refresh")
        self._run_source()

    @work(thread=True, exclusive=True, group="source", exit_on_error=False,
          description="cluster source")
    def _run_source(self) -> None:
        """Run the source until cancelled; restart it with backoff if it fails."""
        worker = get_current_worker()
        backoff = 1.0
        while not worker.is_cancelled:
            try:
                source = self._source_factory()
                clock = getattr(source, "clock", None)
                if self._follow_source_clock and callable(clock):
                    self._clock = clock  # one reference swap: atomic, read on the UI thread
                source.run(self._post_item, lambda: worker.is_cancelled)
                return  # a replay reached its end: keep showing what it left
            except Exception as exc:  # noqa: BLE001 - the source must never take the UI down
                since = self.now()
                self._post_item(LinkStatus("disconnected", self.broker_label,
                                           detail=f"source failed: {fmt.safe(exc, 120)}",
                                           retry_in=backoff, since=since))
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not worker.is_cancelled:
                    time.sleep(0.05)
                backoff = min(30.0, backoff * 2)

    def _post_item(self, item: object) -> None:
        """The source's ``post``: wrap an item into a message (thread-safe)."""
        if isinstance(item, EventBatch):
            self.post_message(EventsArrived(item))
        elif isinstance(item, BrokerFigures):
            self.post_message(FiguresArrived(item))
        elif isinstance(item, LinkStatus):
            self.post_message(LinkChanged(item))

    @on(EventsArrived)
    def _events(self, message: EventsArrived) -> None:
        self.cluster.fold(message.batch)

    @on(FiguresArrived)
    def _figures(self, message: FiguresArrived) -> None:
        self.cluster.set_figures(message.figures)

    @on(LinkChanged)
    def _link(self, message: LinkChanged) -> None:
        self.cluster.set_link(message.status)
        view = self.top_view()
        if view is not None:
            view.refresh_frame()

    # -- redraw --------------------------------------------------------------------------
    def top_view(self) -> ViewScreen | None:
        """The topmost view screen (under any modal)."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ViewScreen):
                return screen
        return None

    def _tick(self) -> None:
        view = self.top_view()
        if view is None:
            return
        if not self.paused:
            view.refresh_view()
        view.refresh_frame()

    def action_force_refresh(self) -> None:
        """Redraw now (``ctrl+r``), even while paused."""
        view = self.top_view()
        if view is not None:
            view.refresh_view()
            view.refresh_frame()

    def frame_info(self) -> FrameInfo:
        """The header line for the views."""
        return frame_info(self.cluster, read_only=self.read_only, paused=self.paused,
                          broker=self.broker_label)

    def flash(self, cells: Sequence[Cell], tone: str = "") -> None:
        """Show ``cells`` on the flash line (kept across view switches)."""
        self.flash_cells = (tuple(cells), tone)
        view = self.top_view()
        if view is not None:
            view.refresh_frame()

    def flash_text(self, text: str, tone: str = "") -> None:
        """Flash one message (``text`` must already be inert)."""
        self.flash((Cell(text, tone),), tone)

    # -- navigation ----------------------------------------------------------------------
    def action_view(self, view: str) -> None:
        """Switch to a main view (``1``-``7``); not while a dialog is open (a stray digit must
        not leave a confirmation behind in another view)."""
        if isinstance(self.screen, ViewScreen):
            self.switch_mode(view)

    def open_view(self, view: str, filter_text: str = "") -> None:
        """Switch to ``view`` (at its base screen) with ``filter_text`` applied."""
        self.switch_mode(view)
        while len(self.screen_stack) > 1:
            self.pop_screen()
        base = self.screen_stack[0]
        if isinstance(base, ViewScreen) and base.FILTERABLE:
            base.set_filter(filter_text)

    def action_pause(self) -> None:
        """Pause or resume redraws (``p``)."""
        self.paused = not self.paused
        self.flash_text("paused: events are still folded; p resumes" if self.paused else
                        "resumed", "warn" if self.paused else "")
        if not self.paused:
            self.action_force_refresh()

    def action_read_only(self) -> None:
        """Switch to read-only for the rest of the session (one way: ``:ro``)."""
        self.read_only = True
        set_read_only = getattr(self.gate, "set_read_only", None)
        if callable(set_read_only):
            set_read_only()  # the gate enforces it too (one way, like ours)
        self.flash_text("read-only for this session (restart to act again)", "warn")

    def command_words(self) -> list[str]:
        """Completions for the ``:`` prompt."""
        return [*VIEWS, *sorted(set(VIEW_ALIASES) - set(VIEWS)), "q", "quit", "ro", "help",
                "pause"]

    def run_command(self, text: str) -> str | None:
        """Run a ``:`` command; returns an error message (shown inline) or None."""
        words = text.strip().split(maxsplit=1)
        if not words:
            return None
        head, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
        if head in ("q", "q!", "quit", "exit"):
            self.exit()
        elif head == "ro":
            self.action_read_only()
        elif head == "pause":
            self.action_pause()
        elif head == "help":
            self.call_later(self._help)
        elif head in VIEW_ALIASES:
            error = compile_filter(rest)
            if isinstance(error, FilterError):
                return f"invalid filter: {error.message}"
            self.call_later(self.open_view, VIEW_ALIASES[head], rest)
        else:
            return f"unknown command {fmt.safe(head, 40)!s} (try :tasks, :workers, :q, :ro)"
        return None

    def _help(self) -> None:
        view = self.top_view()
        if view is not None:
            view.action_help()

    def run_view_action(self, action: str) -> None:
        """Run a writing action on the top view, as its key would (the command palette)."""
        view = self.top_view()
        method = getattr(view, f"action_{action}", None)
        if view is None or method is None:
            spec = action_spec(action)
            self.flash_text(f"{spec.label if spec else action}: not available in this view "
                            f"(see ? for its keys)", "warn")
            return
        method()

    # -- actions -------------------------------------------------------------------------
    def refusal(self, kind: str) -> str | None:
        """Why ``kind`` cannot run now (None: it can)."""
        spec = action_spec(_SPEC_OF.get(kind, kind))
        label = spec.label if spec is not None else kind
        if self.read_only:
            return f"read-only: {label} disabled"
        if self.gate is None:
            return f"{label} unavailable: no command gate (replay or viewer mode)"
        if self.cluster.stale:
            return f"broker unreachable: {label} disabled until reconnected (nothing queued)"
        return None

    def check_allowed(self, kind: str) -> bool:
        """True when ``kind`` may run now; else flash why and return False."""
        reason = self.refusal(kind)
        if reason is not None:
            self.flash_text(reason, "warn")
            record = getattr(self.gate, "record_refusal", None)
            if callable(record):  # audited off the UI thread (a file append)
                self.run_worker(lambda: record(kind, reason), thread=True, group="audit",
                                exit_on_error=False)
            return False
        return True

    def request_action(self, action: Action, labels: Sequence[str] = (), *,
                       count: int | None = None, typed: str | None = None,
                       noun: str = "target", title: str | None = None) -> None:
        """Confirm ``action`` by its tier, then send it through the gate.

        Args:
            action: the action, with its targets frozen.
            labels: inert labels of (up to five) targets for the blast-radius sample.
            count: how many things it affects (default: the number of targets).
            typed: what tier 3 asks the user to type (default: the count).
            noun: what a target is called in the modal title.
            title: the modal's title (default: ``Verb N nouns?``).
        """
        if not self.check_allowed(action.kind):
            return
        gate = self.gate
        assert gate is not None
        try:
            tier = int(gate.tier(action))
            command = fmt.safe(gate.describe(action), 300)
        except Exception as exc:  # noqa: BLE001 - a gate bug must not crash the UI
            self.flash_text(f"{action.kind}: cannot prepare: {fmt.safe(exc, 120)}", "err")
            return
        n = len(action.targets) if count is None else count
        if n >= TYPED_ABOVE:
            tier = max(tier, 3)
        spec = action_spec(_SPEC_OF.get(action.kind, action.kind))
        verb = (spec.label if spec is not None else action.kind).capitalize()
        if tier <= 0:
            self._dispatch(action)
        elif tier == 1:
            from tqmon.screens.inline_confirm import InlineConfirm

            target = labels[0] if len(labels) == 1 else f"{n:,} {noun}s"
            self.push_screen(InlineConfirm(f"{verb} {target} → {command}?"),
                             lambda yes: self._dispatch(action) if yes else self._declined(action))
        else:
            from tqmon.screens.confirm import ConfirmRequest, ConfirmScreen

            request = ConfirmRequest(
                title=title or f"{verb} {n:,} {noun}{'s' if n != 1 else ''}?",
                verb=f"{verb} {n:,}",
                count=n, sample=tuple(labels[:5]), command=command, scope=self._scope(action),
                frozen_at=fmt.clock_time(self.now()),
                typed=(typed or str(n)) if tier >= 3 else None,
                more=max(0, n - len(labels[:5])) if noun != "message" else 0)
            self.push_screen(ConfirmScreen(request), lambda reason: self._dispatch(action, reason)
                             if reason is not None else self._declined(action))

    def _scope(self, action: Action) -> str:
        """Who receives ``action``: the broker, named workers, or every worker."""
        if action.kind == "purge":
            return "the broker (ready and scheduled messages of this queue)"
        if action.kind in ("retry", "retry_signature"):
            return "the broker (each task's stored original message is re-published)"
        workers = action.destination
        if not workers:
            workers_of = getattr(self.gate, "workers_of", None)
            workers = workers_of(action) if callable(workers_of) else None
        if workers:
            shown = ", ".join(fmt.safe(d, 40) for d in workers[:5])
            return f"to {shown}" + (f" +{len(workers) - 5} more" if len(workers) > 5 else "")
        return f"broadcast to every worker ({len(self.cluster.online_workers())} online now)"

    def _declined(self, action: Action) -> None:
        self.flash_text(f"{action.kind}: cancelled, nothing sent", "dim")

    def _dispatch(self, action: Action, reason: str = "") -> None:
        if not self.check_allowed(action.kind):  # the link may have dropped meanwhile
            return
        self.flash_text(f"{action.kind}: sending…", "dim")
        self._run_action(action, reason)

    @work(thread=True, group="control", exit_on_error=False, description="control action")
    def _run_action(self, action: Action, reason: str = "") -> None:
        """Run ``action`` through the gate (blocking I/O: off the UI thread); the operator's
        reason goes to the gate's audit line."""
        gate = self.gate
        if gate is None:
            return
        try:
            result = gate.run(action, reason=reason) if reason else gate.run(action)
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the UI
            self.post_message(ActionFailed(action, fmt.safe(exc, 200)))
            return
        self.post_message(ActionDone(result))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self.results.append(message.result)
        cells, tone = result_flash(message.result)
        self.flash(cells, tone)

    @on(ActionFailed)
    def _action_failed(self, message: ActionFailed) -> None:
        self.flash_text(f"{message.action.kind}: failed, outcome unknown: {message.error}",
                        "err")


__all__ = ["CommandGate", "TqmonApp"]
