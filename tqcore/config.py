"""App settings with Celery's names and defaults (celery-wire.md §1), plus tqcore's own."""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    # broker and backend (None: from env TQ_BROKER_URL / TQ_RESULT_BACKEND, else embedded)
    "broker_url": None,
    "result_backend": None,
    # tasks
    "task_acks_late": False,
    "task_reject_on_worker_lost": None,
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_default_rate_limit": None,
    "task_default_retry_delay": 180,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_routes": None,
    "task_serializer": "json",
    "accept_content": ["json"],
    "task_send_sent_event": True,
    # results
    "result_expires": 86400,
    "result_extended": True,
    # worker
    "worker_concurrency": None,
    "worker_prefetch_multiplier": 4,
    # tqcore sends task events by default (Celery needs -E) so tqmon works out of the box
    "worker_send_task_events": True,
    "worker_hijack_root_logger": True,
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,
    # off as in Celery: a redelivered acks_late message whose task already succeeded
    # is acked instead of run again (the result backend is asked)
    "worker_deduplicate_successful_tasks": False,
    # tqcore's own (broker reliability and decoding caps)
    "broker_lease_seconds": 30.0,
    "broker_max_deliveries": 5,
    "task_message_max_size": 10 * 1024 * 1024,
    "task_message_max_depth": 100,
}


class Settings(MutableMapping[str, Any]):
    """``app.conf``: a mapping that also allows attribute access (``conf.task_acks_late``).

    Unknown keys are allowed (an app may carry its own settings).
    """

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(DEFAULTS))
        if values:
            self._data.update(values)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def broker(self) -> str:
        """The broker URL in force: setting, then ``TQ_BROKER_URL``, then the embedded file."""
        from tqcore.urls import default_url

        return str(self._data.get("broker_url") or os.environ.get("TQ_BROKER_URL")
                   or default_url())

    def backend(self) -> str:
        """The result backend URL in force.

        The setting, then ``TQ_RESULT_BACKEND``; else the broker's own store when it
        has one (the SQLite file, the in-memory broker), else the embedded file.
        """
        from tqcore.urls import default_url, scheme_of

        explicit = self._data.get("result_backend") or os.environ.get("TQ_RESULT_BACKEND")
        if explicit:
            return str(explicit)
        broker = self.broker()
        if scheme_of(broker) in ("sqlite", "memory"):
            return broker
        return default_url()

    def public(self) -> dict[str, Any]:
        """The settings with credentials redacted (for ``inspect conf`` and logs)."""
        from tqcore.urls import redact

        return {k: redact(v) if isinstance(v, str) else v for k, v in self._data.items()
                if not k.startswith("_")}
