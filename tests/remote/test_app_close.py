"""Re-pointing an app at another broker after ``app.close()`` (what a test harness, or a
long-lived process switching brokers, does): its ``task-sent`` events must follow."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tqcore import App


def _event_types(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT routing_key FROM events ORDER BY id")]


def test_task_sent_events_follow_the_broker_after_close(tmp_path: Path) -> None:
    app = App("reconf", set_as_current=False)

    @app.task(name="reconf.t")
    def t() -> None:
        return None

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    app.conf.broker_url = app.conf.result_backend = f"sqlite:///{a}"
    first = t.delay().id
    app.close()
    app.conf.broker_url = app.conf.result_backend = f"sqlite:///{b}"
    second = t.delay().id
    try:
        # The message itself goes to the new broker...
        assert [s.depth for s in app.transport.queue_stats(["celery"])] == [1]
    finally:
        app.close()
    assert first != second
    # ... and so must its task-sent event (observed: it went to a.db, b.db had none).
    assert _event_types(a) == ["task.sent"]
    assert _event_types(b) == ["task.sent"]
