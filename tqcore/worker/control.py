"""The worker's side of remote control: its mailbox thread and the command panel.

Commands and replies have Celery's pidbox shapes (celery-wire.md §1.7, §4.5): a
command is ``{"method", "arguments", "destination", "pattern", "matcher", "ticket",
"reply_to": {"exchange", "routing_key"}}``; a reply is ``{hostname: value}`` where
value is the command's result, ``{"ok": ...}`` or ``{"error": ...}``.
Inspect commands only read; control commands change the worker and can be disabled
per worker (``--without-control shutdown,terminate``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import resource
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqcore import codec
from tqcore.exceptions import DecodeError, TqError
from tqcore.worker.ratelimit import parse_rate

if TYPE_CHECKING:
    from tqcore.transports.base import Subscription
    from tqcore.worker.worker import Worker

logger = logging.getLogger("tqcore.worker")

INSPECT = frozenset({"ping", "active", "reserved", "scheduled", "registered", "stats", "revoked",
                     "active_queues", "query_task", "conf", "clock"})
CONTROL = frozenset({"revoke", "rate_limit", "time_limit", "pool_grow", "pool_shrink",
                     "autoscale", "add_consumer", "cancel_consumer", "shutdown", "enable_events",
                     "disable_events", "heartbeat"})


def addressed_to(body: dict[str, Any], hostname: str) -> bool:
    """Whether a command's ``destination`` / ``pattern`` selects ``hostname``."""
    destination = body.get("destination")
    if destination:
        return hostname in destination
    pattern = body.get("pattern")
    if pattern:
        if body.get("matcher") == "pcre":
            return re.search(pattern, hostname) is not None
        return fnmatch.fnmatchcase(hostname, pattern)
    return True


class Panel:
    """Runs control commands against a worker.

    Args:
        worker: the worker to act on.
        disabled: command names refused on this worker (``terminate`` refuses
            ``revoke(terminate=True)``).
    """

    def __init__(self, worker: Worker, disabled: frozenset[str] = frozenset()) -> None:
        self.worker = worker
        self.disabled = disabled

    def handle(self, method: str, arguments: dict[str, Any]) -> Any:
        """Run ``method``; returns the reply value (errors as ``{"error": ...}``)."""
        if method not in INSPECT and method not in CONTROL:
            return {"error": f"unknown command {method[:80]!r}"}
        if method in self.disabled:
            return {"error": f"{method} is disabled on this worker"}
        handler: Callable[..., Any] = getattr(self, f"cmd_{method}")
        try:
            return handler(**arguments)
        except TypeError as exc:
            return {"error": f"bad arguments for {method}: {exc}"}
        except TqError as exc:
            return {"error": str(exc)}

    # -- inspect ----------------------------------------------------------------
    def cmd_ping(self) -> Any:
        return {"ok": "pong"}

    def cmd_clock(self) -> Any:
        return {"clock": self.worker.events.clock}

    def cmd_active(self, safe: bool = False) -> Any:
        return [job.info() for job in self.worker.jobs() if job.started]

    def cmd_reserved(self) -> Any:
        return [job.info() for job in self.worker.jobs() if not job.started]

    def cmd_scheduled(self) -> Any:
        # ETA tasks wait in the broker, not here; what the worker holds back is
        # rate-limited work waiting for its token.
        return [{"eta": time.time() + max(0.0, due - time.monotonic()), "priority": 0,
                 "request": job.info()} for due, _, job in list(self.worker.timers)]

    def cmd_registered(self, taskinfoitems: list[str] | None = None, builtins: bool = False
                       ) -> Any:
        out = []
        for name, task in sorted(self.worker.app.tasks.items()):
            if name.startswith("celery.") and not builtins:
                continue
            extra = [f"{item}={getattr(task, item, None)}" for item in taskinfoitems or []
                     if getattr(task, item, None) is not None]
            out.append(f"{name} [{' '.join(extra)}]" if extra else name)
        return out

    def cmd_revoked(self) -> Any:
        return sorted(self.worker.revoked)[:10_000]

    def cmd_active_queues(self) -> Any:
        return [{"name": q, "exchange": {"name": q, "type": "direct"}, "routing_key": q,
                 "durable": True, "exclusive": False, "auto_delete": False, "no_ack": False,
                 "queue_arguments": None, "binding_arguments": None, "bindings": [],
                 "max_priority": 9} for q in self.worker.queues]

    def cmd_query_task(self, ids: list[str] | str | None = None, *args: Any) -> Any:
        wanted = {ids} if isinstance(ids, str) else set(ids or [])
        out: dict[str, Any] = {}
        for job in self.worker.jobs():
            if job.id in wanted:
                out[job.id] = ["active" if job.started else "reserved", job.info()]
        return out

    def cmd_conf(self, with_defaults: bool = False) -> Any:
        return {k: v for k, v in self.worker.app.conf.public().items()
                if isinstance(v, str | int | float | bool | list | dict | type(None))}

    def cmd_stats(self) -> Any:
        w = self.worker
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "total": dict(w.processed), "pid": os.getpid(), "clock": w.events.clock,
            "uptime": int(time.time() - w.started_at),
            "pool": w.pool.info(),
            "broker": {"transport": type(w.transport).__name__,
                       "url": w.transport.display_url},
            "prefetch_count": w.prefetch_limit,
            "refused": w.app.signer.refused if w.app.signer is not None else 0,
            "rusage": {"utime": usage.ru_utime, "stime": usage.ru_stime,
                       "maxrss": usage.ru_maxrss},
        }

    # -- control ----------------------------------------------------------------
    def cmd_revoke(self, task_id: str | list[str], terminate: bool = False,
                   signal: str | None = None) -> Any:
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        if terminate and "terminate" in self.disabled:
            return {"error": "terminate is disabled on this worker"}
        self.worker.revoked.update(ids)
        self.worker.pool.recall(ids)
        if not terminate:
            return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}
        done = [tid for tid in ids if self.worker.pool.terminate_job(tid, signal or "SIGTERM")]
        if done:
            return {"ok": f"terminated {', '.join(done)} with {signal or 'SIGTERM'}"}
        if not getattr(self.worker.pool, "can_terminate", False):
            return {"ok": f"tasks {', '.join(ids)} flagged as revoked; the {self.worker.pool_name}"
                          " pool cannot terminate a running task (it will finish)"}
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked (none running here)"}

    def cmd_rate_limit(self, task_name: str, rate_limit: str | float | None) -> Any:
        if task_name not in self.worker.app.tasks:
            return {"error": f"unknown task {task_name!r}"}
        parse_rate(rate_limit)  # raises ImproperlyConfigured -> error reply
        self.worker.set_rate_limit(task_name, str(rate_limit) if rate_limit else None)
        return {"ok": "new rate limit set successfully" if rate_limit
                else "rate limit disabled successfully"}

    def cmd_time_limit(self, task_name: str, soft: float | None = None,
                       hard: float | None = None) -> Any:
        if task_name not in self.worker.app.tasks:
            return {"error": f"unknown task {task_name!r}"}
        self.worker.time_limits[task_name] = (hard, soft)
        return {"ok": "time limits set successfully"}

    def cmd_pool_grow(self, n: int = 1) -> Any:
        self.worker.pool.grow(int(n))
        return {"ok": f"pool will grow to {self.worker.pool.concurrency}"}

    def cmd_pool_shrink(self, n: int = 1) -> Any:
        self.worker.pool.shrink(int(n))
        return {"ok": f"pool will shrink to {self.worker.pool.concurrency}"}

    def cmd_autoscale(self, max: int, min: int) -> Any:  # noqa: A002 - Celery's names
        current = self.worker.pool.concurrency
        target = max if current > max else (min if current < min else current)
        if target > current:
            self.worker.pool.grow(target - current)
        elif target < current:
            self.worker.pool.shrink(current - target)
        return {"ok": f"autoscale now max={max} min={min}"}

    def cmd_add_consumer(self, queue: str, **options: Any) -> Any:
        self.worker.add_queue(queue)
        return {"ok": f"add consumer {queue}"}

    def cmd_cancel_consumer(self, queue: str, **options: Any) -> Any:
        if not self.worker.cancel_queue(queue):
            return {"error": f"not consuming from {queue!r} (or it is the last queue)"}
        return {"ok": f"no longer consuming from {queue}"}

    def cmd_shutdown(self, msg: str | None = None) -> Any:
        logger.warning("remote shutdown requested%s", f": {msg}" if msg else "")
        threading.Timer(0.2, self.worker.stop).start()  # reply first, then stop
        return {"ok": "shutting down"}

    def cmd_enable_events(self) -> Any:
        self.worker.events.enabled = True
        return {"ok": "task events enabled"}

    def cmd_disable_events(self) -> Any:
        self.worker.events.enabled = False
        return {"ok": "task events disabled"}

    def cmd_heartbeat(self) -> Any:
        self.worker.supervisor.send_heartbeat()
        return {"ok": "heartbeat sent"}


def serve_mailbox(worker: Worker, panel: Panel, stopped: threading.Event,
                  sub: Subscription | None = None) -> None:
    """The mailbox thread: read commands, run those addressed here, send replies.

    ``sub`` is the subscription made before the worker announced itself (so early
    commands are not missed); it is renewed after a broker error.
    """
    transport = worker.transport
    while not stopped.is_set():
        try:
            if sub is None:
                sub = transport.subscribe_control(worker.hostname)
            bodies = sub.get(0.5)
        except TqError as exc:
            logger.error("control channel: %s", exc)
            sub = None
            stopped.wait(1.0)
            continue
        for raw in bodies:
            try:
                body = codec.loads(raw, max_size=1024 * 1024)
                if not isinstance(body, dict) or not isinstance(body.get("method"), str):
                    raise DecodeError("not a control command")
            except DecodeError as exc:
                logger.warning("malformed control command ignored: %s", exc)
                continue
            signer = worker.app.signer
            if signer is not None:
                try:
                    signer.verify_command(body)
                except TqError as exc:
                    logger.error("control command %r refused: %s", str(body["method"])[:40], exc)
                    continue
            if not addressed_to(body, worker.hostname):
                continue
            args = body.get("arguments") or {}
            reply = panel.handle(body["method"], args if isinstance(args, dict) else {})
            reply_to = body.get("reply_to")
            if isinstance(reply_to, dict) and reply_to.get("routing_key"):
                try:
                    transport.send_reply(str(reply_to["routing_key"]),
                                         codec.dumps({worker.hostname: reply}).encode())
                except (TqError, TypeError, ValueError) as exc:
                    logger.error("could not reply to %s: %s", body["method"], exc)
