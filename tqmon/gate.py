"""The command gate: every operator action goes through here, and only here.

:class:`CommandGate` turns an :class:`~tqmon.contracts.Action` (targets frozen by the UI at
confirmation time) into tqcore calls. It

* refuses **every** action in read-only mode, with a reason (tqmon-ux.md §3.7): the UI greys
  keys too, but the gate is what enforces it;
* says how dangerous an action is (:meth:`CommandGate.tier`, tqmon-ux.md §3.5) and what the
  equivalent ``tqcore`` command is (:meth:`CommandGate.describe`, for the confirmation modal
  and "copy as CLI");
* runs it (:meth:`CommandGate.run`, blocking: call it from a thread worker), in chunks for bulk
  revokes and retries, and returns one reply per worker with the expected workers that did not
  reply spelled out — "no reply" is never success;
* appends one JSON line per action, refused ones included, to the audit log: time, user, host,
  action, targets, command, result, replies, no-reply list and reason.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqcore.exceptions import TqError
from tqmon.contracts import Action, ActionResult

logger = logging.getLogger(__name__)

#: Every kind the gate knows (the read-only test enumerates these).
KINDS = ("revoke", "terminate", "retry", "retry_signature", "rate_limit", "pool_grow",
         "pool_shrink", "shutdown", "purge")
#: Signals a terminate may send.
SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")
#: Revoking more tasks than this is tier 3 (typed confirmation).
REVOKE_TIER3 = 1_000
#: Task ids per control broadcast / retry call in bulk actions.
CHUNK = 500
#: Targets written into one audit line at most (the count is always written).
AUDIT_TARGETS = 10_000

Progress = Callable[[int, int], None]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still audit
        return f"uid:{os.getuid()}"


class CommandGate:
    """Runs operator actions against one app, enforcing read-only mode and auditing.

    Args:
        app: the :class:`tqcore.App` whose broker and backend the actions use.
        read_only: refuse every action.
        audit_log_path: the JSON-lines audit log (None: actions are not audited — tests only).
        timeout: seconds to wait for control replies.
        clock: epoch seconds (tests inject a fake).
    """

    def __init__(self, app: Any, read_only: bool = False,
                 audit_log_path: str | os.PathLike[str] | None = None, *,
                 timeout: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self._read_only = bool(read_only)
        self.audit_log_path = Path(audit_log_path) if audit_log_path is not None else None
        self.timeout = timeout
        self.clock = clock
        self.user = _user()
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        #: The last error writing the audit log, if any (shown by the UI).
        self.audit_error: str | None = None
        if self.audit_log_path is not None:
            try:
                self.audit_log_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self.audit_error = f"cannot create {self.audit_log_path.parent}: {exc}"

    # -- mode ----------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        """True once read-only: it cannot be turned off again (``:ro`` is one-way)."""
        return self._read_only

    def set_read_only(self) -> None:
        """Switch to read-only for the rest of the session."""
        self._read_only = True

    # -- describing ----------------------------------------------------------------------
    def workers_of(self, action: Action) -> tuple[str, ...] | None:
        """The workers the control command goes to (None: every live worker)."""
        if action.destination:
            return tuple(action.destination)
        if action.kind in ("pool_grow", "pool_shrink", "shutdown") and action.targets:
            return tuple(action.targets)
        return None

    def describe(self, action: Action, max_ids: int | None = 50) -> str:
        """The equivalent ``tqcore`` command line.

        Args:
            action: the action.
            max_ids: list at most this many task ids, then ``… (+N more)``; None gives the
                exact, complete command (for "copy as CLI").
        """
        q = shlex.quote
        targets = [q(t) for t in action.targets]
        if max_ids is not None and len(targets) > max_ids:
            targets = [*targets[:max_ids], f"… (+{len(targets) - max_ids} more)"]
        workers = self.workers_of(action)
        dest = f" -d {q(','.join(workers))}" if workers else ""
        p = action.params
        kind = action.kind
        if kind == "revoke":
            return f"tqcore control revoke {' '.join(targets)}{dest}"
        if kind == "terminate":
            sig = q(str(p.get("signal") or "SIGTERM"))
            return f"tqcore control revoke {' '.join(targets)} --terminate --signal {sig}{dest}"
        if kind == "retry":
            return f"tqcore retry {' '.join(targets)}"
        if kind == "retry_signature":
            limit = p.get("limit")
            extra = f" --limit {int(limit)}" if limit else ""
            return f"tqcore retry --signature {' '.join(targets)}{extra}"
        if kind == "rate_limit":
            rate = p.get("rate")
            return f"tqcore control rate_limit {' '.join(targets)} {q(str(rate or 0))}{dest}"
        if kind in ("pool_grow", "pool_shrink"):
            return f"tqcore control {kind} {int(p.get('n', 1))}{dest}"
        if kind == "shutdown":
            return f"tqcore control shutdown{dest}"
        if kind == "purge":
            return f"tqcore purge {q(','.join(action.targets))} -f"
        return f"# unknown action {q(str(kind))}"

    def tier(self, action: Action) -> int:
        """Confirmation tier (tqmon-ux.md §3.5): 1 inline y/N, 2 blast-radius modal,
        3 modal plus typed confirmation."""
        kind, n = action.kind, len(action.targets)
        if kind == "purge":
            return 3
        if kind == "shutdown":
            workers = self.workers_of(action)
            return 2 if workers is not None and len(workers) == 1 else 3
        if kind in ("revoke", "terminate"):
            if n > REVOKE_TIER3:
                return 3
            return 1 if kind == "revoke" and n == 1 else 2
        if kind == "retry":
            return 1 if n == 1 else 2
        if kind == "retry_signature":
            return 2
        if kind == "rate_limit":
            return 1
        if kind in ("pool_grow", "pool_shrink"):
            workers = self.workers_of(action)
            one = workers is not None and len(workers) == 1
            return 1 if one and int(action.params.get("n", 1)) == 1 else 2
        return 3  # unknown: the most careful

    # -- running -------------------------------------------------------------------------
    def run(self, action: Action, *, reason: str = "", progress: Progress | None = None,
            cancelled: Callable[[], bool] | None = None) -> ActionResult:
        """Execute ``action`` (blocking) and audit it; never raises for broker trouble.

        Args:
            action: what to do, with frozen targets.
            reason: the operator's reason, written to the audit log.
            progress: called with ``(done, total)`` targets during bulk actions.
            cancelled: polled between chunks of a bulk action; True aborts the rest.
        """
        started = self.clock()
        refused = self._refusal(action)
        if refused is not None:
            result = ActionResult(action, False, f"refused: {refused}", refused=refused)
        else:
            try:
                result = self._execute(action, progress, cancelled or (lambda: False))
            except TqError as exc:
                result = ActionResult(action, False, f"{action.kind} failed: {exc}")
            except Exception as exc:  # a bug must not take the dashboard down
                logger.exception("action %s failed", action.kind)
                result = ActionResult(action, False, f"{action.kind} failed: {exc!r}")
        self._audit(result, reason, started)
        return result

    def record_refusal(self, kind: str, reason: str) -> None:
        """Audit an action the UI refused before it reached :meth:`run` (read-only key,
        broker down): every attempted action leaves a line, refused ones too."""
        action = Action(kind, ())  # type: ignore[arg-type]
        result = ActionResult(action, False, f"refused: {reason}", refused=reason)
        self._audit(result, "", self.clock())

    def _refusal(self, action: Action) -> str | None:
        kind = action.kind
        if self._read_only:
            return f"read-only: {kind} disabled"
        if kind not in KINDS:
            return f"unknown action {str(kind)[:40]!r}"
        if kind not in ("pool_grow", "pool_shrink", "shutdown") and not action.targets:
            return f"{kind}: no targets"
        if any(not isinstance(t, str) or not t for t in action.targets):
            return f"{kind}: targets must be non-empty strings"
        if kind == "shutdown" and not self.workers_of(action):
            return "shutdown: name the workers (an empty target list would stop them all)"
        if kind == "terminate" and str(action.params.get("signal") or "SIGTERM") not in SIGNALS:
            return f"terminate: signal must be one of {', '.join(SIGNALS)}"
        if kind in ("pool_grow", "pool_shrink"):
            n = action.params.get("n", 1)
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
                return f"{kind}: n must be an integer from 1 to 1000"
        if kind == "rate_limit" and len(action.targets) != 1:
            return "rate_limit: exactly one task name"
        return None

    def _execute(self, action: Action, progress: Progress | None,
                 cancelled: Callable[[], bool]) -> ActionResult:
        kind = action.kind
        if kind in ("revoke", "terminate"):
            return self._revoke(action, progress, cancelled)
        if kind in ("retry", "retry_signature"):
            return self._retry(action, progress, cancelled)
        if kind == "purge":
            return self._purge(action)
        p = action.params
        if kind == "rate_limit":
            rate = p.get("rate")
            args: dict[str, Any] = {"task_name": action.targets[0],
                                    "rate_limit": None if rate in (None, "", "0", 0) else rate}
        elif kind in ("pool_grow", "pool_shrink"):
            args = {"n": int(p.get("n", 1))}
        else:  # shutdown
            args = {"msg": f"tqmon: {self.user}@{self.host}"}
        return self._control(action, kind, args)

    def _control(self, action: Action, command: str, arguments: dict[str, Any],
                 label: str | None = None) -> ActionResult:
        control = self.app.control
        dest = self.workers_of(action)
        expected = control.expected_nodes(list(dest) if dest else None)
        raw = control.broadcast(command, arguments, destination=list(dest) if dest else None,
                                reply=True, timeout=self.timeout, limit=len(expected) or None)
        replies: dict[str, Any] = {}
        for reply in raw:
            replies.update(reply)
        return self._summarise(action, label or command, replies, expected)

    def _summarise(self, action: Action, label: str, replies: dict[str, Any],
                   expected: Sequence[str], note: str = "") -> ActionResult:
        missing = tuple(n for n in expected if n not in replies)
        errors = sorted(n for n, v in replies.items() if isinstance(v, dict) and "error" in v)
        ok_count = len(replies) - len(errors)
        total = len(set(expected) | set(replies))
        parts = [f"{label}: {ok_count}/{total} worker{'s' if total != 1 else ''} ok"]
        if errors:
            parts.append(f"{len(errors)} error ({', '.join(errors[:3])})")
        if missing:
            shown = ", ".join(missing[:3]) + ("…" if len(missing) > 3 else "")
            parts.append(f"{len(missing)} no reply in {self.timeout:g}s ({shown})")
        if note:
            parts.append(note)
        ok = not errors and not missing and total > 0
        return ActionResult(action, ok, " · ".join(parts), replies=replies, no_reply=missing)

    def _revoke(self, action: Action, progress: Progress | None,
                cancelled: Callable[[], bool]) -> ActionResult:
        terminate = action.kind == "terminate"
        signal = str(action.params.get("signal") or "SIGTERM")
        ids = list(action.targets)
        control = self.app.control
        dest = self.workers_of(action)
        expected = control.expected_nodes(list(dest) if dest else None)
        replies: dict[str, Any] = {}
        silent: set[str] = set()
        done = 0
        for start in range(0, len(ids), CHUNK):
            if cancelled():
                break
            chunk = ids[start:start + CHUNK]
            self.app.backend.add_revoked(chunk)  # persisted: workers started later honour it
            raw = control.broadcast("revoke", {"task_id": chunk, "terminate": terminate,
                                               "signal": signal},
                                    destination=list(dest) if dest else None, reply=True,
                                    timeout=self.timeout, limit=len(expected) or None)
            got: dict[str, Any] = {}
            for reply in raw:
                got.update(reply)
            silent.update(n for n in expected if n not in got)
            replies.update(got)
            done += len(chunk)
            if progress is not None:
                progress(done, len(ids))
        for node in silent:  # a worker that missed any chunk did not get the whole action
            replies.pop(node, None)
        label = "terminate" if terminate else "revoke"
        note = f"{done} task{'s' if done != 1 else ''} revoked (persisted)"
        if done < len(ids):
            note += f", aborted: {len(ids) - done} not sent"
        if not expected and not replies:
            ok = done == len(ids)
            return ActionResult(action, ok, f"{label}: {note}; no live workers to tell")
        result = self._summarise(action, label, replies, expected, note)
        if done < len(ids):
            return ActionResult(action, False, result.summary, replies=result.replies,
                                no_reply=result.no_reply)
        return result

    def _retry(self, action: Action, progress: Progress | None,
               cancelled: Callable[[], bool]) -> ActionResult:
        from tqcore.retry import retry_failed

        outcome: dict[str, Any] = {}
        if action.kind == "retry_signature":
            limit = int(action.params.get("limit") or 1000)
            out = retry_failed(self.app, None, signature=action.targets[0], limit=limit)
            for tid in out["sent"]:
                outcome[tid] = "sent"
            total = len(out["selected"])
            if progress is not None:
                progress(total, total)
        else:
            ids = list(action.targets)
            for start in range(0, len(ids), CHUNK):
                if cancelled():
                    break
                chunk = ids[start:start + CHUNK]
                out = retry_failed(self.app, chunk)
                outcome.update({tid: "sent" for tid in out["sent"]})
                outcome.update({tid: "no failed message kept" for tid in out["missing"]})
                outcome.update({tid: f"error: {why}" for tid, why in out["errors"].items()})
                if progress is not None:
                    progress(min(start + CHUNK, len(ids)), len(ids))
            for tid in ids:
                outcome.setdefault(tid, "not sent (aborted)")
        sent = sum(1 for v in outcome.values() if v == "sent")
        problems = len(outcome) - sent
        summary = f"retry: {sent} task{'s' if sent != 1 else ''} re-sent"
        if problems:
            summary += f" · {problems} not retried"
        if action.kind == "retry_signature" and not outcome:
            summary = f"retry: no kept failures with signature {action.targets[0]}"
        return ActionResult(action, sent > 0 and problems == 0, summary, replies=outcome)

    def _purge(self, action: Action) -> ActionResult:
        transport = self.app.transport
        known = {s.name for s in transport.queue_stats()}
        unknown = [q for q in action.targets if q not in known]
        if unknown:
            return ActionResult(action, False, f"purge: no such queue: {', '.join(unknown)}")
        counts = {q: transport.purge(q) for q in action.targets}
        total = sum(counts.values())
        return ActionResult(action, True, f"purge: {total} message{'s' if total != 1 else ''}"
                            f" deleted from {', '.join(action.targets)}", replies=counts)

    # -- audit ---------------------------------------------------------------------------
    def _audit(self, result: ActionResult, reason: str, started: float) -> None:
        if self.audit_log_path is None:
            return
        action = result.action
        now = self.clock()
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), "ts": now,
            "user": self.user, "host": self.host, "action": action.kind,
            "targets": list(action.targets[:AUDIT_TARGETS]), "target_count": len(action.targets),
            "params": action.params,
            "destination": list(action.destination) if action.destination else None,
            "command": self.describe(action, max_ids=AUDIT_TARGETS),
            "tier": self.tier(action), "read_only": self._read_only, "reason": reason,
            "refused": result.refused, "ok": result.ok, "result": result.summary,
            "replies": result.replies, "no_reply": list(result.no_reply),
            "duration": round(now - started, 3),
        }
        text = json.dumps(line, default=str, ensure_ascii=False)
        try:
            with self._lock, open(self.audit_log_path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n")
            self.audit_error = None
        except OSError as exc:
            self.audit_error = f"audit log not written: {exc}"
            logger.error("audit log %s not written: %s", self.audit_log_path, exc)
