"""The :class:`Task` base class that ``@app.task`` subclasses (Celery's options and methods)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from tqcore import context, states
from tqcore.canvas import Signature, chunks, group, signature, xmap, xstarmap
from tqcore.exceptions import Ignore, MaxRetriesExceededError, Retry

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.result import AsyncResult


class Task:
    """A task type. ``@app.task`` makes a subclass whose ``run`` is the function.

    Class attributes are the options (Celery's names and defaults); None means "use
    the app setting".
    """

    app: ClassVar[App]
    name: ClassVar[str] = ""
    typing: ClassVar[bool] = True
    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float | None] = None
    rate_limit: ClassVar[str | None] = None
    ignore_result: ClassVar[bool | None] = None
    store_errors_even_if_ignored: ClassVar[bool] = False
    track_started: ClassVar[bool | None] = None
    acks_late: ClassVar[bool | None] = None
    reject_on_worker_lost: ClassVar[bool | None] = None
    time_limit: ClassVar[float | None] = None
    soft_time_limit: ClassVar[float | None] = None
    expires: ClassVar[float | dt.datetime | None] = None
    priority: ClassVar[int | None] = None
    queue: ClassVar[str | None] = None
    throws: ClassVar[tuple[type[BaseException], ...]] = ()
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: ClassVar[bool | int] = False
    retry_backoff_max: ClassVar[int] = 600
    retry_jitter: ClassVar[bool] = True
    serializer: ClassVar[str] = "json"
    trail: ClassVar[bool] = True
    send_events: ClassVar[bool] = True
    resultrepr_maxsize: ClassVar[int] = 1024
    MaxRetriesExceededError = MaxRetriesExceededError

    # -- running ----------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The task body (replaced by the decorated function)."""
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body in this process (as Celery: no message, no result stored)."""
        running = context.current()
        if running is not None and running[0] is self:
            return self.run(*args, **kwargs)
        context.push(self, context.Context(id=None, task=self.name, args=args, kwargs=kwargs,
                                           called_directly=True))
        try:
            return self.run(*args, **kwargs)
        finally:
            context.pop()

    @property
    def request(self) -> context.Context:
        """The current invocation's context (empty when not running)."""
        return context.request_for(self)

    @property
    def backend(self) -> Any:
        """The app's result backend."""
        return self.app.backend

    def _opt(self, name: str, setting: str) -> Any:
        value = getattr(self, name)
        return self.app.conf.get(setting) if value is None else value

    @property
    def effective_acks_late(self) -> bool:
        """``acks_late`` with the app default applied."""
        return bool(self._opt("acks_late", "task_acks_late"))

    @property
    def effective_ignore_result(self) -> bool:
        """``ignore_result`` with the app default applied."""
        return bool(self._opt("ignore_result", "task_ignore_result"))

    @property
    def effective_track_started(self) -> bool:
        """``track_started`` with the app default applied."""
        return bool(self._opt("track_started", "task_track_started"))

    # -- calling ----------------------------------------------------------------
    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task with these arguments: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    task_id: str | None = None, link: Any = None, link_error: Any = None,
                    **options: Any) -> AsyncResult:
        """Send the task to a worker (or run it here with ``task_always_eager``).

        Args:
            args: positional arguments.
            kwargs: keyword arguments.
            task_id: the id to use (a new uuid4 by default).
            link: signature(s) applied with the result on success.
            link_error: signature(s) applied on failure.
            **options: ``countdown``, ``eta``, ``expires``, ``queue``, ``priority``,
                ``headers``, ``ignore_result``, ``time_limit``, ``soft_time_limit``, ...

        Raises:
            ValueError: ``soft_time_limit`` above ``time_limit``.
        """
        hard = options.get("time_limit", self.time_limit)
        soft = options.get("soft_time_limit", self.soft_time_limit)
        if hard is not None and soft is not None and soft > hard:
            raise ValueError(f"soft_time_limit ({soft}) must not exceed time_limit ({hard})")
        app = self.app
        if app.conf._data.get("task_always_eager"):  # the mapping: no __getattr__ per call
            return self.apply(args, kwargs, task_id=task_id, link=link, link_error=link_error,
                              **options)
        # The task's own defaults fill the options not given (or given as None).
        if self.time_limit is not None and options.get("time_limit") is None:
            options["time_limit"] = self.time_limit
        if self.soft_time_limit is not None and options.get("soft_time_limit") is None:
            options["soft_time_limit"] = self.soft_time_limit
        if self.expires is not None and options.get("expires") is None:
            options["expires"] = self.expires
        if self.priority is not None and options.get("priority") is None:
            options["priority"] = self.priority
        if self.ignore_result is not None and options.get("ignore_result") is None:
            options["ignore_result"] = self.ignore_result
        return app.send_task(self.name, args, kwargs, task_id=task_id, link=link,
                             link_error=link_error, task_type=self, **options)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              link: Any = None, link_error: Any = None, task_id: str | None = None,
              retries: int = 0, throw: bool | None = None, **options: Any) -> AsyncResult:
        """Run the task in this process now and return an eager result."""
        from tqcore.eager import apply_eagerly

        return apply_eagerly(self, tuple(args or ()), dict(kwargs or {}), task_id=task_id,
                             link=link, link_error=link_error, retries=retries, throw=throw,
                             **options)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        """The result object for ``task_id``."""
        from tqcore.result import AsyncResult

        return AsyncResult(task_id, task_name=self.name, app=self.app, **kwargs)

    # -- signatures ---------------------------------------------------------------
    def signature(self, args: Iterable[Any] | None = None, *starargs: Any,
                  **starkwargs: Any) -> Signature:
        """A signature of this task: ``signature((2, 2), countdown=10)``."""
        starkwargs.setdefault("app", self.app)
        return signature(self, args, *starargs, **starkwargs)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial args: ``add.s(2, 2)``."""
        return Signature(self, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature (parent results are not passed in)."""
        return Signature(self, args, kwargs, immutable=True, app=self.app)

    def map(self, it: Iterable[Any]) -> xmap:
        """One task applying this task to every item."""
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> xstarmap:
        """One task applying this task to every item, unpacked."""
        return xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Any], n: int) -> chunks:
        """Split ``it`` into chunks of ``n`` items, one task each."""
        return chunks(self.s(), it, n, app=self.app)

    # -- inside a running task ------------------------------------------------------
    def retry(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True,
              eta: dt.datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Send this task again with ``retries + 1`` and raise :class:`Retry`.

        Raises:
            Retry: always (unless ``throw=False``): the worker records RETRY.
            MaxRetriesExceededError: (or ``exc``) when the retries are used up.
        """
        request = self.request
        retries = (request.retries or 0) + 1
        max_retries = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("Task can be retried only when called through a worker", exc, countdown)
        if max_retries is not None and retries > max_retries:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}", task_args=request.args, task_kwargs=request.kwargs)
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
            if countdown is None:
                countdown = self.app.conf.task_default_retry_delay
        sig = self.signature_from_request(request, args, kwargs, countdown=countdown, eta=eta,
                                          retries=retries, **options)
        ret = Retry(exc=exc, when=eta or countdown, is_eager=bool(request.is_eager), sig=sig)
        if request.is_eager:
            # run the next attempt now; the eager caller gets the last attempt's result
            sig._eager_result = sig.apply()  # type: ignore[attr-defined]
            ret.sig = sig
        else:
            sig.apply_async()
        if throw:
            raise ret
        return ret

    def signature_from_request(self, request: context.Context | None = None,
                               args: Iterable[Any] | None = None,
                               kwargs: dict[str, Any] | None = None, **extra: Any) -> Signature:
        """A signature that re-sends ``request`` (same id, links, workflow position)."""
        request = request or self.request
        options: dict[str, Any] = {
            "task_id": request.id, "link": request.callbacks, "link_error": request.errbacks,
            "group_id": request.group, "group_index": request.group_index,
            "chord": request.chord, "chain": request.chain, "root_id": request.root_id,
            "parent_id": request.parent_id, "reply_to": request.reply_to,
            "expires": request.expires, "headers": request.headers,
            "replaced_task_nesting": request.replaced_task_nesting,
        }
        limit = request.timelimit or [None, None]
        options["time_limit"], options["soft_time_limit"] = limit[0], limit[1]
        queue = (request.delivery_info or {}).get("routing_key")
        if queue:
            options["queue"] = queue
        priority = (request.delivery_info or {}).get("priority")
        if priority is not None:
            options["priority"] = priority
        options.update(extra)
        return Signature(self, args if args is not None else request.args,
                         kwargs if kwargs is not None else request.kwargs, options,
                         app=self.app)

    def replace(self, sig: Signature) -> Any:
        """Replace this task with ``sig``, which inherits its id, links and workflow place.

        Raises:
            Ignore: always; the worker records nothing for this task.
        """
        from tqcore.canvas import _chain

        request = self.request
        if isinstance(sig, group):
            sig = sig | self.app.tasks["celery.accumulate"].s(index=0)
        for cb in request.callbacks or []:
            sig.link(signature(cb, app=self.app))
        for eb in request.errbacks or []:
            sig.link_error(signature(eb, app=self.app))
        sig.freeze(request.id)
        nesting = (request.replaced_task_nesting or 0) + 1
        rest = [signature(t, app=self.app) for t in reversed(request.chain or [])]
        if rest:
            sig = _chain(sig, *rest, app=self.app)
        sig.set(chord=request.chord, group_id=request.group, group_index=request.group_index,
                root_id=request.root_id, parent_id=request.parent_id,
                replaced_task_nesting=nesting)
        return self.on_replace(sig)

    def on_replace(self, sig: Signature) -> Any:
        """Send the replacement and stop this task (override to customise)."""
        sig.apply_async()
        raise Ignore("Replaced by new task")

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a (custom) state for this task, e.g. ``PROGRESS`` with a meta dict."""
        task_id = task_id or self.request.id
        if task_id is None:
            return
        self.backend.store_result(task_id, meta, state or states.PENDING,
                                  request=self.request if task_id == self.request.id else None)

    def send_event(self, type_: str, **fields: Any) -> None:
        """Send a custom task event (delivered once the events channel is enabled)."""
        hook = getattr(self.app, "send_task_event", None)
        if hook is not None:
            hook(type_, uuid=self.request.id, **fields)

    # -- handlers (override in a base class) ----------------------------------------
    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Called by the worker before the task runs."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called by the worker when the task succeeded."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """Called by the worker when the task failed."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                 einfo: Any) -> None:
        """Called by the worker when the task is to be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
        """Called by the worker after the task returned (any outcome)."""

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"


def backoff_delay(factor: int, retries: int, maximum: float, full_jitter: bool) -> int:
    """Celery's exponential backoff: ``min(maximum, factor * 2**retries)``, fully jittered."""
    countdown = min(maximum, factor * (2 ** retries))
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return max(0, int(countdown))


def add_autoretry(task: Task) -> None:
    """Wrap ``task.run`` to retry on ``autoretry_for`` exceptions, as Celery does."""
    autoretry_for = tuple(task.autoretry_for or ())
    if not autoretry_for:
        return
    dont = tuple(task.dont_autoretry_for or ())
    retry_kwargs = dict(task.retry_kwargs or {})
    inner = task.run

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except (Ignore, Retry):
            raise
        except dont:
            raise
        except autoretry_for as exc:
            opts = dict(retry_kwargs)
            if task.retry_backoff:
                opts["countdown"] = backoff_delay(int(max(1.0, float(task.retry_backoff))),
                                                  task.request.retries or 0,
                                                  task.retry_backoff_max, task.retry_jitter)
            raise task.retry(exc=exc, **opts) from None

    task.run = run  # type: ignore[method-assign]

