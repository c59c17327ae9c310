"""The producer's fast encoders write exactly what the dict-based encoders write.

The task envelope, the ``task-sent`` event and the kombu event envelope are written
from pre-encoded fragments on the send path; these tests hold every such writer to the
bytes ``codec.dumps`` gives for the same dict, so the wire shape (Celery protocol v2,
header order, ``delivery_tag`` last) cannot drift from the reference encoding.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqcore import codec, message
from tqcore.events.dispatcher import EventDispatcher
from tqcore.message import Envelope
from tqcore.transports.redis_envelope import envelope, step_index


class _NoSigner:
    """Takes the dict path of build_task (as a signer would) without signing."""

    def sign_envelope(self, env: Envelope) -> None:
        pass


texts = st.text(max_size=12)
maybe_text = st.none() | texts
maybe_int = st.none() | st.integers(-5, 10**6)
maybe_float = st.none() | st.floats(0, 1e6, allow_nan=False) | st.integers(0, 1000)
scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | texts | st.floats(
    allow_nan=False, allow_infinity=False)

options = st.fixed_dictionaries({}, optional={
    "priority": maybe_int, "eta": maybe_float, "expires": maybe_float,
    "retries": st.integers(0, 5), "group_id": maybe_text, "group_index": maybe_int,
    "root_id": maybe_text, "parent_id": maybe_text, "time_limit": maybe_float,
    "soft_time_limit": maybe_float, "ignore_result": st.booleans(), "shadow": maybe_text,
    "reply_to": maybe_text, "replaced_task_nesting": st.integers(0, 3),
})


@settings(max_examples=300)
@given(name=texts.filter(bool), task_id=texts.filter(bool), queue=texts.filter(bool),
       args=st.lists(scalars, max_size=3), kwargs=st.dictionaries(texts, scalars, max_size=3),
       opts=options, tag=texts.filter(bool))
def test_the_written_envelope_is_byte_for_byte_the_dict_encoding(
        name: str, task_id: str, queue: str, args: list[Any], kwargs: dict[str, Any],
        opts: dict[str, Any], tag: str) -> None:
    fast = message.build_task(name, task_id, args, kwargs, queue=queue, delivery_tag=tag,
                              **opts)
    reference = message.build_task(name, task_id, args, kwargs, queue=queue,
                                   delivery_tag=tag, signer=_NoSigner(), **opts)  # type: ignore[arg-type]
    assert fast == reference
    env = json.loads(fast)
    assert fast.endswith(b'"delivery_tag":' + codec.dumps(tag).encode() + b"}}")
    assert json.loads(base64.b64decode(env["body"]))[:2] == [args, kwargs]


def test_build_plain_task_is_build_task_without_links() -> None:
    args = ("tb.x", "id-1", (1, "é"), {"k": [1.5]}, "q", 5, 10.0, 20.0, 2, "g", 3, "r", "p",
            1.0, 0.5, True, "sh", "rt", 1, "tag-1", "(1, 'é')", "{'k': [1.5]}")
    plain = message.build_plain_task(*args)  # type: ignore[arg-type]
    assert plain == message.build_task(
        "tb.x", "id-1", (1, "é"), {"k": [1.5]}, queue="q", priority=5, eta=10.0,
        expires=20.0, retries=2, group_id="g", group_index=3, root_id="r", parent_id="p",
        time_limit=1.0, soft_time_limit=0.5, ignore_result=True, shadow="sh", reply_to="rt",
        replaced_task_nesting=1, delivery_tag="tag-1", signer=_NoSigner())  # type: ignore[arg-type]


def test_envelopes_with_links_and_headers_keep_celerys_shape() -> None:
    link = {"task": "cb", "args": [], "kwargs": {}, "options": {}, "subtask_type": None,
            "immutable": False}
    payload = message.build_task("t", "id", (1,), queue="celery", callbacks=[link],
                                 extra_headers={"x-extra": 1, "task": "not-overridden"})
    env = json.loads(payload)
    assert list(env["properties"])[-2:] == ["body_encoding", "delivery_tag"]
    assert env["headers"]["task"] == "t" and env["headers"]["x-extra"] == 1
    assert json.loads(base64.b64decode(env["body"]))[2]["callbacks"] == [link]


def test_the_codec_guarantees_hold_on_the_fast_path() -> None:
    with pytest.raises(ValueError):
        message.build_task("t", "id", (math.nan,), queue="celery")
    with pytest.raises(ValueError):
        message.build_task("t", "id", queue="celery", time_limit=math.inf)
    with pytest.raises(TypeError):
        message.build_task("t", "id", (object(),), queue="celery")


def test_uuid4_is_a_random_rfc_4122_version_4_uuid() -> None:
    ids = {message.uuid4() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


@given(scalars | st.lists(scalars, max_size=3))
def test_jsonv_is_codec_dumps(value: Any) -> None:
    assert codec.jsonv(value) == codec.dumps(value)


def test_jsonv_refuses_what_codec_dumps_refuses() -> None:
    for bad in (math.nan, -math.inf):
        with pytest.raises(ValueError):
            codec.jsonv(bad)


@given(st.booleans() | st.none() | st.integers(-3, 14) | st.sampled_from(["4", "x", 2.5]))
def test_step_index_is_kombus_priority_step(priority: Any) -> None:
    try:
        p = max(0, min(9, int(priority or 0)))
    except (TypeError, ValueError):
        p = 0
    assert step_index(priority) == max(i for i, s in enumerate((0, 3, 6, 9)) if s <= p)


def _reference_envelope(body: bytes, headers: dict[str, Any], exchange: str, key: str,
                        mode: int, tag: str) -> bytes:
    return codec.dumps({
        "body": base64.b64encode(body).decode("ascii"), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": headers,
        "properties": {"delivery_mode": mode,
                       "delivery_info": {"exchange": exchange, "routing_key": key},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": tag},
    }).encode()


@given(st.binary(max_size=40), st.dictionaries(texts, scalars, max_size=3), texts, texts,
       st.sampled_from([1, 2]), texts.filter(bool))
def test_event_envelope_is_the_kombu_dict_encoding(body: bytes, headers: dict[str, Any],
                                                   exchange: str, key: str, mode: int,
                                                   tag: str) -> None:
    assert envelope(body, headers, exchange, key, mode, tag) == _reference_envelope(
        body, headers, exchange, key, mode, tag)


_SENT = [
    ("id1", "id1", None, "t.n", "()", "{}", 0, None, None, "celery", None, None, None, None),
    ("id2", 'r"', "p", "t\u2028n", "(1, 'a')", "{'k': 2}", 3, "2024-01-01T00:00:00+00:00",
     "2025-01-01T00:00:00+00:00", "q\u00e9", "g", 4, "c", 7),
    # a group's members share root, parent, reprs, group and chord (encoded once)
    ("id3", 'r"', "p", "t.n", "(1, 'a')", "{}", 0, None, None, "celery", "g", 5, "c", None),
    ("id4", 'r"', "p", "t.n", "(1, 'a')", "{}", 0, None, None, "celery", "g", 6, None, None),
    # own root, then no root, then False for 0: equal keys, different texts
    ("id5", "id5", None, "t.n", "()", "{}", 0, None, None, "celery", None, None, None, None),
    ("id6", None, None, "t.n", "()", "{}", 0, None, None, "celery", None, None, None, None),
    ("id7", "id7", None, "t.n", "()", "{}", False, None, None, "celery", None, None, None, False),
]


def test_task_sent_events_are_the_dict_encoding_of_celerys_fields(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1700000000.123456)
    d = EventDispatcher(None, 'gen1@h"é')  # type: ignore[arg-type]
    stamps = [d.task_sent(*fields) for fields in _SENT]
    expected = []
    for clock, fields in enumerate(_SENT, start=1):
        ev = d.event("task-sent", **dict(zip(
            ("uuid", "root_id", "parent_id", "name", "args", "kwargs", "retries", "eta",
             "expires", "queue", "group", "group_index", "chord", "priority"), fields)))
        ev["clock"] = clock
        ev = {**ev, "exchange": "", "routing_key": ev["queue"]}
        order = ["hostname", "utcoffset", "pid", "clock", "timestamp", "type", "uuid",
                 "root_id", "parent_id", "name", "args", "kwargs", "retries", "eta",
                 "expires", "queue", "exchange", "routing_key", "group", "group_index",
                 "chord", "priority"]
        expected.append({k: ev[k] for k in order})
    assert d.sent_json(stamps[:1]) == codec.dumps(expected[0]).encode()
    assert d.sent_json(stamps) == codec.dumps(expected).encode()
