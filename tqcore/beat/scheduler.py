"""The scheduler: entries from ``beat_schedule``, their persisted runs, and the tick.

One tick sends every run that fell due since the entry's last one, oldest first (at most
``beat_max_catchup`` per entry; older ones are dropped with a warning), then publishes a
``beat-tick`` event with each entry's next run so tqmon can show the schedule.

A run is first *recorded* (compare-and-set on the entry's previous run in the
:class:`~tqcore.beat.state.BeatStore`) and only then sent, with header
``celery_beat_task: true`` and a task id derived from (namespace, entry, run time). A
run another beat already recorded is never sent twice; a beat killed between the two
steps loses that one run (the window is one local call). New entries are anchored at
the time they are first seen, and that anchor is persisted, so a restart does not push
an interval entry's first run back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tqcore.beat.schedules import BaseSchedule, maybe_schedule, to_timezone
from tqcore.beat.state import BeatStore, EntryState
from tqcore.canvas import Signature, to_dict
from tqcore.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.events.dispatcher import EventDispatcher

logger = logging.getLogger("tqcore.beat")

#: Event type published after each tick (and at most every EVENT_INTERVAL when idle).
EVENT_TYPE = "beat-tick"
EVENT_INTERVAL = 1.0
DEFAULT_MAX_CATCHUP = 100
#: Header every message sent by beat carries (Celery 5.7's marker).
BEAT_HEADER = "celery_beat_task"


def _ms(ts: float) -> int:
    return round(ts * 1000)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@dataclasses.dataclass
class ScheduleEntry:
    """One periodic task and where it stands."""

    name: str
    """The entry's key in ``beat_schedule``."""
    task: str
    """The task name sent."""
    schedule: BaseSchedule
    """When it runs."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``apply_async`` options: queue, priority, expires, headers, ..."""
    sig: dict[str, Any] | None = None
    """A canvas (chain, group, ...) applied instead of ``task`` with ``args``."""
    anchor_ms: int = 0
    """The last run handled, or when the entry was first seen (epoch ms)."""
    total_run_count: int = 0
    next_run: float = 0.0
    """The next run's time (epoch seconds)."""

    @property
    def last_run(self) -> float | None:
        """The last run's time, None if it never ran."""
        return self.anchor_ms / 1000 if self.total_run_count else None

    def info(self) -> dict[str, Any]:
        """The entry as it appears in ``beat-tick`` events (times in epoch seconds)."""
        return {"name": self.name, "task": self.task, "schedule": self.schedule.describe(),
                "next_run": self.next_run, "last_run": self.last_run,
                "total_run_count": self.total_run_count}


def entries_from_app(app: App) -> dict[str, ScheduleEntry]:
    """Parse ``app.conf.beat_schedule`` (Celery's shape) into entries.

    Raises:
        ImproperlyConfigured: an entry without ``task``/``schedule``, or a bad schedule.
    """
    config = app.conf.get("beat_schedule") or {}
    tz = to_timezone(app.conf.get("timezone"))
    entries: dict[str, ScheduleEntry] = {}
    for name, spec in dict(config).items():
        if not isinstance(spec, Mapping) or "task" not in spec or "schedule" not in spec:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}] needs 'task' and 'schedule'")
        try:
            sched = maybe_schedule(spec["schedule"], bool(spec.get("relative", False)))
        except ValueError as exc:
            raise ImproperlyConfigured(f"beat_schedule[{name!r}]: {exc}") from None
        task = spec["task"]
        task_name = task if isinstance(task, str) else str(getattr(task, "name", task))
        entries[str(name)] = ScheduleEntry(
            name=str(name), task=task_name, schedule=sched.bind_timezone(tz),
            args=tuple(spec.get("args") or ()), kwargs=dict(spec.get("kwargs") or {}),
            options=dict(spec.get("options") or {}), sig=spec.get("sig"))
    return entries


def add_periodic_task(app: App, schedule: Any, sig: Any, args: Any = (), kwargs: Any = (),
                      name: str | None = None, **opts: Any) -> str:
    """Add an entry to ``app.conf.beat_schedule`` (what ``app.add_periodic_task`` does).

    Args:
        app: the app.
        schedule: seconds, a timedelta, :class:`~tqcore.beat.schedule`,
            :class:`~tqcore.beat.crontab` or a five-field cron string.
        sig: a signature (``add.s(2, 2)``), a canvas (``chain(...)``), a task or a task name.
        args: positional arguments added after the signature's.
        kwargs: keyword arguments merged over the signature's.
        name: the entry's name (default: the signature's repr).
        **opts: ``apply_async`` options (``queue``, ``expires``, ...).

    Returns:
        The entry's name.

    Raises:
        ValueError: ``schedule`` is not a schedule.
    """
    maybe_schedule(schedule)  # fail now, not when beat starts
    entry: dict[str, Any] = {"schedule": schedule}
    if isinstance(sig, str):
        entry.update(task=sig, args=tuple(args or ()), kwargs=dict(kwargs or {}), options=opts)
    elif not isinstance(sig, Signature) and hasattr(sig, "s"):  # a task
        entry.update(task=sig.name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                     options=opts)
    elif isinstance(sig, Signature) and not sig.get("subtask_type"):
        entry.update(task=sig.task, args=(*sig.args, *(args or ())),
                     kwargs={**sig.kwargs, **dict(kwargs or {})},
                     options={**sig.options, **opts})
    elif isinstance(sig, Signature):
        entry.update(task=str(sig.get("task") or sig.get("subtask_type")), sig=to_dict(sig),
                     options=opts)
    else:
        raise TypeError(f"add_periodic_task needs a signature, task or task name, not {sig!r}")
    key = name or repr(sig)
    beat_schedule = app.conf.get("beat_schedule")
    if beat_schedule is None:
        beat_schedule = app.conf["beat_schedule"] = {}
    beat_schedule[key] = entry
    return key


class Scheduler:
    """Decides what is due, records it, sends it. Not thread-safe: one loop owns it.

    Args:
        app: the app whose ``beat_schedule`` runs.
        store: where runs are persisted.
        namespace: the schedule's name in the store (beats of one app share it).
        clock: epoch seconds now (tests inject one).
        max_catchup: most missed runs sent per entry after downtime.
        events: where ``beat-tick`` events go (None: none are sent).
        send: sends one run (default: :meth:`send_run` through the app).
    """

    def __init__(self, app: App, store: BeatStore, *, namespace: str,
                 clock: Callable[[], float] = time.time,
                 max_catchup: int = DEFAULT_MAX_CATCHUP,
                 events: EventDispatcher | None = None,
                 send: Callable[[ScheduleEntry, float], Any] | None = None) -> None:
        self.app = app
        self.store = store
        self.namespace = namespace
        self.clock = clock
        self.max_catchup = max(1, int(max_catchup))
        self.events = events
        self.send = send or self.send_run
        self.entries: dict[str, ScheduleEntry] = {}
        self._last_event = float("-inf")

    def setup(self) -> None:
        """(Re)read the schedule and the persisted runs: on start and on becoming leader."""
        now = self.clock()
        entries = entries_from_app(self.app)
        stored = self.store.load(self.namespace)
        for entry in entries.values():
            state = stored.get(entry.name)
            key = entry.schedule.key()
            if state is None or state.schedule != key:
                fresh = EntryState(_ms(now), key, state.total_run_count if state else 0)
                if self.store.record(self.namespace, entry.name,
                                     state.last_run_ms if state else None, fresh):
                    if state is not None:
                        logger.info("beat: schedule of %s changed to %s: runs count from now",
                                    entry.name, entry.schedule.describe())
                    state = fresh
                else:  # another beat anchored it a moment ago
                    state = self.store.load(self.namespace).get(entry.name, fresh)
            self._adopt(entry, state)
        self.entries = entries
        logger.info("beat: %d entr%s: %s", len(entries), "y" if len(entries) == 1 else "ies",
                    ", ".join(f"{e.name} ({e.schedule.describe()})" for e in entries.values())
                    or "-")

    def _adopt(self, entry: ScheduleEntry, state: EntryState) -> None:
        entry.anchor_ms = state.last_run_ms
        entry.total_run_count = state.total_run_count
        entry.next_run = entry.schedule.next_after(state.last_run_ms / 1000)

    def tick(self) -> float:
        """Send what is due; returns seconds until the next run (0 or more).

        Raises:
            TqError: the store or the broker failed (the loop retries).
        """
        now = self.clock()
        sent = 0
        for entry in sorted(self.entries.values(), key=lambda e: e.next_run):
            if entry.next_run <= now:
                sent += self._run_due(entry, now)
        if self.events is not None and (sent or now - self._last_event >= EVENT_INTERVAL):
            self.publish_schedule()
            self._last_event = now
        if not self.entries:
            return float("inf")
        return max(0.0, min(e.next_run for e in self.entries.values()) - self.clock())

    def _run_due(self, entry: ScheduleEntry, now: float) -> int:
        slots, dropped = entry.schedule.due_slots(entry.anchor_ms / 1000, now, self.max_catchup)
        if dropped:
            logger.warning("beat: %s missed more than %d runs while beat was down; the "
                           "older ones are dropped (beat_max_catchup)", entry.name,
                           self.max_catchup)
        sent = 0
        for slot in slots:
            previous = EntryState(entry.anchor_ms, entry.schedule.key(), entry.total_run_count)
            claimed = EntryState(_ms(slot), previous.schedule, previous.total_run_count + 1)
            if not self.store.record(self.namespace, entry.name, previous.last_run_ms, claimed):
                state = self.store.load(self.namespace).get(entry.name)
                logger.info("beat: %s was run by another beat; following it", entry.name)
                if state is not None:
                    self._adopt(entry, state)
                return sent
            self._adopt(entry, claimed)
            try:
                self.send(entry, slot)
            except BaseException:
                # Give the run back so the next tick sends it (unless someone moved on).
                self.store.record(self.namespace, entry.name, claimed.last_run_ms, previous)
                self._adopt(entry, previous)
                raise
            sent += 1
        entry.next_run = entry.schedule.next_after(entry.anchor_ms / 1000)
        return sent

    def task_id(self, entry: ScheduleEntry, slot: float) -> str:
        """The id of one run: the same for the same (namespace, entry, run time)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL,
                              f"tqcore-beat:{self.namespace}:{entry.name}:{_ms(slot)}"))

    def send_run(self, entry: ScheduleEntry, slot: float) -> Any:
        """Publish one run of ``entry`` (the run due at ``slot``)."""
        options = dict(entry.options)
        headers = {**(options.pop("headers", None) or {}), BEAT_HEADER: True,
                   "beat_entry": entry.name, "beat_scheduled_at": _iso(slot)}
        late = self.clock() - slot
        logger.info("beat: sending due task %s (%s)%s", entry.name, entry.task,
                    f", {late:.1f}s late" if late >= 1.0 else "")
        if entry.sig is not None:
            from tqcore.canvas import signature

            return signature(entry.sig, app=self.app).apply_async(headers=headers, **options)
        return self.app.send_task(entry.task, entry.args, entry.kwargs,
                                  task_id=self.task_id(entry, slot), headers=headers, **options)

    def publish_schedule(self) -> None:
        """Send a ``beat-tick`` event: every entry with its next and last run."""
        if self.events is None:
            return
        self.events.send(EVENT_TYPE, namespace=self.namespace,
                         entries=[e.info() for e in sorted(self.entries.values(),
                                                           key=lambda e: e.next_run)])
