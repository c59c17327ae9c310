"""Running one task invocation: handlers, state, links, chain and chord continuation.

:func:`trace_task` is what a pool executes (in a thread, the worker's own thread, or a
child process) and what eager mode calls. It never raises for a task's exception: it
returns an :class:`Outcome` that says what happened, and the worker settles the
message from it. Order follows Celery's tracer: callbacks and the next chain step are
sent *before* the result is stored (so ``children`` is complete), and the chord join
runs after it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
import traceback as tb_module
from typing import TYPE_CHECKING, Any

from tqcore import context, states
from tqcore.backends.base import CHORD_CLAIM_TTL
from tqcore.canvas import Signature, _chain, group, signature
from tqcore.canvas.signature import JSONList
from tqcore.context import Context
from tqcore.exception_codec import exception_from_meta, exception_to_meta
from tqcore.exceptions import ChordError, Ignore, Reject, Retry
from tqcore.message import saferepr
from tqcore.message_chain import MessageChain

if TYPE_CHECKING:
    from tqcore.app import App
    from tqcore.task import Task

logger = logging.getLogger("tqcore.worker")


@dataclasses.dataclass(slots=True)
class Outcome:
    """What a task invocation ended in.

    Attributes:
        state: SUCCESS, FAILURE, RETRY, IGNORED or REJECTED.
        retval: the return value (SUCCESS) or the exception.
        traceback: the formatted traceback of a failure.
        runtime: seconds spent in the task body.
        requeue: for REJECTED, whether the message goes back to the queue.
        expected: the failure was declared in ``throws`` (logged without traceback).
    """

    state: str
    retval: Any = None
    traceback: str | None = None
    runtime: float = 0.0
    requeue: bool = False
    expected: bool = False
    eager_result: Any = None


@dataclasses.dataclass(slots=True)
class Report:
    """A plain summary of an :class:`Outcome`: what the worker's parent process needs
    (events, settling) and all that crosses the pipe from a pool child."""

    state: str
    runtime: float = 0.0
    result: str | None = None
    exc_type: str | None = None
    exc_message: str | None = None
    exception: str | None = None
    traceback: str | None = None
    requeue: bool = False
    expected: bool = False

    def wire(self) -> tuple[Any, ...]:
        """The fields as a plain tuple, for a pipe (``Report(*t)`` rebuilds it): a
        tuple pickles several times faster than a slotted dataclass."""
        return (self.state, self.runtime, self.result, self.exc_type, self.exc_message,
                self.exception, self.traceback, self.requeue, self.expected)


def report_of(outcome: Outcome) -> Report:
    """The :class:`Report` of an outcome."""
    state, value = outcome.state, outcome.retval
    rep = Report(state, outcome.runtime, traceback=outcome.traceback, requeue=outcome.requeue,
                 expected=outcome.expected)
    if state == states.SUCCESS:
        rep.result = saferepr(value)
    elif isinstance(value, BaseException):
        exc = value.exc if isinstance(value, Retry) and value.exc is not None else value
        rep.exc_type, rep.exc_message = type(exc).__name__, str(exc)[:1024]
        rep.exception = saferepr(exc)
    return rep


def trace_task(app: App, task: Task, request: Context, *, eager: bool = False) -> Outcome:
    """Run ``task`` for ``request`` and handle every outcome. Never raises ``Exception``."""
    task_id: str = request.id or ""
    args, kwargs = request.args or [], request.kwargs or {}
    store = not eager or bool(app.conf.task_store_eager_result)
    ignore = bool(request.ignore_result) or task.effective_ignore_result
    context.push(task, request)
    start = time.perf_counter()
    outcome: Outcome
    try:
        try:
            task.before_start(task_id, args, kwargs)
            if store and not ignore and task.effective_track_started:
                app.backend.mark_as_started(task_id, request, pid=os.getpid(),
                                            hostname=request.hostname)
            retval = task(*args, **kwargs)
        except Retry as exc:
            outcome = _on_retry(app, task, request, exc, store and not ignore, start)
        except Ignore:
            outcome = Outcome(states.IGNORED, runtime=time.perf_counter() - start)
        except Reject as exc:
            outcome = Outcome(states.REJECTED, exc, runtime=time.perf_counter() - start,
                              requeue=bool(exc.requeue))
        except Exception as exc:
            outcome = on_failure(app, task, request, exc, store, ignore, start, eager)
        else:
            outcome = _on_success(app, task, request, retval, store and not ignore, start)
        try:
            task.after_return(outcome.state, outcome.retval, task_id, args, kwargs, None)
        except Exception:
            logger.exception("Task %s[%s] after_return handler raised", task.name, task_id)
        return outcome
    finally:
        context.pop()


def _on_success(app: App, task: Task, request: Context, retval: Any, store: bool,
                start: float) -> Outcome:
    runtime = time.perf_counter() - start
    tid: str = request.id or ""
    try:
        _send_callbacks(app, request, retval)
        if store:
            app.backend.mark_as_done(tid, retval, request)
        if request.chord:
            on_chord_part_return(app, request, states.SUCCESS, retval)
        task.on_success(retval, tid, request.args, request.kwargs)
    except Exception as exc:
        # The body returned but its result could not be recorded or passed on (for
        # example a value JSON cannot carry): that is the task's failure.
        return on_failure(app, task, request, exc, store, False, start, bool(request.is_eager))
    if logger.isEnabledFor(logging.INFO):  # the repr is not free: only when it is shown
        logger.info("Task %s[%s] succeeded in %.6fs: %s", task.name, request.id, runtime,
                    saferepr(retval, 200))
    return Outcome(states.SUCCESS, retval, runtime=runtime)


def _on_retry(app: App, task: Task, request: Context, exc: Retry, store: bool,
              start: float) -> Outcome:
    runtime = time.perf_counter() - start
    tid: str = request.id or ""
    reason = exc.exc if exc.exc is not None else exc
    tb = _format_tb(reason)
    if store:
        try:
            app.backend.mark_as_retry(tid, reason, tb, request)
        except Exception:
            logger.exception("Task %s[%s] could not store RETRY", task.name, request.id)
    try:
        task.on_retry(reason, tid, request.args, request.kwargs, None)
    except Exception:
        logger.exception("Task %s[%s] on_retry handler raised", task.name, request.id)
    logger.info("Task %s[%s] retry: %s", task.name, request.id, exc)
    eager = getattr(exc.sig, "_eager_result", None)
    return Outcome(states.RETRY, exc, tb, runtime, eager_result=eager)


def on_failure(app: App, task: Task, request: Context, exc: BaseException, store: bool,
               ignore: bool, start: float, eager: bool) -> Outcome:
    """Record a failure as Celery does: FAILURE stored, the rest of the chain failed,
    errbacks called, the chord told, ``on_failure`` run, the failure logged."""
    runtime = time.perf_counter() - start
    tid: str = request.id or ""
    tb = _format_tb(exc)
    expected = bool(task.throws) and isinstance(exc, tuple(task.throws))
    if store and request.raw_payload:
        _keep_failed(app, request, exc, tb)  # before FAILURE is visible: retry finds it
    if store and (not ignore or task.store_errors_even_if_ignored):
        try:
            app.backend.mark_as_failure(tid, exc, tb, request)
        except Exception:
            logger.exception("Task %s[%s] could not store FAILURE", task.name, request.id)
    if store:
        _fail_rest_of_chain(app, request, exc, tb)
    try:
        call_errbacks(app, request, exc, tb)
    except Exception:
        logger.exception("Task %s[%s] errback raised", task.name, request.id)
    if request.chord:
        try:
            on_chord_part_return(app, request, states.FAILURE, exc)
        except Exception:
            logger.exception("Task %s[%s] chord join failed", task.name, request.id)
    try:
        task.on_failure(exc, tid, request.args, request.kwargs, None)
    except Exception:
        logger.exception("Task %s[%s] on_failure handler raised", task.name, request.id)
    if expected:
        logger.info("Task %s[%s] raised expected: %r", task.name, request.id, exc)
    else:
        logger.error("Task %s[%s] raised unexpected: %r\n%s", task.name, request.id, exc, tb)
    return Outcome(states.FAILURE, exc, tb, runtime, expected=expected)


def _keep_failed(app: App, request: Context, exc: BaseException, tb: str | None) -> None:
    """Keep the failed task's original message so ``retry`` can re-publish it exactly."""
    from tqcore.backends.base import FailedMessage
    from tqcore.events.signatures import signature_of

    sig_id = signature_of(type(exc).__name__, str(exc)[:1024], saferepr(exc), tb)[0]
    queue = (request.delivery_info or {}).get("routing_key") or "celery"
    try:
        app.backend.save_failed(FailedMessage(request.id or "", request.task or "", str(queue),
                                              request.raw_payload or b"", type(exc).__name__, sig_id,
                                              time.time()))
    except Exception:
        logger.exception("could not keep the failed message of %s", request.id)


def _fail_rest_of_chain(app: App, request: Context, exc: BaseException, tb: str | None) -> None:
    """Store FAILURE for the chain steps that will now never run (as Celery does), so
    whoever waits on the last one is told, and chords they belong to complete."""
    for elem in request.chain or []:
        opts = elem.get("options") or {}
        step_id = opts.get("task_id")
        if step_id is None:
            continue
        ctx = Context(id=step_id, task=elem.get("task"), group=opts.get("group_id"),
                      group_index=opts.get("group_index"), chord=opts.get("chord"),
                      root_id=opts.get("root_id"), parent_id=opts.get("parent_id"),
                      called_directly=False)
        try:
            app.backend.mark_as_failure(step_id, exc, tb, ctx)
            if ctx.chord:
                on_chord_part_return(app, ctx, states.FAILURE, exc)
        except Exception:
            logger.exception("could not fail chain step %s", step_id)


def _format_tb(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))


def _send_callbacks(app: App, request: Context, retval: Any) -> None:
    opts: dict[str, Any] = {"parent_id": request.id, "root_id": request.root_id or request.id}
    for cb in request.callbacks or []:
        signature(cb, app=app).apply_async((retval,), **opts)
    # the steps left come from the decoded message: plain JSON, nothing to copy
    steps = request.chain
    chain = JSONList(steps or [])
    if chain:
        nxt = signature(chain.pop(), app=app)
        if chain and (isinstance(nxt, group | _chain) or nxt.subtask_type):
            _chain(nxt, *[signature(s, app=app) for s in reversed(chain)],
                   app=app).apply_async((retval,), **opts)
        elif chain:
            # Their text as the message had it, rather than encoded again (see
            # tqcore.message_chain): a long chain's steps cost its length otherwise.
            rest = steps.rest() if type(steps) is MessageChain else None
            nxt.apply_async((retval,), chain=chain if rest is None else rest, **opts)
        else:
            nxt.apply_async((retval,), **opts)


def call_errbacks(app: App, request: Context, exc: BaseException, tb: str | None) -> None:
    """Call ``request``'s errbacks as Celery does.

    An errback task taking more than one argument is called here, in this process, as
    ``errback(request, exc, traceback)``; any other is sent with the task id.
    """
    old_style: list[Signature] = []
    for errback in request.errbacks or []:
        sig = signature(errback, app=app)
        if not sig.immutable and sig.task in app.tasks and _arity(app.tasks[sig.task]) > 1:
            sig(request, exc, tb)
        else:
            old_style.append(sig)
    for sig in old_style:
        sig.apply_async((request.id,), parent_id=request.id,
                        root_id=request.root_id or request.id)


def _arity(task: Task) -> int:
    fun = getattr(task, "__wrapped__", None) or task.run
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return 0
    if getattr(task, "_bind", False) and params:
        params = params[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 99
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


def on_chord_part_return(app: App, request: Context, state: str, result: Any) -> None:
    """Record this header member in the chord join; the last one fires the body once."""
    body = request.chord
    group_id = request.group
    if not isinstance(body, dict) or not group_id:
        return
    size = int(body.get("chord_size") or 0)
    stored = exception_to_meta(result) if isinstance(result, BaseException) else result
    backend = app.backend

    def report() -> list[Any] | None:
        return backend.chord_part_return(group_id, int(request.group_index or 0),
                                         request.id or "", state, stored, size)

    parts = report()
    while parts is None:
        # Someone claimed the body and has not published it yet. If they died in
        # between, their claim lapses after CHORD_CLAIM_TTL and we take over.
        age = backend.chord_claim_age(group_id)
        if age is None:
            return
        time.sleep(min(0.2, max(0.02, CHORD_CLAIM_TTL - age)))
        parts = report()
    body_sig = signature(body, app=app)
    failed = next((p for p in parts if p.status != states.SUCCESS), None)
    if failed is not None:
        cause = exception_from_meta(failed.result, app)
        chord_error(app, body_sig, ChordError(f"Dependency {failed.task_id} raised {cause!r}"))
    else:
        body_sig.apply_async(([p.result for p in parts],), parent_id=request.id,
                             root_id=request.root_id or request.id)
    backend.chord_done(group_id)


def chord_error(app: App, body: Signature, exc: BaseException) -> None:
    """Fail a chord body that cannot run: store FAILURE for it (every step of a chain
    body, so whoever waits on the last one wakes up) and call its errbacks once."""
    steps = _flatten(body)
    first, last = steps[0], steps[-1]
    fake = Context(id=first.id, task=first.task, errbacks=first.options.get("link_error"),
                   root_id=first.options.get("root_id"), args=list(first.args),
                   kwargs=dict(first.kwargs), called_directly=False)
    try:
        call_errbacks(app, fake, exc, None)
    finally:
        for step in steps:
            if step.id:
                app.backend.mark_as_failure(step.id, exc, None, None)
        if last.options.get("chord") and last.id:
            parent = Context(id=last.id, task=last.task, chord=last.options["chord"],
                             group=last.options.get("group_id"),
                             group_index=last.options.get("group_index"),
                             root_id=last.options.get("root_id"), called_directly=False)
            on_chord_part_return(app, parent, states.FAILURE, exc)


def _flatten(sig: Signature) -> list[Signature]:
    if isinstance(sig, _chain) and sig.tasks:
        return [s for t in sig.tasks for s in _flatten(t)]
    return [sig]
