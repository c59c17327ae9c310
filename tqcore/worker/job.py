"""A claimed task message on its way through the worker: decoded, checked, runnable."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tqcore.context import Context
from tqcore.message import TaskMessage, parse_time

if TYPE_CHECKING:
    from tqcore.task import Task
    from tqcore.transports.base import Delivery


class Job:
    """One task invocation held by the worker.

    Attributes:
        delivery: the broker delivery (settle it exactly once).
        message: the decoded message.
        task: the registered task.
        request: the context the task will see as ``self.request``.
        acks_late: ack after the task instead of before.
        eta: epoch seconds before which it must not start, or None.
        expires: epoch seconds after which it must not start, or None.
    """

    __slots__ = ("delivery", "message", "task", "hostname", "_request", "acks_late", "eta",
                 "expires", "received", "started", "ready_at", "redispatched", "acked")

    def __init__(self, delivery: Delivery, message: TaskMessage, task: Task, hostname: str
                 ) -> None:
        self.delivery = delivery
        self.message = message
        self.task = task
        h = message.headers
        self.eta = parse_time(h.get("eta"))
        self.expires = parse_time(h.get("expires"))
        self.acks_late = task.effective_acks_late
        self.received = time.time()
        self.started: float | None = None
        #: Early-acked (acks_late off): out of the prefetch window.
        self.acked = False
        self.ready_at = 0.0
        self.redispatched = 0
        self.hostname = hostname
        self._request: Context | None = None

    @property
    def request(self) -> Context:
        """The context the task sees as ``self.request`` (built on first use: a prefork
        parent hands the message to a child, which builds its own)."""
        if self._request is None:
            self._request = self._build_request()
        return self._request

    def _build_request(self) -> Context:
        message, delivery, hostname = self.message, self.delivery, self.hostname
        h = message.headers
        embed = message.embed
        limit = h.get("timelimit") or [None, None]
        return Context(
            id=message.id, task=message.name, args=message.args, kwargs=message.kwargs,
            retries=int(h.get("retries") or 0), is_eager=False, called_directly=False,
            eta=h.get("eta"), expires=h.get("expires"), group=h.get("group"),
            group_index=h.get("group_index"), root_id=h.get("root_id") or message.id,
            parent_id=h.get("parent_id"), origin=h.get("origin"), shadow=h.get("shadow"),
            timelimit=list(limit) if isinstance(limit, list | tuple) else [None, None],
            ignore_result=bool(h.get("ignore_result")),
            replaced_task_nesting=int(h.get("replaced_task_nesting") or 0),
            callbacks=embed.get("callbacks"), errbacks=embed.get("errbacks"),
            chain=embed.get("chain"), chord=embed.get("chord"),
            correlation_id=message.properties.get("correlation_id"),
            reply_to=message.properties.get("reply_to"), hostname=hostname,
            headers=h, properties=message.properties, stamps=h.get("stamps"),
            attempts=delivery.attempts, raw_payload=delivery.payload,
            delivery_info={"exchange": "", "routing_key": delivery.queue,
                           "priority": delivery.priority,
                           "redelivered": delivery.redelivered})

    @property
    def id(self) -> str:
        """The task id."""
        return self.message.id

    @property
    def name(self) -> str:
        """The task name."""
        return self.message.name

    def info(self) -> dict[str, Any]:
        """Request info in Celery's ``inspect active`` shape."""
        return {"id": self.id, "name": self.name, "args": self.message.args,
                "kwargs": self.message.kwargs, "type": self.name,
                "hostname": self.request.hostname, "time_start": self.started,
                "acknowledged": self.delivery.settled,
                "delivery_info": self.request.delivery_info, "worker_pid": None}

    def __repr__(self) -> str:
        return f"<Job {self.name}[{self.id}]>"
