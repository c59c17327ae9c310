"""AMQP URLs and the envelope <-> AMQP message mapping (no broker needed)."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("pika")

from tqcore import message  # noqa: E402
from tqcore.exceptions import ImproperlyConfigured  # noqa: E402
from tqcore.transports import amqp_delay as delay  # noqa: E402
from tqcore.transports.amqp_codec import (  # noqa: E402
    ATTEMPTS,
    RAW,
    WireMessage,
    from_wire,
    parse_url,
    to_wire,
)


@pytest.mark.parametrize(("url", "host", "port", "user", "password", "vhost"), [
    ("amqp://guest:guest@127.0.0.1:5672//", "127.0.0.1", 5672, "guest", "guest", "/"),
    ("amqp://guest:guest@localhost:5672/", "localhost", 5672, "guest", "guest", "/"),
    ("amqp://", "localhost", 5672, "guest", "guest", "/"),
    ("pyamqp://u:p@rabbit/%2F", "rabbit", 5672, "u", "p", "/"),
    ("amqp://u:p%40ss@rabbit:5673/prod", "rabbit", 5673, "u", "p@ss", "prod"),
    ("amqps://u:p@rabbit/app%2Fone", "rabbit", 5671, "u", "p", "app/one"),
])
def test_celery_url_forms_parse(url: str, host: str, port: int, user: str, password: str,
                                vhost: str) -> None:
    parsed = parse_url(url)

    assert (parsed.host, parsed.port, parsed.user, parsed.password, parsed.vhost) == (
        host, port, user, password, vhost)
    params = parsed.parameters()
    assert (params.host, params.port, params.virtual_host) == (host, port, vhost)
    assert params.heartbeat == 60
    assert params.socket_timeout == 10.0


def test_options_come_from_the_query_string_and_keywords() -> None:
    parsed = parse_url("amqp://h/?heartbeat=15&prefix=app.", connect_timeout=3)

    params = parsed.parameters()
    assert (params.heartbeat, params.socket_timeout) == (15, 3.0)
    assert parsed.option("prefix") == "app."


def test_amqps_verifies_the_server_certificate_by_default() -> None:
    params = parse_url("amqps://u:p@broker.example/").parameters()

    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert params.ssl_options.server_hostname == "broker.example"


def test_malformed_url_error_never_shows_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        parse_url("amqp://user:s3cret@host:notaport/")

    assert "s3cret" not in str(info.value)


def test_transport_repr_redacts_credentials() -> None:
    from tqcore.transports import from_url

    transport = from_url("amqp://user:s3cret@127.0.0.1:1//")

    assert "s3cret" not in repr(transport)
    assert "s3cret" not in transport.display_url


def test_task_envelope_maps_to_celery_properties_and_back() -> None:
    payload = message.build_task("proj.add", "id-1", (2, 3), {"x": 1.5}, queue="celery",
                                 priority=5, time_limit=30.5, soft_time_limit=10.0)
    env = message.decode_envelope(payload)

    wire = to_wire(payload, priority=5, message_id="id-1")

    assert (wire.content_type, wire.content_encoding, wire.delivery_mode, wire.priority) == (
        "application/json", "utf-8", 2, 5)
    assert wire.correlation_id == "id-1"
    assert wire.reply_to == env.properties["reply_to"]
    assert list(wire.headers) == list(env.headers)  # Celery's order
    assert json.loads(wire.body) == [[2, 3], {"x": 1.5}, {"callbacks": None, "errbacks": None,
                                                           "chain": None, "chord": None}]
    back = message.decode_task(from_wire(wire, "celery"))
    assert (back.name, back.id, back.args, back.kwargs) == ("proj.add", "id-1", [2, 3],
                                                            {"x": 1.5})
    assert back.headers == env.headers
    assert back.properties["delivery_info"] == {"exchange": "", "routing_key": "celery"}


def test_the_received_envelope_value_is_what_its_bytes_decode_to() -> None:
    import datetime as dt
    import decimal

    from tqcore import codec
    from tqcore.transports.amqp_codec import received

    payload = message.build_task("proj.add", "id-1", (2, 3), {}, queue="celery")
    wire = to_wire(payload, priority=5, message_id="id-1")
    wire.headers.update({"when": dt.datetime(2026, 1, 2, 3, 4, 5), "d": decimal.Decimal("1.5"),
                         "b": b"\xffraw", "nested": {"t": (1, [b"x", None])}, "x-death": [1],
                         "f": 0.25, "big": 2**63 - 1})
    data, value = received(wire, "celery")
    assert value == codec.loads(data) and json.dumps(value) == json.dumps(codec.loads(data))
    assert message.decode_task(data, parsed=value) == message.decode_task(data)
    # NaN and infinities cannot be JSON: None, not a crash of the claim that met them.
    # (RabbitMQ itself closes a connection that publishes one, 541 INTERNAL_ERROR; this
    # decoder does not rely on that.)
    wire.headers.update({"f": float("nan"), "d": decimal.Decimal("-Infinity"),
                         "nested": {"t": [float("inf")]}})
    data, value = received(wire, "celery")
    assert value == codec.loads(data)
    assert (value["headers"]["f"], value["headers"]["d"], value["headers"]["nested"]) == (
        None, None, {"t": [None]})
    assert message.decode_task(data, parsed=value) == message.decode_task(data)
    assert received(to_wire(b"\x00raw"), "q") == (b"\x00raw", None)


@pytest.mark.parametrize("payload", [b"", b"\x00binary", b"{not json", b'{"body": 1}',
                                     b"[1, 2]"])
def test_non_envelope_payloads_travel_verbatim(payload: bytes) -> None:
    wire = to_wire(payload)

    assert wire.headers == {RAW: 1}
    assert from_wire(wire, "q") == payload


def test_envelope_with_headers_amqp_cannot_carry_travels_verbatim() -> None:
    env = message.Envelope({"task": "t", "id": "1", "huge": 10 ** 30}, {}, b"[[], {}, {}]")
    payload = env.encode()

    wire = to_wire(payload)

    assert wire.headers == {RAW: 1}
    assert from_wire(wire, "q") == payload


def test_bookkeeping_and_broker_headers_are_stripped_from_the_envelope() -> None:
    wire = WireMessage(b"[[], {}, {}]", {"task": "t", "id": "1", ATTEMPTS: 2,
                                         "x-death": [{"reason": "expired"}],
                                         "x-delivery-count": 3}, "application/json", "utf-8")

    env = json.loads(from_wire(wire, "q"))

    assert env["headers"] == {"task": "t", "id": "1"}
    assert base64.b64decode(env["body"]) == b"[[], {}, {}]"
    assert wire.attempts == 2
    assert wire.copy(**{ATTEMPTS: 3}).headers == {"task": "t", "id": "1", ATTEMPTS: 3}


def test_pika_tables_carry_floats_as_doubles() -> None:
    from pika import data

    table = {"timelimit": [30.5, None], "expires": 1795278642.125, "n": 3, "nested": {"f": 0.25}}
    pieces: list[bytes] = []
    data.encode_table(pieces, table)

    assert data.decode_table(b"".join(pieces), 0)[0] == table


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=20), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300)
@given(table=st.dictionaries(st.text(max_size=30), _values, max_size=12))
def test_the_quick_table_decoder_reads_what_pika_writes(table: dict[str, Any]) -> None:
    from pika import data

    pieces: list[bytes] = []
    data.encode_table(pieces, table)
    raw = b"".join(pieces)

    assert data.decode_table(raw, 0) == (table, len(raw))
    assert data.decode_table(b"xx" + raw, 2) == (table, len(raw) + 2)


def test_the_quick_decoders_keep_pikas_bytes_for_invalid_utf8() -> None:
    from pika import data

    raw = b"\x00\x00\x00\x0a" + b"\x02k\xff" + b"S\x00\x00\x00\x02\xfe\xff"
    assert data.decode_table(raw, 0) == ({b"k\xff": b"\xfe\xff"}, len(raw))
    assert data.decode_short_string(b"\x03abc", 0) == ("abc", 4)


@pytest.mark.parametrize("ms", [1, 2, 3, 500, 1000, 86_400_000, delay.MAX_DELAY_MS])
def test_delay_routing_key_spells_the_delay_in_binary(ms: int) -> None:
    key = delay.routing_key(ms, "tok")
    words = key.split(".")

    assert words[-1] == "tok"
    assert int("".join(words[:-1]), 2) == ms
    levels = [k for k in range(delay.LEVELS) if ms >> k & 1]
    assert sum(2 ** k for k in levels) == ms


def test_delay_rounds_up_and_caps() -> None:
    assert delay.delay_ms(0.0001) == 1
    assert delay.delay_ms(0.5) == 500
    assert delay.delay_ms(10 ** 9) == delay.MAX_DELAY_MS
