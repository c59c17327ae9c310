"""Re-running failed tasks from their original stored message (``tqcore retry``).

A worker keeps the original message of every task that ended in FAILURE (bounded,
expiring with results). Retrying re-publishes those exact bytes — same task id, same
args, same workflow links — with a fresh delivery tag and headers recording the manual
retry (``x_tq_retry_of``, ``x_tq_manual_retries``), resets the stored state to PENDING
so waiters see the new run, and announces it with a ``task-sent`` event. Selection is by
ids, task name, exception type or failure signature; a dry run lists the plan only.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from tqcore.backends.base import FailedMessage
from tqcore.exceptions import DecodeError, TqError
from tqcore.message import decode_envelope

if TYPE_CHECKING:
    from tqcore.app import App


def select_failed(app: App, task_ids: list[str] | None = None, *, name: str | None = None,
                  exc_type: str | None = None, signature: str | None = None,
                  limit: int = 1000) -> list[FailedMessage]:
    """The kept failed messages matching every given filter, newest first.

    Raises:
        TqError: no filter at all (a bulk retry must say what it targets).
    """
    if not task_ids and not (name or exc_type or signature):
        raise TqError("say which failed tasks to retry: ids, a name, an exception type or"
                      " a signature")
    return app.backend.find_failed(task_ids or None, name=name, exc_type=exc_type,
                                   signature=signature, limit=limit)


def republish(app: App, failed: FailedMessage) -> None:
    """Re-publish one failed task's original message as a new attempt."""
    try:
        env = decode_envelope(failed.payload)
    except DecodeError as exc:
        raise TqError(f"stored message of {failed.task_id} is unreadable: {exc}") from None
    headers = dict(env.headers)
    headers["x_tq_retry_of"] = failed.task_id
    headers["x_tq_manual_retries"] = failed.retried + 1
    headers["x_tq_retried_at"] = time.time()
    headers["eta"] = None  # run now, not at the original countdown
    props = dict(env.properties)
    props["delivery_tag"] = str(uuid.uuid4())
    env.headers, env.properties = headers, props
    if app.signer is not None:
        app.signer.sign_envelope(env)
    priority = int(props.get("priority") or 0)
    app.backend.forget(failed.task_id)
    app.transport.enqueue(failed.queue, env.encode(), priority=priority,
                          message_id=failed.task_id)
    app.backend.mark_retried(failed.task_id)
    if app.conf.task_send_sent_event:
        app.events.send("task-sent", uuid=failed.task_id, name=failed.name,
                        root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
                        args=headers.get("argsrepr"), kwargs=headers.get("kwargsrepr"),
                        retries=headers.get("retries", 0), queue=failed.queue,
                        group=headers.get("group"), retry_of=failed.task_id)


def retry_failed(app: App, task_ids: list[str] | None = None, *, name: str | None = None,
                 exc_type: str | None = None, signature: str | None = None,
                 dry_run: bool = False, limit: int = 1000) -> dict[str, Any]:
    """Retry the selected failed tasks (or only list them with ``dry_run``).

    Returns:
        ``{"selected": [summaries], "sent": [ids], "missing": [ids], "errors": {id: why}}``;
        ``missing`` are requested ids with no kept message (never failed, or expired).
    """
    found = select_failed(app, task_ids, name=name, exc_type=exc_type, signature=signature,
                          limit=limit)
    missing = [t for t in task_ids or [] if t not in {f.task_id for f in found}]
    out: dict[str, Any] = {"selected": [f.summary() for f in found], "sent": [],
                           "missing": missing, "errors": {}, "dry_run": dry_run}
    if dry_run:
        return out
    for failed in found:
        try:
            republish(app, failed)
            out["sent"].append(failed.task_id)
        except TqError as exc:
            out["errors"][failed.task_id] = str(exc)
    return out


