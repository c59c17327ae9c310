"""Periodic tasks: ``tqcore -A proj beat`` sends the entries of ``app.conf.beat_schedule``.

::

    from tqcore.beat import crontab

    app.conf.beat_schedule = {
        "cleanup-every-30s": {"task": "proj.cleanup", "schedule": 30.0},
        "report-monday-7am": {"task": "proj.report", "args": ("weekly",),
                              "schedule": crontab(minute=0, hour=7, day_of_week="mon")},
    }
    app.add_periodic_task(crontab(minute="*/5"), heartbeat.s(), name="heartbeat")

Modules: :mod:`~tqcore.beat.schedules` (schedule, crontab), :mod:`~tqcore.beat.state`
(persisted runs), :mod:`~tqcore.beat.scheduler` (the tick), :mod:`~tqcore.beat.service`
(leader election and the loop).
"""

from __future__ import annotations

from tqcore.beat.scheduler import (
    BEAT_HEADER,
    EVENT_TYPE,
    ScheduleEntry,
    Scheduler,
    add_periodic_task,
    entries_from_app,
)
from tqcore.beat.schedules import (
    BaseSchedule,
    ParseException,
    crontab,
    crontab_parser,
    maybe_schedule,
    schedstate,
    schedule,
)
from tqcore.beat.service import Beat, start_beat

__all__ = ["BEAT_HEADER", "EVENT_TYPE", "BaseSchedule", "Beat", "ParseException",
           "ScheduleEntry", "Scheduler", "add_periodic_task", "crontab", "crontab_parser",
           "entries_from_app", "maybe_schedule", "schedstate", "schedule", "start_beat"]
