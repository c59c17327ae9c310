"""Every key tqmon answers to, in one table: the key bar, the help screen, the command palette
and read-only greying are all generated from it, so they cannot disagree.

A :class:`KeySpec` with ``writes=True`` sends a control command (through the command gate); in
read-only mode it stays listed, greyed and marked ``(RO)``, and pressing it only explains why
nothing happens.
"""

from __future__ import annotations

from dataclasses import dataclass

#: View names (also the app's modes), in key order 1-7.
VIEWS = ("overview", "workers", "queues", "tasks", "failures", "flows", "events")
VIEW_TITLES = {"overview": "Overview", "workers": "Workers", "queues": "Queues",
               "tasks": "Tasks", "failures": "Failures", "flows": "Flows", "events": "Events"}
#: ``:`` aliases → view.
VIEW_ALIASES = {
    "overview": "overview", "o": "overview", "pulse": "overview", "pulses": "overview",
    "workers": "workers", "wk": "workers", "w": "workers", "worker": "workers",
    "queues": "queues", "queue": "queues", "qu": "queues",
    "tasks": "tasks", "t": "tasks", "task": "tasks",
    "failures": "failures", "f": "failures", "failure": "failures", "fail": "failures",
    "flows": "flows", "wf": "flows", "flow": "flows", "workflows": "flows",
    "events": "events", "ev": "events", "event": "events",
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key binding as the user sees it.

    Attributes:
        key: the key as shown (``x``, ``enter``, ``1-7``).
        action: the action name the screen or app implements (``revoke``).
        label: a short label for the key bar.
        description: one line for help and the palette.
        views: the views it applies to (``*``: every view).
        writes: sends a control command (refused in read-only mode).
        bar: shown in the key bar.
    """

    key: str
    action: str
    label: str
    description: str
    views: tuple[str, ...] = ("*",)
    writes: bool = False
    bar: bool = True


_TASKS = ("tasks", "task_detail", "worker_detail", "flow_detail")
_WORKERS = ("workers", "worker_detail")

NAVIGATION: tuple[KeySpec, ...] = (
    KeySpec("1-7", "view", "views", "switch view: 1 Overview … 7 Events", bar=False),
    KeySpec(":", "command", "cmd", "command mode (:tasks state:FAILURE, :q, :ro …)"),
    KeySpec("/", "filter", "filter", "filter this view (name:send_* state:FAILURE age>5m !x)"),
    KeySpec("enter", "drill", "open", "drill into the selected row", bar=False),
    KeySpec("esc", "back", "back", "clear the filter, else go back", bar=False),
    KeySpec("?", "help", "help", "keys for this view"),
    KeySpec("p", "pause", "pause", "pause / resume live updates (events still folded)"),
    KeySpec("j/k ↑/↓", "move", "move", "move; PgUp/PgDn, g/G first/last", bar=False),
    KeySpec("< >", "sort", "sort", "change the sort column; I inverts", bar=False),
    KeySpec("space", "mark", "mark", "mark / unmark the row (actions use the marked rows)",
            views=("tasks", "workers", "worker_detail"), bar=False),
    KeySpec("U", "unmark", "unmark", "unmark all", views=("tasks", "workers", "worker_detail"),
            bar=False),
    KeySpec("ctrl+p", "palette", "palette", "command palette: every action", bar=False),
    KeySpec("ctrl+q", "quit", "quit", "quit (also :q)", bar=False),
)

ACTIONS: tuple[KeySpec, ...] = (
    KeySpec("x", "revoke", "revoke", "revoke the selected / marked tasks", _TASKS, writes=True),
    KeySpec("X", "terminate", "terminate", "terminate running tasks (choose a signal)", _TASKS,
            writes=True),
    KeySpec("R", "retry", "retry", "retry the task(s); in Failures: the whole signature",
            _TASKS + ("failures",), writes=True),
    KeySpec("L", "rate_limit", "rate-limit", "set a rate limit for the task type",
            _TASKS + ("failures",), writes=True),
    KeySpec("+", "pool_grow", "pool+", "grow the worker's pool by one", _WORKERS, writes=True),
    KeySpec("-", "pool_shrink", "pool-", "shrink the worker's pool by one", _WORKERS,
            writes=True),
    KeySpec("S", "shutdown", "shutdown", "shut the worker(s) down (warm)", _WORKERS,
            writes=True),
    KeySpec("P", "purge", "purge", "purge the queue (type its name to confirm)", ("queues",),
            writes=True),
)

VIEW_KEYS: tuple[KeySpec, ...] = (
    KeySpec("t", "toggle_tree", "tree/graph", "switch the workflow between graph and tree",
            ("flow_detail",)),
    KeySpec("←→↑↓", "node", "node", "move between nodes; enter opens the task or expands a group",
            ("flow_detail",), bar=False),
    KeySpec("w", "open_worker", "worker", "open the task's worker", ("task_detail",)),
    KeySpec("f", "open_flow", "flow", "open the task's workflow", ("task_detail",)),
    KeySpec("s", "open_signature", "signature", "tasks with the same failure signature",
            ("task_detail",)),
)


def keys_for(view: str) -> tuple[KeySpec, ...]:
    """Every key that applies in ``view``, navigation first."""
    return tuple(k for k in NAVIGATION + VIEW_KEYS + ACTIONS
                 if "*" in k.views or view in k.views)


def action_spec(action: str) -> KeySpec | None:
    """The spec of a writing action (``revoke`` …), if any."""
    return next((k for k in ACTIONS if k.action == action), None)
