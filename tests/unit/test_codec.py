"""The hardened JSON codec and the protocol v2 envelope."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqcore import codec, message
from tqcore.exceptions import ContentDisallowed, DecodeError


def _values(integers: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | integers | st.text(max_size=20)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(
            st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )


json_values = _values(st.integers(-(10**12), 10**12))


@given(json_values)
def test_dumps_then_loads_round_trips_any_json_value(value: object) -> None:
    assert codec.loads(codec.dumps(value).encode()) == value


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@given(json_values, st.integers(1, 6))
def test_check_depth_refuses_exactly_the_values_nested_deeper_than_the_limit(
        value: object, limit: int) -> None:
    if _depth(value) > limit:
        with pytest.raises(DecodeError, match="nested too deeply"):
            codec.check_depth(value, limit)
    else:
        codec.check_depth(value, limit)


@given(st.binary(max_size=200))
def test_loads_of_arbitrary_bytes_either_decodes_or_raises_decode_error(data: bytes) -> None:
    try:
        codec.loads(data)
    except DecodeError:
        pass


@pytest.mark.parametrize("payload, reason", [
    (b"[" * 100_000, "nested too deeply"),
    (b"[" * 150 + b"]" * 150, "nested too deeply"),
    (b"NaN", "NaN"),
    (b"[Infinity]", "Infinity"),
    (b"1" * 5000, "invalid JSON"),
    (b"\xff\xfe", "UTF-8"),
    (b"{", "invalid JSON"),
])
def test_loads_refuses_hostile_input_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.loads(payload)


def _std(data: bytes) -> object:
    """The reference: the standard library's strict decoding, NaN refused."""
    return json.loads(data.decode("utf-8"), parse_constant=codec._reject_constant)


wide_values = _values(st.integers())  # any size: past 64 bits too


@given(wide_values)
def test_loads_reads_every_value_as_the_standard_library_does(value: object) -> None:
    # Integers of any size included: orjson would read those beyond 64 bits as floats.
    data = json.dumps(value).encode()
    got, want = codec.loads(data), _std(data)
    assert got == want and json.dumps(got) == json.dumps(want)


@pytest.mark.parametrize("text", [
    b"[36893488147419103232]", b"[-9223372036854775809]", b"[18446744073709551615]",
    b'{"a": -12345678901234567890123}', b'["\\ud800"]', b"[1e400]", b"[-0]", b'"\\u0000"',
    b'{"a":1,"a":2}', b"[0.1, 1.5e300, -0.0, 1E5]", b" [1] ",
])
def test_loads_matches_the_standard_library_where_orjson_alone_would_not(text: bytes) -> None:
    got, want = codec.loads(text), _std(text)
    assert got == want and repr(got) == repr(want)


def test_dumps_own_writes_what_dumps_writes_and_falls_back_for_big_integers() -> None:
    import datetime as dt
    import uuid

    # (a fixed id: a random one may hold "e16", which the spelling check below rewrites)
    ev = {"type": "task-succeeded", "uuid": "3f2c9b1a-0d4e-4c8b-9a7f-5b6c7d8e9f01",
          "u": uuid.UUID(int=7), "timestamp": 1795322391.4951,
          "clock": 12, "result": "'\\x1b[31m' é", "runtime": 0.000123, "n": None, "ok": True,
          "when": dt.datetime(2026, 11, 22, 5, 0, 1, 5), "ids": {1, 2}, "t": (1, 2),
          3: "int key", "exp": 1e16}
    for value in (ev, [ev, ev], {**ev, "big": 2**70}):
        own = codec.dumps_own(value)
        assert json.loads(own) == json.loads(codec.dumps(value))
        assert own.replace(b"e16", b"e+16") == codec.dumps(value).encode("utf-8")
    with pytest.raises(TypeError):
        codec.dumps_own({"x": object()})


def test_loads_refuses_oversized_input_before_parsing() -> None:
    with pytest.raises(DecodeError, match="too large"):
        codec.loads(b"[" + b"1," * 100 + b"1]", max_size=50)


def test_build_task_has_celery_v2_headers_properties_and_body() -> None:
    payload = message.build_task("proj.add", "id-1", (2, 3), {"z": 1}, queue="celery",
                                 priority=5, eta=0.0, retries=1, group_id="g", group_index=0)
    env = json.loads(payload)
    assert env["content-type"] == "application/json"
    assert env["content-encoding"] == "utf-8"
    h = env["headers"]
    assert list(h)[:6] == ["lang", "task", "id", "shadow", "eta", "expires"]
    assert h["task"] == "proj.add" and h["id"] == "id-1" and h["root_id"] == "id-1"
    assert h["retries"] == 1 and h["group"] == "g" and h["group_index"] == 0
    assert h["timelimit"] == [None, None]
    assert h["argsrepr"] == "(2, 3)" and h["kwargsrepr"] == "{'z': 1}"
    assert h["eta"] == "1970-01-01T00:00:00+00:00"
    props = env["properties"]
    assert props["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert props["priority"] == 5 and props["delivery_mode"] == 2
    assert props["body_encoding"] == "base64" and props["correlation_id"] == "id-1"
    body = json.loads(base64.b64decode(env["body"]))
    assert body == [[2, 3], {"z": 1},
                    {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_decode_task_reads_a_celery_captured_message() -> None:
    captured = (
        b'{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIj'
        b'ogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": '
        b'"application/json", "headers": {"lang": "py", "task": "capapp.add", "id": '
        b'"61075250-733e-4c76-a9d7-6374ab18f958", "retries": 0, "root_id": "61075250", '
        b'"parent_id": null}, "properties": {"priority": 5, "body_encoding": "base64"}}')
    msg = message.decode_task(captured)
    assert msg.name == "capapp.add" and msg.args == [2, 3] and msg.kwargs == {}
    assert msg.embed["chain"] is None


@pytest.mark.parametrize("mutate, error, reason", [
    (lambda e: e.update({"content-type": "application/x-python-serialize"}),
     ContentDisallowed, "refused"),
    (lambda e: e.update({"content-encoding": "binary"}), DecodeError, "encoding"),
    (lambda e: e["headers"].pop("task"), DecodeError, "no 'task' header"),
    (lambda e: e["headers"].pop("id"), DecodeError, "'id'"),
    (lambda e: e.update({"body": "!!!"}), DecodeError, "base64"),
    (lambda e: e.update({"body": base64.b64encode(b'{"a": 1}').decode()}), DecodeError,
     r"\[args, kwargs, embed\]"),
    (lambda e: e.update({"body": base64.b64encode(b'[{}, [], {}]').decode()}), DecodeError,
     "args must be a list"),
])
def test_decode_task_refuses_malformed_envelopes(mutate, error, reason) -> None:  # type: ignore[no-untyped-def]
    env = json.loads(message.build_task("t", "i", (), {}, queue="q"))
    mutate(env)
    with pytest.raises(error, match=reason):
        message.decode_task(json.dumps(env).encode())


def test_pickle_content_is_refused_before_the_body_is_looked_at() -> None:
    env = {"body": base64.b64encode(b"\x80\x04not-even-valid-pickle").decode(),
           "content-type": "application/x-python-serialize", "content-encoding": "binary",
           "headers": {"task": "t", "id": "i"}, "properties": {}}
    with pytest.raises(ContentDisallowed):
        message.decode_envelope(json.dumps(env).encode())


def _outcome(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except (DecodeError, ContentDisallowed) as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("payload, max_size", [
    (message.build_task("t", "i", (1, [2]), {"k": {"v": None}}, queue="q"), codec.MAX_SIZE),
    (message.build_task("t", "i", (), {}, queue="q"), 100),  # over the size cap
    (json.dumps({"body": "", "content-type": "application/json",
                 "headers": {"task": "t", "id": "i", "deep": [[[[[[0]]]]]] * 20 + [[[1]] * 90]},
                 "properties": {}}).encode(), codec.MAX_SIZE),
    (json.dumps({"body": "", "content-type": "application/json",
                 "headers": {"task": "t", "id": "i", "deep": "x"}}).encode()
     .replace(b'"x"', b"[" * 25 + b"]" * 25), codec.MAX_SIZE),  # nested too deeply
    (b'{"body": NaN}', codec.MAX_SIZE),
    (b'{"body": "\xed\xa0\x80"}', codec.MAX_SIZE),  # a surrogate: not strict UTF-8
    (json.dumps({"body": "!!", "content-type": "application/json",
                 "headers": {"task": "t", "id": "i"}, "properties": {}}).encode(),
     codec.MAX_SIZE),
])
def test_decoding_what_the_redis_transport_parsed_matches_decoding_the_bytes(
        payload: bytes, max_size: int) -> None:
    from tqcore.transports.redis_envelope import unpack_parsed

    parsed = unpack_parsed(payload, 0)[3]
    assert _outcome(lambda: message.decode_task(payload, max_size=max_size, max_depth=20)) == \
        _outcome(lambda: message.decode_task(payload, max_size=max_size, max_depth=20,
                                             parsed=parsed))
