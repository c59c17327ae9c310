"""Pilot tests of the tqmon UI, driven by keys against a replayed recording (no broker).

Every view, drill-down and back, the ``:`` and ``/`` prompts (an invalid query shown inline),
pause, help, every action kind through a fake gate (tiers: inline y/N, blast-radius modal,
typed), read-only mode (nothing sent), a disconnected link (figures dimmed, workers unknown),
hostile strings rendered as inert text, keyed updates that keep the cursor, and the virtual
task table at 100k rows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Static

from tests.tqmon.tui_helpers import (
    SIZE,
    SYNTHETIC,
    FakeGate,
    batch,
    link,
    make_app,
    press_keys,
    settle,
)
from tqmon.app import TqmonApp
from tqmon.models.keys import ACTIONS, VIEWS
from tqmon.screens.confirm import ConfirmScreen
from tqmon.screens.flow_detail import FlowDetailScreen
from tqmon.screens.help import HelpScreen
from tqmon.screens.inline_confirm import InlineConfirm
from tqmon.screens.palette import TqmonCommands
from tqmon.screens.prompt import PromptScreen
from tqmon.screens.task_detail import TaskDetailScreen
from tqmon.screens.tasks import TasksScreen
from tqmon.screens.worker_detail import WorkerDetailScreen
from tqmon.widgets.crumbs import Crumbs
from tqmon.widgets.flash import FlashLine
from tqmon.widgets.header import FrameHeader
from tqmon.widgets.keybar import KeyBar
from tqmon.widgets.vtable import VirtualTable

Scenario = Callable[[Pilot[Any], TqmonApp], Awaitable[None]]


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def run(scenario: Scenario, app: TqmonApp | None = None) -> TqmonApp:
    """Run ``scenario`` against ``app`` (the recording by default) at 160x48."""
    app = app if app is not None else make_app()

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot, app)
            await scenario(pilot, app)

    asyncio.run(main())
    return app


def table(app: TqmonApp) -> VirtualTable:
    return app.screen.query_one(VirtualTable)


def text_of(app: TqmonApp, widget_type: type[Static]) -> str:
    view = app.top_view()
    assert view is not None
    return str(view.query_one(widget_type).render())


def screen_text(app: TqmonApp) -> str:
    """What the top screen shows, as plain text lines."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def cells(app: TqmonApp, key: str) -> list[str]:
    view = app.top_view()
    row = view.row(key) if view is not None and hasattr(view, "row") else None
    assert row is not None
    return [c.text for c in row.cells]


async def press(pilot: Pilot[Any], *keys: str) -> None:
    app = pilot.app
    assert isinstance(app, TqmonApp)
    await press_keys(pilot, app, *keys)


# -- views and navigation ---------------------------------------------------------------------
def test_every_view_shows_the_recording() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        assert app.current_mode == "overview"
        assert "online" in str(app.screen.query_one("#tile-workers").render())
        for number, view in enumerate(VIEWS[1:], start=2):
            await press(pilot, str(number))
            assert app.current_mode == view
            assert table(app).row_count > 0, view
            assert view.title() in text_of(app, Crumbs) or view == "events"
        await press(pilot, "1")
        assert app.current_mode == "overview"
        await press(pilot, "enter")  # the focused tile (workers) opens its view
        assert app.current_mode == "workers"

    run(scenario)


def test_sort_column_and_direction() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "3")
        assert "sorted by READY ▼" in text_of(app, Crumbs)
        depths = [app.cluster.queue_figures()[k].depth for k in table(app).keys]
        assert depths == sorted(depths, reverse=True)
        await press(pilot, "less_than_sign")
        assert "sorted by QUEUE ▼" in text_of(app, Crumbs)
        await press(pilot, "I")
        assert "sorted by QUEUE ▲" in text_of(app, Crumbs)
        assert list(table(app).keys) == sorted(table(app).keys, key=str.lower)

    run(scenario)


def test_digits_do_not_switch_views_under_a_dialog() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4", "question_mark", "2")
        assert isinstance(app.screen, HelpScreen) and app.current_mode == "tasks"

    run(scenario)


def test_command_mode_aliases_and_quit() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "colon", *"wk", "enter")
        assert app.current_mode == "workers"
        await press(pilot, "colon", *"tasks state:FAILURE", "enter")
        assert app.current_mode == "tasks"
        tasks = app.cluster.state.tasks
        keys = table(app).keys
        assert keys and all(tasks[k].state == "FAILURE" for k in keys)
        await press(pilot, "colon", *"bogus", "enter")
        assert isinstance(app.screen, PromptScreen)
        assert "unknown command" in str(app.screen.query_one("#prompt-error", Static).render())
        await press(pilot, "escape")
        await press(pilot, "colon", "q", "enter")
        assert app.return_code == 0 or not app.is_running

    run(scenario)


def test_drill_down_and_back_from_every_table() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4", "slash", *"state:FAILURE", "enter", "enter")
        assert isinstance(app.screen, TaskDetailScreen)
        assert "Tasks ›" in text_of(app, Crumbs)
        await press(pilot, "w")
        assert isinstance(app.screen, WorkerDetailScreen)
        assert "Tasks ›" in text_of(app, Crumbs) and "›" in text_of(app, Crumbs)[8:]
        await press(pilot, "escape", "escape")
        assert type(app.screen) is TasksScreen and app.screen.filter_text
        await press(pilot, "escape")
        assert not app.screen.filter_text
        await press(pilot, "2", "enter")
        assert isinstance(app.screen, WorkerDetailScreen)
        assert table(app).row_count > 0
        await press(pilot, "escape", "3", "enter")
        queue = app.screen
        assert isinstance(queue, TasksScreen) and queue.only is not None
        name = queue.only[1]
        assert table(app).keys and all(app.cluster.state.tasks[k].queue == name
                                       for k in table(app).keys)
        await press(pilot, "escape", "5", "enter")
        sig_view = app.screen
        assert isinstance(sig_view, TasksScreen) and sig_view.only is not None
        sig = sig_view.only[1]
        assert table(app).keys
        assert all(app.cluster.state.tasks[k].signature == sig for k in table(app).keys)
        await press(pilot, "escape", "6", "enter")
        assert isinstance(app.screen, FlowDetailScreen)
        await press(pilot, "enter")  # a group expands, a task opens
        assert isinstance(app.screen, FlowDetailScreen | TaskDetailScreen)
        await press(pilot, "escape", "escape")
        assert app.current_mode == "flows" and len(app.screen_stack) == 1
        await press(pilot, "7", "enter")
        assert isinstance(app.screen, TaskDetailScreen | WorkerDetailScreen)

    run(scenario)


def test_flow_graph_and_tree_toggle() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "6", "enter")
        flow = app.screen
        assert isinstance(flow, FlowDetailScreen) and flow.drawing is not None
        assert flow.drawing.mode == "graph"
        await press(pilot, "t")
        assert flow.drawing.mode == "tree"
        assert flow.drawing.text().splitlines()[0].split()[0] in "✓✗⟳▶…⊘"

    run(scenario)


def test_cursor_and_marks_survive_refreshes() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4", "j", "j", "j", "space")
        t = table(app)
        cursor, marked = t.cursor_key, set(t.marked)
        assert cursor is not None and len(marked) == 1
        now = app.now()
        new = [{"type": "task-sent", "uuid": f"new-{i}", "name": "x.new", "queue": "celery",
                "timestamp": now + 1, "hostname": "p"} for i in range(5)]
        app._post_item(batch(new, now))
        await pilot.pause()
        app.action_force_refresh()
        await pilot.pause()
        assert t.keys[0].startswith("new-")  # newest first: rows were inserted above
        assert t.cursor_key == cursor and t.marked == marked

    run(scenario)


# -- filter, pause, help ----------------------------------------------------------------------
def test_filter_valid_invalid_and_cleared() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4")
        total = table(app).row_count
        await press(pilot, "slash", *"age>>5m")
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        error = prompt.query_one("#prompt-error", Static)
        assert error.display and "invalid filter" in str(error.render())
        assert "^" in str(error.render())
        await press(pilot, "enter")  # still invalid: stays open, nothing applied
        assert app.screen is prompt
        await press(pilot, "escape")
        assert table(app).row_count == total
        await press(pilot, "slash", *"state:FAILURE", "enter")
        keys = table(app).keys
        assert 0 < len(keys) < total
        assert all(app.cluster.state.tasks[k].state == "FAILURE" for k in keys)
        assert "matching" in text_of(app, Crumbs)
        await press(pilot, "escape")  # esc clears the filter first
        assert table(app).row_count == total and isinstance(app.screen, TasksScreen)

    run(scenario)


def test_pause_freezes_the_view_not_the_fold() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4")
        before = table(app).row_count
        await press(pilot, "p")
        assert app.paused and "paused" in text_of(app, FrameHeader)
        now = app.now()
        app._post_item(batch([{"type": "task-sent", "uuid": "late-1", "name": "x",
                               "timestamp": now, "hostname": "p"}], now))
        await pilot.pause(0.5)
        assert "late-1" in app.cluster.state.tasks  # folded
        assert table(app).row_count == before  # not drawn
        await press(pilot, "p")
        assert not app.paused and table(app).row_count == before + 1

    run(scenario)


def test_help_lists_the_views_keys() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "4", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = screen_text(app)
        assert "revoke" in keys and "terminate" in keys and "(RO" not in keys
        await press(pilot, "escape")
        assert isinstance(app.screen, TasksScreen)

    run(scenario)


def test_palette_lists_every_action_and_view() -> None:
    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        provider = TqmonCommands(app.screen)
        labels = " ".join(text for text, _, _ in provider._entries())
        for spec in ACTIONS:
            assert spec.description in labels
        for view in VIEWS:
            assert view.title() in labels

    run(scenario)


# -- actions through the gate -----------------------------------------------------------------
def gated(**kwargs: Any) -> tuple[TqmonApp, FakeGate]:
    gate = FakeGate()
    return make_app(gate=gate, **kwargs), gate


async def failed_tasks(pilot: Pilot[Any]) -> None:
    await press(pilot, "4", "slash", *"state:FAILURE", "enter")


def test_single_revoke_confirms_inline_and_no_declines() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await failed_tasks(pilot)
        target = table(app).cursor_key
        await press(pilot, "x")
        assert isinstance(app.screen, InlineConfirm)
        await press(pilot, "n")
        assert not gate.calls and "nothing sent" in text_of(app, FlashLine)
        await press(pilot, "x", "y")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [(a.kind, a.targets) for a in gate.calls] == [("revoke", (target,))]
        flash = text_of(app, FlashLine)
        assert "demo1@vm: done" in flash and "demo2@vm: no reply" in flash

    run(scenario, app)


def test_bulk_revoke_modal_starts_on_cancel() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await failed_tasks(pilot)
        await press(pilot, "space", "space")
        marked = tuple(table(app).marked_keys())
        await press(pilot, "x")
        modal = app.screen
        assert isinstance(modal, ConfirmScreen)
        assert modal.focused is not None and modal.focused.id == "cancel"
        assert modal.request.count == 2 and len(modal.request.sample) == 2
        assert modal.request.command.startswith("tqcore control revoke")
        await press(pilot, "enter")  # enter on Cancel
        assert not gate.calls
        await press(pilot, "x", "tab", "enter")
        await app.workers.wait_for_complete()
        assert [(a.kind, a.targets) for a in gate.calls] == [("revoke", marked)]

    run(scenario, app)


def test_terminate_offers_signals() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await failed_tasks(pilot)
        await press(pilot, "X", "down", "down", "down", "down", "enter")  # SIGKILL, the last
        assert isinstance(app.screen, ConfirmScreen)
        await press(pilot, "tab", "enter")
        await app.workers.wait_for_complete()
        assert gate.calls[0].kind == "terminate" and gate.calls[0].params == {"signal": "SIGKILL"}

    run(scenario, app)


def test_retry_one_task_and_a_whole_signature() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await failed_tasks(pilot)
        target = table(app).cursor_key
        await press(pilot, "R", "y")
        await press(pilot, "5")
        sig = table(app).cursor_key
        await press(pilot, "R")
        modal = app.screen
        assert isinstance(modal, ConfirmScreen)
        assert modal.request.count == app.cluster.state.signatures[sig].count
        await press(pilot, "tab", "enter")
        await app.workers.wait_for_complete()
        assert [(a.kind, a.targets) for a in gate.calls] == [("retry", (target,)),
                                                             ("retry_signature", (sig,))]

    run(scenario, app)


def test_rate_limit_asks_for_a_rate() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await failed_tasks(pilot)
        name = app.cluster.state.tasks[table(app).cursor_key].name
        await press(pilot, "L", *"fast", "enter")  # invalid: stays open
        assert not isinstance(app.screen, InlineConfirm)
        await press(pilot, *["backspace"] * 4, *"10/m", "enter", "y")
        await app.workers.wait_for_complete()
        assert [(a.kind, a.targets, a.params) for a in gate.calls] == [
            ("rate_limit", (name,), {"rate": "10/m"})]

    run(scenario, app)


def test_pool_and_shutdown_target_the_worker() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "2")
        host = table(app).cursor_key
        await press(pilot, "plus", "y", "minus", "y", "S")
        assert isinstance(app.screen, ConfirmScreen) and host in app.screen.request.scope
        await press(pilot, "tab", "enter")
        await app.workers.wait_for_complete()
        assert [(a.kind, a.targets, a.destination) for a in gate.calls] == [
            ("pool_grow", (host,), (host,)), ("pool_shrink", (host,), (host,)),
            ("shutdown", (host,), (host,))]

    run(scenario, app)


def test_purge_needs_the_queue_name_typed() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "3")
        queue = table(app).cursor_key
        await press(pilot, "P")
        modal = app.screen
        assert isinstance(modal, ConfirmScreen) and modal.request.typed == queue
        button = modal.query_one("#confirm", Button)
        assert button.disabled
        modal.query_one("#confirm-typed").focus()
        await press(pilot, *"wrong")
        assert button.disabled
        await press(pilot, *["backspace"] * 5, *queue)
        assert button.disabled  # tier 3 also needs a reason
        modal.query_one("#confirm-reason").focus()
        await press(pilot, *"bad deploy")
        assert not button.disabled
        await press(pilot, "enter")
        await app.workers.wait_for_complete()
        assert [(a.kind, a.targets) for a in gate.calls] == [("purge", (queue,))]
        assert gate.reasons == ["bad deploy"]

    run(scenario, app)


# -- read-only, disconnected --------------------------------------------------------------------
#: Where each writing action can be tried: (view key, key, extra keys).
_WHERE = {"revoke": "4", "terminate": "4", "retry": "4", "rate_limit": "4", "pool_grow": "2",
          "pool_shrink": "2", "shutdown": "2", "purge": "3"}
_KEYS = {"pool_grow": "plus", "pool_shrink": "minus"}


def test_read_only_refuses_every_action_and_sends_nothing() -> None:
    assert set(_WHERE) == {spec.action for spec in ACTIONS}
    app, gate = gated(read_only=True)

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        assert "RO" in text_of(app, FrameHeader)
        for spec in ACTIONS:
            await press(pilot, _WHERE[spec.action])
            assert f"{spec.label} (RO)" in text_of(app, KeyBar)
            await press(pilot, _KEYS.get(spec.action, spec.key))
            assert app.top_view() is app.screen, spec.action  # no confirm, no menu
            assert "read-only" in text_of(app, FlashLine), spec.action
            app.run_view_action(spec.action)  # the palette's path
            await pilot.pause()
            assert app.top_view() is app.screen
        await press(pilot, "5", "R")
        assert "read-only" in text_of(app, FlashLine)
        assert gate.calls == [] and gate.described == []

    run(scenario, app)


def test_read_only_switch_is_one_way() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        await press(pilot, "colon", *"ro", "enter")
        assert app.read_only and gate.read_only
        await failed_tasks(pilot)
        await press(pilot, "x")
        assert not gate.calls and "read-only" in text_of(app, FlashLine)

    run(scenario, app)


def test_disconnected_dims_figures_and_marks_workers_unknown() -> None:
    app, gate = gated()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        now = app.now()
        app._post_item(link("disconnected", detail="connection refused", retry_in=8.0,
                            since=now - 42))
        await pilot.pause()
        await press(pilot, "2")
        header = text_of(app, FrameHeader)
        assert "disconnected 42s" in header and "retry in 8.0s" in header
        assert app.screen.has_class("stale")
        rows = [app.screen.row(k) for k in table(app).keys]
        assert rows and all(r is not None and r.tone == "stale" for r in rows)
        states = {r.cells[1].text for r in rows if r is not None}
        assert all("unknown" in s for s in states), states
        await press(pilot, "3")
        rows = [app.screen.row(k) for k in table(app).keys]
        assert all(r is not None and r.tone == "stale" and "·" in r.cells[1].text for r in rows)
        await press(pilot, "4", "x")
        assert "broker unreachable" in text_of(app, FlashLine) and not gate.calls
        app._post_item(link("live"))
        await pilot.pause()
        await press(pilot, "2")
        app.action_force_refresh()
        assert not app.screen.has_class("stale")
        assert all(app.screen.row(k).tone == "" for k in table(app).keys)

    run(scenario, app)


def test_a_failing_source_never_exits_the_app() -> None:
    attempts: list[int] = []

    def factory() -> Any:
        attempts.append(1)
        raise ConnectionRefusedError("broker down")

    app = TqmonApp(source_factory=factory, clock=lambda: 1_800_000_000.0)

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.3)
            assert app.is_running and attempts
            assert app.cluster.link.state == "disconnected"
            assert "broker down" in app.cluster.link.detail
            await pilot.press("2")
            await pilot.pause()
            assert app.current_mode == "workers"

    asyncio.run(main())


# -- hostile strings, scale ---------------------------------------------------------------------
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x9b31m\u202eexe.txt\u200b[bold red]x[/]["


def test_hostile_strings_render_as_inert_text() -> None:
    at = make_app(SYNTHETIC).cluster.now()
    events = [
        {"type": "worker-online", "hostname": f"evil{HOSTILE}@h", "timestamp": at, "freq": 2.0,
         "queues": [f"q{HOSTILE}"]},
        {"type": "task-sent", "uuid": "evil-task-1", "name": f"evil.{HOSTILE}", "timestamp": at,
         "queue": f"q{HOSTILE}", "args": f"('{HOSTILE}',)", "kwargs": "{}", "hostname": "p"},
        {"type": "task-received", "uuid": "evil-task-1", "name": f"evil.{HOSTILE}",
         "timestamp": at, "hostname": f"evil{HOSTILE}@h"},
        {"type": "task-failed", "uuid": "evil-task-1", "timestamp": at,
         "hostname": f"evil{HOSTILE}@h", "exc_type": f"Evil{HOSTILE}",
         "exc_message": HOSTILE, "exception": f"Evil('{HOSTILE}')",
         "traceback": f'Traceback:\n  File "{HOSTILE}", line 1, in x\nEvil: {HOSTILE}'},
    ]
    app = make_app(SYNTHETIC, gate=FakeGate(), extra=[batch(events, at)])

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        seen = []
        for key in "1234567":
            await press(pilot, key)
            seen.append(screen_text(app))
        await press(pilot, "4", "slash", *"id:evil", "enter", "enter")
        assert isinstance(app.screen, TaskDetailScreen)
        seen.append(screen_text(app))
        await press(pilot, "w")
        seen.append(screen_text(app))
        await press(pilot, "x")  # the blast-radius sample shows the name too
        seen.append(screen_text(app))
        text = "\n".join(seen)
        for raw in ("\x1b", "\x07", "\x9b", "\u202e", "\u200b"):
            assert raw not in text, repr(raw)
        assert "[bold red]x[/]" in text and "\\x1b]52;c;" in text and "\\u202e" in text
        assert app.is_running

    run(scenario, app)


def test_tasks_view_renders_only_visible_rows_of_100k(monkeypatch: pytest.MonkeyPatch) -> None:
    import tqmon.screens.tasks as tasks_module

    built: list[str] = []
    real = tasks_module.task_row

    def counting(task: Any, now: float, stale: bool = False) -> Any:
        built.append(task.uuid)
        return real(task, now, stale)

    monkeypatch.setattr(tasks_module, "task_row", counting)
    app = make_app()

    async def scenario(pilot: Pilot[Any], app: TqmonApp) -> None:
        now = app.now()
        app.cluster.fold(batch([{"type": "task-sent", "uuid": f"bulk-{i:06d}", "name": "bulk.job",
                                 "queue": "bulk", "timestamp": now - i * 0.001, "hostname": "p"}
                                for i in range(100_000)], now))
        built.clear()
        started = time.perf_counter()
        await press(pilot, "4")
        elapsed = time.perf_counter() - started
        t = table(app)
        assert t.row_count >= 100_000
        assert 0 < len(set(built)) <= SIZE[1], len(set(built))  # only the lines on screen
        assert elapsed < 5.0
        await press(pilot, "G")
        assert t.cursor_index == t.row_count - 1
        assert t.cursor_key in set(built)  # the last page was built when shown, not before

    run(scenario, app)
