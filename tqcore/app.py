"""The application: configuration, task registry, sending, and the broker/backend it uses."""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import inspect
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tqcore import context, message
from tqcore.backends import ResultBackend, backend_from_url
from tqcore.canvas import Signature, to_dict, uuid4
from tqcore.config import Settings
from tqcore.exceptions import NotRegistered
from tqcore.result import AsyncResult, GroupResult
from tqcore.task import Task as BaseTask
from tqcore.task import add_autoretry
from tqcore.transports import OutgoingMessage, Transport, from_url

if TYPE_CHECKING:
    from tqcore.control import Control
    from tqcore.events.dispatcher import EventDispatcher
    from tqcore.locks import Lock
    from tqcore.signing import Signer

_current: App | None = None
_apps: weakref.WeakSet[App] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Locks another thread held at fork time would stay locked forever in the child.
    global _current_lock
    _current_lock = threading.Lock()
    for app in list(_apps):
        app._lock = threading.RLock()
        app._events = None


os.register_at_fork(after_in_child=_after_fork_in_child)
_current_lock = threading.Lock()


def current_app() -> App:
    """The most recently created app (a default one if none exists)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = App("default", set_as_current=False)
        return _current


class TaskRegistry(dict[str, BaseTask]):
    """Tasks by name; a missing name raises :class:`NotRegistered`."""

    def __missing__(self, key: str) -> BaseTask:
        raise NotRegistered(key)


class App:
    """A tqcore application (Celery's ``Celery`` class).

    Args:
        main: the name of the main module (used for task names defined in ``__main__``).
        broker: broker URL (else ``TQ_BROKER_URL``, else the embedded SQLite file).
        backend: result backend URL (else ``TQ_RESULT_BACKEND``, else the broker's store).
        set_as_current: make this the app that results and signatures default to.
        **conf: settings, with Celery's names (``task_acks_late=True``, ...).
    """

    Task: type[BaseTask] = BaseTask

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, *, set_as_current: bool = True,
                 include: Iterable[str] | None = None, **conf: Any) -> None:
        global _current
        self.main = main
        self.conf = Settings(conf)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        self.include = list(include or [])
        self.tasks = TaskRegistry()
        self._transport: Transport | None = None
        self._backend: ResultBackend | None = None
        self._lock = threading.RLock()
        self._batch = threading.local()
        self._events: EventDispatcher | None = None
        self._signer: Signer | None | bool = False
        self._events_pid = 0
        from tqcore.builtins import register_builtins

        register_builtins(self)
        _apps.add(self)
        if set_as_current:
            with _current_lock:
                _current = self

    def set_current(self) -> None:
        """Make this the app that signatures and results without one default to."""
        global _current
        with _current_lock:
            _current = self

    # -- connections -------------------------------------------------------------
    @property
    def transport(self) -> Transport:
        """The broker transport (opened on first use)."""
        if self._transport is None:
            with self._lock:
                if self._transport is None:
                    self._transport = from_url(
                        self.conf.broker(), max_deliveries=int(self.conf.broker_max_deliveries))
        return self._transport

    @property
    def backend(self) -> ResultBackend:
        """The result backend (opened on first use)."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    expires = self.conf.result_expires
                    if isinstance(expires, dt.timedelta):
                        expires = expires.total_seconds()
                    self._backend = backend_from_url(
                        self.conf.backend(), expires=expires,
                        extended=bool(self.conf.result_extended))
        return self._backend

    def close(self) -> None:
        """Close the broker and backend connections."""
        if self._transport is not None:
            self._transport.close()
        if self._backend is not None:
            self._backend.close()
        self._transport = None
        self._backend = None
        self._events = None  # its dispatcher holds the closed transport

    # -- tasks -------------------------------------------------------------------
    def task(self, *args: Any, **opts: Any) -> Any:
        """Decorator making a function a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._task_from_fun(args[0])

        def decorate(fun: Callable[..., Any]) -> BaseTask:
            return self._task_from_fun(fun, **opts)

        return decorate

    shared_task = task

    def gen_task_name(self, name: str, module: str) -> str:
        """A task's default name: ``module.function`` (``main`` replaces ``__main__``)."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    def _task_from_fun(self, fun: Callable[..., Any], name: str | None = None,
                       base: type[BaseTask] | None = None, bind: bool = False,
                       **options: Any) -> BaseTask:
        name = name or self.gen_task_name(fun.__name__, fun.__module__)
        if name in self.tasks and getattr(self.tasks[name], "__wrapped__", None) is fun:
            return self.tasks[name]
        base = base or self.Task
        for key in ("autoretry_for", "dont_autoretry_for", "throws"):
            if key in options and options[key] is not None:
                options[key] = tuple(options[key])
        attrs: dict[str, Any] = {
            "app": self, "name": name, "run": fun if bind else staticmethod(fun),
            "__doc__": fun.__doc__, "__module__": fun.__module__, "__wrapped__": fun,
            "_bind": bind, **options,
        }
        cls = type(fun.__name__, (base,), attrs)
        task: BaseTask = cls()
        add_autoretry(task)
        self.tasks[name] = task
        return task

    def register_task(self, task: BaseTask | type[BaseTask]) -> BaseTask:
        """Register a class-based task."""
        instance = task() if inspect.isclass(task) else task
        if not instance.name:
            type(instance).name = self.gen_task_name(type(instance).__name__,
                                                     type(instance).__module__)
        type(instance).app = self
        self.tasks[instance.name] = instance
        return instance

    # -- sending -----------------------------------------------------------------
    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature bound to this app."""
        kwargs["app"] = self
        from tqcore.canvas import signature

        return signature(*args, **kwargs)

    def route(self, name: str, args: Any = (), kwargs: Any = None,
              options: dict[str, Any] | None = None, task: BaseTask | None = None) -> str:
        """The queue for a task: explicit option, then ``task_routes``, then the task's
        ``queue``, then ``task_default_queue``."""
        options = options or {}
        if options.get("queue"):
            return str(options["queue"])
        routes = self.conf.task_routes
        for router in (routes if isinstance(routes, list | tuple) else [routes]) if routes else []:
            found = None
            if callable(router):
                found = router(name, args, kwargs, options, task=task)
            elif isinstance(router, dict):
                for pattern, route in router.items():
                    if pattern == name or fnmatch.fnmatchcase(name, pattern):
                        found = route
                        break
            if isinstance(found, str):
                return found
            if isinstance(found, dict) and found.get("queue"):
                return str(found["queue"])
        if task is not None and task.queue:
            return task.queue
        return str(self.conf.task_default_queue)

    def send_task(self, name: str, args: Iterable[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, countdown: float | None = None,
                  eta: dt.datetime | float | None = None, task_id: str | None = None,
                  expires: float | dt.datetime | None = None, link: Any = None,
                  link_error: Any = None, add_to_parent: bool = True,
                  group_id: str | None = None, group_index: int | None = None,
                  retries: int = 0, chord: Any = None, chain: Any = None,
                  root_id: str | None = None, parent_id: str | None = None,
                  queue: str | None = None, priority: int | None = None,
                  headers: dict[str, Any] | None = None, ignore_result: bool | None = None,
                  time_limit: float | None = None, soft_time_limit: float | None = None,
                  shadow: str | None = None, reply_to: str | None = None,
                  replaced_task_nesting: int = 0, task_type: BaseTask | None = None,
                  **options: Any) -> AsyncResult:
        """Send a task by name (it need not be registered here).

        Returns:
            The :class:`AsyncResult` for the new task id.
        """
        task_id = task_id or uuid4()
        args = tuple(args) if args else ()
        kwargs = dict(kwargs) if kwargs else {}
        parent = context.current()
        if parent is not None and parent[1].id:
            parent_req = parent[1]
            parent_id = parent_id or parent_req.id
            root_id = root_id or parent_req.root_id or parent_req.id
        # Settings' attribute access is a __getattr__ fallback (~0.4 us a lookup): this
        # path reads the mapping behind it.
        settings = self.conf._data
        eta_ts: float | None = None
        if countdown is not None:
            eta_ts = time.time() + float(countdown)
        elif eta is not None:
            eta_ts = message.parse_time(eta)
        exp_ts: float | None = None
        if expires is None:
            pass
        elif isinstance(expires, (int, float)):  # a tuple: quicker than int | float
            exp_ts = time.time() + float(expires)
        else:
            exp_ts = message.parse_time(expires)
        if queue:
            queue = str(queue)
        else:
            if settings.get("task_routes") or type(self).route is not App.route:
                queue = self.route(name, args, kwargs, {"queue": queue, **options}, task_type)
            else:  # route()'s answer without routers, minus its call
                queue = (task_type.queue if task_type is not None and task_type.queue
                         else str(settings.get("task_default_queue")))
        if priority is None:
            priority = settings.get("task_default_priority")
        argsrepr = message.saferepr(args) if args else "()"
        kwargsrepr = message.saferepr(kwargs) if kwargs else "{}"
        tag = uuid4()
        signer = self.signer
        if signer is None and not headers and not (link or link_error or chain or chord):
            payload = message.build_plain_task(
                name, task_id, args, kwargs, queue, priority, eta_ts, exp_ts, retries,
                group_id, group_index, root_id, parent_id, time_limit, soft_time_limit,
                bool(ignore_result), shadow, reply_to, replaced_task_nesting, tag, argsrepr,
                kwargsrepr)
        else:
            payload = message.build_task(
                name, task_id, args, kwargs, queue=queue, priority=priority, eta=eta_ts,
                expires=exp_ts, retries=retries, group_id=group_id, group_index=group_index,
                root_id=root_id, parent_id=parent_id,
                callbacks=_sig_list(link), errbacks=_sig_list(link_error),
                chain=to_dict(chain) if chain else None,
                chord=to_dict(chord) if chord else None, time_limit=time_limit,
                soft_time_limit=soft_time_limit, ignore_result=bool(ignore_result),
                shadow=shadow, reply_to=reply_to, replaced_task_nesting=replaced_task_nesting,
                extra_headers=headers, signer=signer, delivery_tag=tag, argsrepr=argsrepr,
                kwargsrepr=kwargsrepr)
        # The tag tells the transport the payload is an envelope built here (no re-parse).
        out = OutgoingMessage(queue, payload, priority or 0, eta_ts, task_id, tag)
        sent = None
        if settings.get("task_send_sent_event"):
            chord_id = ((to_dict(chord) or {}).get("options") or {}).get("task_id") if chord \
                else None
            events = self.events
            sent = events.task_sent(
                task_id, root_id or task_id, parent_id, name, argsrepr, kwargsrepr, retries,
                message.isoformat(eta_ts), message.isoformat(exp_ts), queue, group_id,
                group_index, chord_id, priority)
        # (the thread's own dict: getattr() of a missing thread-local costs an exception)
        batch: list[OutgoingMessage] | None = self._batch.__dict__.get("messages")
        if batch is not None:
            batch.append(out)
            if sent is not None:
                self._batch.events.append(sent)
        elif sent is not None:
            events.enqueue_with_sent([out], [sent])  # one round trip for both
        else:
            self.transport.enqueue_many([out])
        result = AsyncResult(task_id, task_name=name, app=self)
        if add_to_parent and parent is not None and parent[1].id and parent[0].trail:
            parent[1].children.append(result)
        return result

    @contextlib.contextmanager
    def producer_batch(self) -> Iterator[None]:
        """Collect the messages sent inside the block and publish them in one round trip
        (with their ``task-sent`` events as one ``task.multi`` message)."""
        if self._batch.__dict__.get("messages") is not None:
            yield
            return
        self._batch.messages = []
        self._batch.events = []
        try:
            yield
            messages, sent = self._batch.messages, self._batch.events
        finally:
            self._batch.messages = None
            self._batch.events = None
        if sent:
            self.events.enqueue_with_sent(messages, sent)
        else:
            self.transport.enqueue_many(messages)

    # -- periodic tasks and locks --------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Iterable[Any] = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **opts: Any) -> str:
        """Run ``sig`` on ``schedule`` when beat runs (adds to ``conf.beat_schedule``).

        Args:
            schedule: seconds, a timedelta, ``crontab(...)`` or ``schedule(...)``.
            sig: a signature (``add.s(2, 2)``), a canvas, a task or a task name.
            args: positional arguments appended to the signature's.
            kwargs: keyword arguments merged over the signature's.
            name: the entry's name (default: the signature's repr).
            **opts: ``apply_async`` options (``queue``, ``expires``, ...).

        Returns:
            The entry's name.
        """
        from tqcore.beat import add_periodic_task

        return add_periodic_task(self, schedule, sig, args=args, kwargs=kwargs, name=name,
                                 **opts)

    def lock(self, name: str, timeout: float | None = None, blocking: bool = True,
             blocking_timeout: float | None = None, **kwargs: Any) -> Lock:
        """A distributed lock in the broker's store: ``with app.lock("report", timeout=60):``.

        Args:
            name: the lock's name.
            timeout: seconds the lock lives once taken; None renews it while held.
            blocking: wait while another owner holds it.
            blocking_timeout: most seconds to wait (None: forever).
            **kwargs: more :class:`~tqcore.locks.Lock` options.
        """
        from tqcore.locks import app_lock

        return app_lock(self, name, timeout=timeout, blocking=blocking,
                        blocking_timeout=blocking_timeout, **kwargs)

    # -- results and control -------------------------------------------------------
    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        """The result object for ``task_id``."""
        return AsyncResult(task_id, app=self, **kwargs)

    def GroupResult(self, group_id: str, results: Any = None, **kwargs: Any) -> GroupResult:  # noqa: N802
        """A group result bound to this app."""
        return GroupResult(group_id, results, app=self, **kwargs)

    @property
    def signer(self) -> Signer | None:
        """The message signer when ``security_key`` is set (else None)."""
        if self._signer is False:
            from tqcore.signing import signer_for

            self._signer = signer_for(self.conf)
        return self._signer  # type: ignore[return-value]

    @property
    def control(self) -> Control:
        """Remote control of the workers (``app.control.inspect().active()``, ...)."""
        from tqcore.control import Control

        return Control(self)

    @property
    def events(self) -> EventDispatcher:
        """This producer's event dispatcher (``task-sent`` events)."""
        if self._events is None or self._events_pid != os.getpid():
            from tqcore.events.dispatcher import EventDispatcher

            self._events = EventDispatcher(self.transport, message.origin_name(),
                                           buffer_limit=0)
            self._events_pid = os.getpid()
        return self._events

    def control_revoke(self, task_ids: Iterable[str], terminate: bool = False,
                       signal: str | None = None) -> None:
        """Revoke tasks: persisted in the backend, so every worker (even one started
        later) discards them, and broadcast to the running workers."""
        self.control.revoke(list(task_ids), terminate=terminate, signal=signal or "SIGTERM")

    def __repr__(self) -> str:
        return f"<App {self.main}>"


def _sig_list(value: Any) -> list[dict[str, Any]] | None:
    if not value:
        return None
    if isinstance(value, dict):
        value = [value]
    return [to_dict(s) for s in value]
