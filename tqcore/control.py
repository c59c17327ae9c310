"""Remote control from the client side: ``app.control`` (Celery's names and shapes).

Every call broadcasts one pidbox command and, when a reply is wanted, collects
``{node: value}`` replies until ``timeout`` or until ``limit`` replies (the number of
destinations when given) arrived. Workers that did not answer are simply absent
from the result: callers that need "no reply" spelled out compare with the nodes
they expected (see :meth:`Control.expected_nodes`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqcore import codec
from tqcore.exceptions import DecodeError

if TYPE_CHECKING:
    from tqcore.app import App

Replies = list[dict[str, Any]]


class Control:
    """``app.control``: broadcast commands to workers and gather their replies."""

    def __init__(self, app: App) -> None:
        self.app = app

    def broadcast(self, command: str, arguments: dict[str, Any] | None = None,
                  destination: Sequence[str] | None = None, reply: bool = False,
                  timeout: float = 1.0, limit: int | None = None, pattern: str | None = None,
                  matcher: str | None = None) -> Replies:
        """Send ``command`` to the workers selected by ``destination`` / ``pattern``.

        Returns:
            One ``{node: value}`` dict per reply (empty when ``reply`` is False).
        """
        transport = self.app.transport
        body: dict[str, Any] = {"method": command, "arguments": arguments or {},
                                "destination": list(destination) if destination else None,
                                "pattern": pattern, "matcher": matcher}
        reply_key = None
        if reply:
            reply_key = str(uuid.uuid4())
            body["ticket"] = str(uuid.uuid4())
            body["reply_to"] = {"exchange": "reply.celery.pidbox", "routing_key": reply_key}
        if self.app.signer is not None:
            body = self.app.signer.sign_command(body)
        transport.broadcast_control(codec.dumps(body).encode(), ttl=max(300.0, timeout))
        if reply_key is None:
            return []
        if limit is None and destination:
            limit = len(destination)
        replies: Replies = []
        deadline = time.monotonic() + timeout
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for raw in transport.collect_replies(reply_key, remaining):
                try:
                    value = codec.loads(raw, max_size=16 * 1024 * 1024)
                except DecodeError:
                    continue
                if isinstance(value, dict):
                    replies.append(value)
        return replies

    def expected_nodes(self, destination: Sequence[str] | None = None) -> list[str]:
        """The workers a command should reach: ``destination``, else every live worker."""
        if destination:
            return list(destination)
        return sorted(self.app.transport.list_workers())

    def inspect(self, destination: Sequence[str] | None = None, timeout: float = 1.0,
                **kwargs: Any) -> Inspect:
        """An :class:`Inspect` for read-only commands."""
        return Inspect(self, destination, timeout, **kwargs)

    def _call(self, command: str, destination: Sequence[str] | None, reply: bool,
              timeout: float, **arguments: Any) -> Replies:
        return self.broadcast(command, arguments, destination=destination, reply=reply,
                              timeout=timeout)

    # -- commands -----------------------------------------------------------------
    def ping(self, destination: Sequence[str] | None = None, timeout: float = 1.0,
             **kwargs: Any) -> Replies:
        """``[{node: {"ok": "pong"}}, ...]``."""
        return self._call("ping", destination, True, timeout)

    def revoke(self, task_id: str | Sequence[str], destination: Sequence[str] | None = None,
               terminate: bool = False, signal: str = "SIGTERM", reply: bool = False,
               timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Revoke tasks: persisted in the backend (honoured by workers started later)
        and broadcast to running workers; ``terminate`` stops a running one."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.backend.add_revoked(ids)
        return self._call("revoke", destination, reply, timeout, task_id=ids,
                          terminate=terminate, signal=signal)

    def rate_limit(self, task_name: str, rate_limit: str | None,
                   destination: Sequence[str] | None = None, reply: bool = True,
                   timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Set a task type's rate limit on the workers (per worker, as in Celery)."""
        return self._call("rate_limit", destination, reply, timeout, task_name=task_name,
                          rate_limit=rate_limit)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Sequence[str] | None = None, reply: bool = True,
                   timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Set a task type's time limits on the workers."""
        return self._call("time_limit", destination, reply, timeout, task_name=task_name,
                          soft=soft, hard=hard)

    def pool_grow(self, n: int = 1, destination: Sequence[str] | None = None,
                  reply: bool = True, timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Add ``n`` pool slots."""
        return self._call("pool_grow", destination, reply, timeout, n=n)

    def pool_shrink(self, n: int = 1, destination: Sequence[str] | None = None,
                    reply: bool = True, timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Remove ``n`` pool slots."""
        return self._call("pool_shrink", destination, reply, timeout, n=n)

    def autoscale(self, max: int, min: int, destination: Sequence[str] | None = None,  # noqa: A002
                  reply: bool = True, timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Bound the pool size between ``min`` and ``max``."""
        return self._call("autoscale", destination, reply, timeout, max=max, min=min)

    def add_consumer(self, queue: str, destination: Sequence[str] | None = None,
                     reply: bool = True, timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Start consuming ``queue``."""
        return self._call("add_consumer", destination, reply, timeout, queue=queue)

    def cancel_consumer(self, queue: str, destination: Sequence[str] | None = None,
                        reply: bool = True, timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Stop consuming ``queue``."""
        return self._call("cancel_consumer", destination, reply, timeout, queue=queue)

    def shutdown(self, destination: Sequence[str] | None = None, reply: bool = True,
                 timeout: float = 1.0, msg: str | None = None, **kwargs: Any) -> Replies:
        """Warm-shut-down the workers."""
        return self._call("shutdown", destination, reply, timeout, msg=msg)

    def enable_events(self, destination: Sequence[str] | None = None, reply: bool = True,
                      timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Turn task events on."""
        return self._call("enable_events", destination, reply, timeout)

    def disable_events(self, destination: Sequence[str] | None = None, reply: bool = True,
                       timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Turn task events off."""
        return self._call("disable_events", destination, reply, timeout)

    def heartbeat(self, destination: Sequence[str] | None = None, reply: bool = False,
                  timeout: float = 1.0, **kwargs: Any) -> Replies:
        """Ask workers to send a heartbeat event now (a monitor's discovery call)."""
        return self._call("heartbeat", destination, reply, timeout)

    def retry(self, task_id: str | Sequence[str], dry_run: bool = False) -> dict[str, Any]:
        """Re-run failed tasks from their original stored message (same id and args)."""
        from tqcore.retry import retry_failed

        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return retry_failed(self.app, ids, dry_run=dry_run)

    def retry_failed(self, *, name: str | None = None, exc_type: str | None = None,
                     signature: str | None = None, dry_run: bool = False,
                     limit: int = 1000) -> dict[str, Any]:
        """Bulk retry by task name, exception type or failure signature."""
        from tqcore.retry import retry_failed

        return retry_failed(self.app, None, name=name, exc_type=exc_type, signature=signature,
                            dry_run=dry_run, limit=limit)

    def purge(self) -> int:
        """Delete waiting messages of the default queue; returns how many."""
        return self.app.transport.purge(str(self.app.conf.task_default_queue))


class Inspect:
    """Read-only commands; each returns ``{node: value}`` or None when nobody replied."""

    def __init__(self, control: Control, destination: Sequence[str] | None = None,
                 timeout: float = 1.0, **kwargs: Any) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _request(self, command: str, **arguments: Any) -> dict[str, Any] | None:
        merged: dict[str, Any] = {}
        for reply in self.control.broadcast(command, arguments, destination=self.destination,
                                            reply=True, timeout=self.timeout):
            merged.update(reply)
        return merged or None

    def ping(self) -> dict[str, Any] | None:
        """``{node: {"ok": "pong"}}``."""
        return self._request("ping")

    def active(self, safe: bool = False) -> dict[str, Any] | None:
        """Tasks running now."""
        return self._request("active", safe=safe)

    def reserved(self) -> dict[str, Any] | None:
        """Tasks held by workers, not started."""
        return self._request("reserved")

    def scheduled(self) -> dict[str, Any] | None:
        """Tasks held back by the worker (rate limits; ETAs wait in the broker)."""
        return self._request("scheduled")

    def registered(self, *taskinfoitems: str) -> dict[str, Any] | None:
        """Registered task names."""
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    def stats(self) -> dict[str, Any] | None:
        """Worker statistics."""
        return self._request("stats")

    def revoked(self) -> dict[str, Any] | None:
        """Revoked task ids known to each worker."""
        return self._request("revoked")

    def active_queues(self) -> dict[str, Any] | None:
        """Queues each worker consumes."""
        return self._request("active_queues")

    def query_task(self, *ids: str) -> dict[str, Any] | None:
        """Where the given tasks are (active / reserved)."""
        return self._request("query_task", ids=list(ids))

    def conf(self, with_defaults: bool = False) -> dict[str, Any] | None:
        """Each worker's configuration (credentials redacted)."""
        return self._request("conf", with_defaults=with_defaults)

    def clock(self) -> dict[str, Any] | None:
        """Each worker's logical clock."""
        return self._request("clock")
