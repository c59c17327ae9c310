"""Hostile and broken messages put straight on the ``celery`` queue.

Each one must end in the queue's dead-letter queue with a non-empty reason, nothing in
it may be executed or unpickled, and the worker must keep serving afterwards.
Messages are written with ``app.transport.enqueue("celery", payload)``, bypassing the
producer, in the kombu-style JSON envelope of celery-wire.md §4.1-4.2.
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.helpers import WAIT, wait_for
from tests.acceptance.proj.tasks import add
from tqcore import AsyncResult, states

pytestmark = pytest.mark.usefixtures("worker")

QUEUE = "celery"
#: "Within a few seconds", generously.
DEAD_LETTER_WAIT = 20.0

_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _json_body(args: list[Any], kwargs: dict[str, Any] | None = None) -> bytes:
    return json.dumps([args, kwargs or {}, _EMBED]).encode()


def _envelope(task: str, body: bytes, *, task_id: str | None = None,
              content_type: str = "application/json",
              content_encoding: str = "utf-8") -> tuple[str, bytes]:
    """A protocol-v2 task message in the kombu JSON envelope, as Celery 5.7 writes it."""
    tid = task_id or str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": {
            "lang": "py", "task": task, "id": tid, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": tid, "parent_id": None,
            "argsrepr": "()", "kwargsrepr": "{}", "origin": "acceptance@localhost",
            "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": tid, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return tid, json.dumps(envelope).encode()


def _wait_dead_letter(app: Any, marker: bytes) -> Any:
    """The dead letter whose payload contains ``marker``."""
    def find() -> Any:
        for letter in app.transport.dead_letters(QUEUE):
            if marker in bytes(letter.payload):
                return letter
        return None

    return wait_for(find, timeout=DEAD_LETTER_WAIT, interval=0.2,
                    message=f"a dead letter containing {marker[:60]!r}")


def _assert_dead_lettered_and_worker_serves(app: Any, marker: bytes) -> Any:
    letter = _wait_dead_letter(app, marker)
    assert isinstance(letter.reason, str) and letter.reason.strip(), letter
    assert add.delay(2, 2).get(timeout=WAIT) == 4, "the worker stopped serving"
    return letter


def test_control_hand_built_envelope_is_executed(app: Any) -> None:
    """The envelope builder below is right: a well-formed message runs."""
    tid, payload = _envelope("proj.add", _json_body([2, 3]))
    app.transport.enqueue(QUEUE, payload)
    assert AsyncResult(tid, app=app).get(timeout=WAIT) == 5


@pytest.mark.parametrize("payload", [
    pytest.param(b"this is not json {MARK}", id="not-json"),
    pytest.param(b"\xff\xfe\x00garbage {MARK}", id="not-utf8"),
    pytest.param(b'["{MARK}", "a JSON list, not an envelope"]', id="json-not-an-object"),
    pytest.param(b'{"hello": "{MARK}"}', id="object-without-envelope-fields"),
])
def test_undecodable_payload_is_dead_lettered(app: Any, payload: bytes) -> None:
    marker = f"marker-{uuid.uuid4().hex}".encode()
    app.transport.enqueue(QUEUE, payload.replace(b"{MARK}", marker))
    _assert_dead_lettered_and_worker_serves(app, marker)


def test_body_that_is_not_base64_is_dead_lettered(app: Any) -> None:
    tid, payload = _envelope("proj.add", b"")
    envelope = json.loads(payload)
    envelope["body"] = "!!! not base64 !!!"
    app.transport.enqueue(QUEUE, json.dumps(envelope).encode())
    _assert_dead_lettered_and_worker_serves(app, tid.encode())


def test_body_that_is_not_args_kwargs_embed_is_dead_lettered(app: Any) -> None:
    tid, payload = _envelope("proj.add", json.dumps({"args": [1, 2]}).encode())
    app.transport.enqueue(QUEUE, payload)
    _assert_dead_lettered_and_worker_serves(app, tid.encode())


def test_unknown_task_name_is_dead_lettered(app: Any) -> None:
    tid, payload = _envelope("proj.does_not_exist", _json_body([1, 2]))
    app.transport.enqueue(QUEUE, payload)
    letter = _assert_dead_lettered_and_worker_serves(app, tid.encode())
    assert "proj.does_not_exist" in letter.reason


def test_unknown_task_name_fails_the_result(app: Any) -> None:
    """Celery stores FAILURE with NotRegistered (``Consumer.on_unknown_task``): no hang."""
    tid, payload = _envelope("proj.also_not_registered", _json_body([1, 2]))
    app.transport.enqueue(QUEUE, payload)
    res = AsyncResult(tid, app=app)
    wait_for(lambda: res.state == states.FAILURE, timeout=DEAD_LETTER_WAIT,
             message=f"unregistered task's state to be FAILURE (is {res.state})")
    assert type(res.result).__name__ == "NotRegistered"


class _Canary:
    """Unpickling this creates the canary file (``open(path, "w")``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("content_type", [
    "application/x-python-serialize",
    "application/python-pickle",
])
def test_pickle_is_refused_before_decoding(app: Any, tq_env: dict[str, Any],
                                           content_type: str) -> None:
    canary = Path(tq_env["records"]) / f"canary-{uuid.uuid4().hex}"
    body = pickle.dumps(((_Canary(str(canary)),), {}, _EMBED), protocol=2)
    assert b"open" in body  # what a worker that unpickles it would call
    tid, payload = _envelope("proj.add", body, content_type=content_type,
                             content_encoding="binary")
    app.transport.enqueue(QUEUE, payload)
    letter = _assert_dead_lettered_and_worker_serves(app, tid.encode())
    assert not canary.exists(), "the worker unpickled the message"
    if content_type == "application/x-python-serialize":
        reason = letter.reason.lower()
        assert "pickle" in reason or "x-python-serialize" in reason, letter.reason


def test_oversized_body_is_dead_lettered(app: Any) -> None:
    big = "x" * (20 * 1024 * 1024)  # 20 MiB
    tid, payload = _envelope("proj.add", _json_body([big, "y"]))
    app.transport.enqueue(QUEUE, payload)
    _assert_dead_lettered_and_worker_serves(app, tid.encode())
    assert AsyncResult(tid, app=app).state != states.SUCCESS


def test_deeply_nested_body_is_dead_lettered(app: Any) -> None:
    depth = 100_000
    tid, payload = _envelope("proj.add", b"[" * depth + b"]" * depth)
    app.transport.enqueue(QUEUE, payload)
    _assert_dead_lettered_and_worker_serves(app, tid.encode())


def test_deeply_nested_envelope_is_dead_lettered(app: Any) -> None:
    depth = 100_000
    marker = f"marker-{uuid.uuid4().hex}".encode()
    payload = b'["' + marker + b'", ' + b"[" * depth + b"]" * depth + b"]"
    app.transport.enqueue(QUEUE, payload)
    _assert_dead_lettered_and_worker_serves(app, marker)
