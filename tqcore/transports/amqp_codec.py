"""AMQP URLs and the mapping between our envelopes and AMQP messages.

Above the transport a message is a kombu-style JSON envelope (:mod:`tqcore.message`).
On RabbitMQ it travels the way Celery sends it (celery-wire.md §4.1, §4.7): the
envelope's headers become AMQP application headers, its properties become basic
properties (``content_type``, ``content_encoding``, ``delivery_mode``, ``priority``,
``correlation_id``, ``reply_to``) and the body is the raw JSON ``[args, kwargs,
embed]``. On the way back the envelope is rebuilt from those, so a message sent by
Celery reaches our worker the same way as one of ours.

Payloads that are not envelopes (tools, tests, poison messages), or whose headers
AMQP cannot carry, travel verbatim with the header ``x-tq-raw``.

Our bookkeeping lives in ``x-tq-*`` headers (attempts, dead-letter reason); they
and RabbitMQ's own (``x-death``, ``x-delivery-count``) are stripped from the
rebuilt envelope.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import math
import ssl
import time
import urllib.parse
import uuid
from typing import Any

from tqcore import codec
from tqcore.exceptions import DecodeError, ImproperlyConfigured
from tqcore.urls import redact

#: Header set on payloads sent verbatim (not an envelope).
RAW = "x-tq-raw"
#: Claims this message had before the current copy was published.
ATTEMPTS = "x-tq-attempts"
#: Dead letters: why, when, and a unique id.
REASON, DEAD_AT, DEAD_ID = "x-tq-reason", "x-tq-dead-at", "x-tq-dead-id"


def _teach_pika_floats() -> None:
    """Make pika carry floats in AMQP tables as doubles (``d``), both ways.

    pika 1.4 refuses to encode floats and decodes doubles truncated to integers.
    py-amqp (Celery's client) sends floats as doubles, and Celery headers carry
    floats (``timelimit``, the pidbox ``expires``), so we fix those two cases in
    pika's table codec; everything else still goes through pika's own code, but for
    decoding tables, short strings and the common values (strings, void, bools,
    integers), written here in fewer steps: pika's took 20 µs of the I/O thread per
    task message's header frame, these 12.
    """
    import struct

    from pika import data

    encode, decode = data.encode_value, data.decode_value
    if getattr(encode, "tq_floats", False):
        return

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return encode(pieces, value)

    unpack_from = struct.unpack_from

    def decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
        # The kinds Celery's headers are made of first (pika tests a dozen others
        # before a long string); the same values as pika's, floats fixed.
        kind = encoded[offset]
        if kind == 83:  # S: long string
            start = offset + 5
            end = start + unpack_from(">I", encoded, offset + 1)[0]
            raw = encoded[start:end]
            try:
                return raw.decode("utf8"), end
            except UnicodeDecodeError:
                return raw, end
        if kind == 86:  # V: void
            return None, offset + 1
        if kind == 116:  # t: bool
            return bool(encoded[offset + 1]), offset + 2
        if kind == 73:  # I: long
            return unpack_from(">i", encoded, offset + 1)[0], offset + 5
        if kind == 108 or kind == 76:  # l, L: long long
            return unpack_from(">q", encoded, offset + 1)[0], offset + 9
        if kind == 100:  # d: double
            return unpack_from(">d", encoded, offset + 1)[0], offset + 9
        if kind == 102:  # f: float
            return unpack_from(">f", encoded, offset + 1)[0], offset + 5
        return decode(encoded, offset)

    def decode_table(encoded: bytes, offset: int) -> tuple[dict[Any, Any], int]:
        result: dict[Any, Any] = {}
        limit = offset + 4 + unpack_from(">I", encoded, offset)[0]
        offset += 4
        while offset < limit:
            end = offset + 1 + encoded[offset]
            key: Any = encoded[offset + 1:end]
            try:
                key = key.decode("utf8")
            except UnicodeDecodeError:
                pass
            result[key], offset = decode_value(encoded, end)
        return result, offset

    def decode_short_string(encoded: bytes, offset: int) -> tuple[Any, int]:
        end = offset + 1 + encoded[offset]
        raw = encoded[offset + 1:end]
        try:
            return raw.decode("utf8"), end
        except UnicodeDecodeError:
            return raw, end

    encode_value.tq_floats = True  # type: ignore[attr-defined]
    data.encode_value = encode_value
    data.decode_value = decode_value
    data.decode_table = decode_table
    data.decode_short_string = decode_short_string


_teach_pika_floats()

_BROKER_HEADERS = frozenset({
    "x-death", "x-delivery-count", "x-first-death-exchange", "x-first-death-queue",
    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
    "x-last-death-reason", "x-stream-offset",
})
#: Header value types that are JSON data as they are.
_PLAIN = frozenset({str, int, bool, type(None)})
_DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}


@dataclasses.dataclass(frozen=True)
class AMQPURL:
    """A parsed broker URL.

    ``amqp://user:pass@host:port/vhost?option=value``; Celery's forms work too:
    ``amqp://guest:guest@localhost:5672//`` (vhost ``/``), ``amqp://`` (localhost,
    guest). ``amqps://`` verifies the server certificate against the system CAs
    (or ``ssl_ca_certs``) unless ``ssl_verify=false``.

    Options (query string or transport keyword arguments): ``heartbeat`` (s, 60),
    ``connect_timeout`` (s, 10), ``prefix`` (prepended to every queue and exchange
    name), ``max_priority`` (9; 0 declares queues without ``x-max-priority``),
    ``queue_type`` (``classic`` or ``quorum``), ``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_verify``, ``ssl_server_hostname``.
    """

    scheme: str
    host: str
    port: int
    user: str
    password: str
    vhost: str
    options: dict[str, Any]

    @property
    def tls(self) -> bool:
        """True for ``amqps://``."""
        return self.scheme == "amqps"

    def option(self, name: str, default: Any = None) -> Any:
        """An option's value (query string or keyword), or ``default``."""
        return self.options.get(name, default)

    def float_option(self, name: str, default: float) -> float:
        """A numeric option, with a one-line error when it is not a number."""
        value = self.options.get(name, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ImproperlyConfigured(f"broker option {name}={value!r} is not a number") from None

    def parameters(self) -> Any:
        """``pika.ConnectionParameters`` for this URL."""
        import pika

        timeout = self.float_option("connect_timeout", 10.0)
        ssl_options = None
        if self.tls:
            ssl_options = pika.SSLOptions(self._ssl_context(),
                                          self.option("ssl_server_hostname") or self.host)
        return pika.ConnectionParameters(
            host=self.host, port=self.port, virtual_host=self.vhost,
            credentials=pika.PlainCredentials(self.user, self.password),
            heartbeat=int(self.float_option("heartbeat", 60.0)),
            socket_timeout=timeout, stack_timeout=timeout * 2,
            blocked_connection_timeout=self.float_option("blocked_timeout", 60.0),
            connection_attempts=1, ssl_options=ssl_options,
            client_properties={"connection_name": "tqcore", "product": "tqcore"},
            # Keepalive notices a silently dead peer even between heartbeats.
            tcp_options={"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3})

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.option("ssl_ca_certs"))
        if not _truthy(self.option("ssl_verify", True)):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        certfile = self.option("ssl_certfile")
        if certfile:
            context.load_cert_chain(certfile, self.option("ssl_keyfile"))
        return context


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def parse_url(url: str, **options: Any) -> AMQPURL:
    """Parse an ``amqp://``, ``amqps://`` or ``pyamqp://`` URL.

    Raises:
        ImproperlyConfigured: the URL is malformed (the message never shows the password).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"malformed broker URL {redact(url)!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ImproperlyConfigured(f"not an AMQP URL: {redact(url)!r}")
    path = parts.path
    # Celery's "//" and "/%2F" both mean vhost "/", as does no path at all.
    vhost = "/" if path in ("", "/") else urllib.parse.unquote(path[1:])
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(options)
    return AMQPURL(scheme, parts.hostname or "localhost", port or _DEFAULT_PORTS[scheme],
                   urllib.parse.unquote(parts.username or "guest"),
                   urllib.parse.unquote(parts.password or "guest"), vhost or "/", query)


# -- messages --------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class WireMessage:
    """An AMQP message: body and the basic properties' fields."""

    body: bytes
    headers: dict[str, Any]
    content_type: str | None = None
    content_encoding: str | None = None
    delivery_mode: int = 2
    priority: int = 0
    correlation_id: str | None = None
    reply_to: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    expiration: str | None = None
    #: The properties already encoded once (see :func:`to_wire`), or None.
    encoded: Any = None

    def properties(self) -> Any:
        """The ``pika.BasicProperties`` to publish with."""
        if self.encoded is not None:
            return self.encoded
        import pika

        return pika.BasicProperties(
            content_type=self.content_type, content_encoding=self.content_encoding,
            headers=self.headers, delivery_mode=self.delivery_mode, priority=self.priority,
            correlation_id=self.correlation_id, reply_to=self.reply_to,
            message_id=self.message_id, timestamp=self.timestamp, expiration=self.expiration)

    @classmethod
    def received(cls, props: Any, body: bytes) -> WireMessage:
        """A message as pika delivered it (``props`` is a ``BasicProperties``)."""
        return cls(bytes(body), dict(props.headers or {}), props.content_type,
                   props.content_encoding, props.delivery_mode or 2, props.priority or 0,
                   props.correlation_id, props.reply_to, props.message_id, props.timestamp)

    def copy(self, **headers: Any) -> WireMessage:
        """A copy to republish: RabbitMQ's dead-letter headers dropped, ``headers`` set."""
        kept = {k: v for k, v in self.headers.items() if k not in _BROKER_HEADERS}
        kept.update(headers)
        return dataclasses.replace(self, headers={k: v for k, v in kept.items() if v is not None},
                                   expiration=None, encoded=None)

    @property
    def attempts(self) -> int:
        """Claims recorded in our header before this copy was published."""
        try:
            return int(self.headers.get(ATTEMPTS) or 0)
        except (TypeError, ValueError):
            return 0


def message_id(wire: WireMessage) -> str | None:
    """The message's id: the ``message_id`` property, else the task id."""
    if wire.message_id:
        return wire.message_id
    task_id = wire.headers.get("id")
    return str(jsonable(task_id)) if task_id else wire.correlation_id


def clamp_priority(priority: int | None) -> int:
    """A priority in 0-9."""
    return max(0, min(9, int(priority or 0)))


def to_wire(payload: bytes, *, priority: int = 0, message_id: str | None = None) -> WireMessage:
    """The AMQP message for an envelope payload (or a raw one, sent verbatim)."""
    priority = clamp_priority(priority)
    env = _parse_envelope(payload)
    if env is not None:
        body, headers, props, ctype, cenc = env
        wire = WireMessage(body, headers, ctype, cenc, _int(props.get("delivery_mode"), 2),
                           priority, _str(props.get("correlation_id")),
                           _str(props.get("reply_to")), message_id, int(time.time()))
        wire.encoded = _preencoded(wire)
        if wire.encoded is not None:
            return wire
    return WireMessage(payload, {RAW: 1}, "application/octet-stream", None, 2, priority,
                       None, None, message_id, int(time.time()))


def from_wire(wire: WireMessage, queue: str) -> bytes:
    """The payload to hand to the worker: the rebuilt envelope (or the raw bytes)."""
    return received(wire, queue)[0]


def received(wire: WireMessage, queue: str) -> tuple[bytes, Any]:
    """(:func:`from_wire`, that envelope as the JSON value its bytes decode to, or None
    for raw bytes): the worker decodes the value instead of parsing the bytes again."""
    if wire.headers.get(RAW):
        return wire.body, None
    headers: dict[str, Any] = {}
    for key, value in wire.headers.items():
        if key[:2] == "x-" and (key.startswith("x-tq-") or key in _BROKER_HEADERS):
            continue
        # Most header values are plain scalars already: only convert the others.
        headers[key] = value if type(value) in _PLAIN else jsonable(value)
    props: dict[str, Any] = {}
    if wire.correlation_id is not None:
        props["correlation_id"] = wire.correlation_id
    if wire.reply_to is not None:
        props["reply_to"] = wire.reply_to
    props.update({"delivery_mode": wire.delivery_mode,
                  "delivery_info": {"exchange": "", "routing_key": queue},
                  "priority": wire.priority, "body_encoding": "base64",
                  "delivery_tag": wire.message_id or str(uuid.uuid4())})
    envelope = {
        "body": base64.b64encode(wire.body).decode("ascii"),
        "content-encoding": wire.content_encoding or "utf-8",
        "content-type": wire.content_type or "application/octet-stream",
        "headers": headers,
        "properties": props,
    }
    # Header values are JSON data already (jsonable, no NaN): the text decodes to this
    # value (orjson writes the JSON value the standard library would).
    return codec.dumps_own(envelope), envelope


def _parse_envelope(payload: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any], str,
                                             str | None] | None:
    if not payload.startswith(b"{"):
        return None
    try:  # strict UTF-8, no NaN; size and depth caps apply when the body is decoded
        raw = codec.loads(payload, max_size=len(payload), max_depth=None)
    except DecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    headers, props, body = raw.get("headers"), raw.get("properties"), raw.get("body")
    ctype = raw.get("content-type")
    if not (isinstance(headers, dict) and isinstance(props, dict) and isinstance(body, str)
            and isinstance(ctype, str)):
        return None
    if props.get("body_encoding", "base64") == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        data = body.encode("utf-8")
    encoding = raw.get("content-encoding")
    return data, headers, props, ctype, encoding if isinstance(encoding, str) else None


def _preencoded(wire: WireMessage) -> Any:
    """``wire``'s properties, encoded now (pika would encode them at publish), or None
    if pika cannot encode its headers as an AMQP table (ints past 64 bits, long keys...).

    Encoding is the test of encodability anyway; keeping the result spares the I/O
    thread a second encoding of every header.
    """
    if not all(len(k.encode("utf-8")) <= 255 for k in wire.headers):
        return None
    props = wire.properties()
    try:
        pieces = props.encode()
    except Exception:  # noqa: BLE001 - any failure means "send verbatim"
        return None
    # What pika's Header.marshal calls (it inserts into the list: hand out copies).
    props.encode = lambda: list(pieces)
    return props


def jsonable(value: Any) -> Any:
    """An AMQP table value as plain JSON data (timestamps as epoch seconds; NaN and
    infinities, which JSON cannot carry, as None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
