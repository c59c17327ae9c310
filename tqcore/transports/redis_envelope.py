"""kombu envelopes on Redis: the list element of a task, the event/control/reply messages.

A queue element is the kombu JSON envelope exactly as a Celery producer writes it
(celery-wire.md §4.2). Its identity is ``properties.delivery_tag``, which kombu and
tqcore write last in the envelope: :func:`element_id` reads it from the last 512
bytes with the same pattern the Lua scripts use, so Python and Lua always agree on a
message's id. Payloads that are not such envelopes are wrapped (content type
:data:`RAW_TYPE`) and unwrapped on claim.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from typing import Any

from tqcore import codec
from tqcore.codec import jsonv
from tqcore.exceptions import DecodeError
from tqcore.message import uuid4
from tqcore.transports.base import OutgoingMessage

SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
RAW_TYPE = "application/x-tqcore-raw"
_TAG_TAIL = re.compile(rb'"delivery_tag"\s*:\s*"([^"\\]+)"\s*\}\s*\}\s*\Z')


def step_index(priority: Any) -> int:
    """Index in :data:`PRIORITY_STEPS` of kombu's step for ``priority`` (clamped 0-9)."""
    return _STEP_OF[clamp_priority(priority)]


def clamp_priority(priority: Any) -> int:
    """``priority`` as an int in 0-9 (anything unreadable is 0)."""
    if type(priority) is int and 0 <= priority <= 9:
        return priority
    try:
        return max(0, min(9, int(priority or 0)))
    except (TypeError, ValueError):
        return 0


_STEP_OF = [max(i for i, s in enumerate(PRIORITY_STEPS) if s <= p) for p in range(10)]


def event_hostname(body: bytes) -> str | None:
    """The ``hostname`` of an event body (of its first event for a list), else None."""
    try:
        ev = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(ev, list) and ev:
        ev = ev[0]
    host = ev.get("hostname") if isinstance(ev, dict) else None
    return host if isinstance(host, str) else None


def element_id(element: bytes) -> str | None:
    """The id the scripts give ``element`` when its tag sits where kombu writes it."""
    m = _TAG_TAIL.search(element[-512:])
    return m.group(1).decode("utf-8", "replace") if m else None


def ident(element: bytes) -> str:
    """The scripts' ``ident()``: tag at the end, else in the JSON, else the SHA-1."""
    tag = element_id(element)
    if tag is not None:
        return tag
    if len(element) <= 1048576:
        try:
            env = json.loads(element)
            tag = env["properties"]["delivery_tag"]
            if isinstance(tag, str) and tag:
                return tag
        except (ValueError, RecursionError, TypeError, KeyError):
            pass
    return "sha1:" + hashlib.sha1(element).hexdigest()


def prepare(message: OutgoingMessage) -> tuple[str, bytes]:
    """(id, list element) for ``message``: its own envelope when it is one that agrees
    with the message's priority and id, else the payload wrapped in one."""
    payload = message.payload
    if message.delivery_tag is not None:
        return message.delivery_tag, payload  # built by tqcore itself: nothing to check
    tag = element_id(payload) if payload[:1] == b"{" else None
    if tag is not None:
        try:
            env = json.loads(payload)
            props, headers = env.get("properties"), env.get("headers") or {}
            if (isinstance(props, dict) and isinstance(env.get("body"), str)
                    and clamp_priority(props.get("priority")) == clamp_priority(message.priority)
                    and (message.message_id is None or headers.get("id") == message.message_id)):
                return tag, payload
        except (ValueError, RecursionError, AttributeError):
            pass
    tag = str(uuid.uuid4())
    wrapped = {
        "body": base64.b64encode(payload).decode("ascii"),
        "content-encoding": "binary", "content-type": RAW_TYPE,
        "headers": {"id": message.message_id},
        "properties": {"delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": message.queue},
                       "priority": clamp_priority(message.priority), "body_encoding": "base64",
                       "delivery_tag": tag},
    }
    return tag, codec.dumps(wrapped).encode("utf-8")


def unpack(element: bytes, step: int) -> tuple[bytes, int, str | None]:
    """(payload, priority, message id) of a list element."""
    return unpack_parsed(element, step)[:3]


def unpack_parsed(element: bytes, step: int) -> tuple[bytes, int, str | None, Any]:
    """(payload, priority, message id, the payload's JSON value or None) of a list
    element: the worker decodes that value instead of parsing the same bytes again."""
    env: Any = None
    if element[:1] == b"{" and len(element) <= codec.MAX_SIZE:
        try:  # codec's own decoding (strict UTF-8, no NaN), but for the depth cap
            env = codec.loads(element, max_depth=None)
        except DecodeError:
            env = None
    if not isinstance(env, dict):
        return element, PRIORITY_STEPS[step], None, None
    props: dict[str, Any] = env["properties"] if isinstance(env.get("properties"), dict) else {}
    headers: dict[str, Any] = env["headers"] if isinstance(env.get("headers"), dict) else {}
    payload = element
    if env.get("content-type") == RAW_TYPE and isinstance(env.get("body"), str):
        try:
            payload = base64.b64decode(env["body"], validate=True)
        except (binascii.Error, ValueError):
            payload = element  # not one of ours after all: hand it over as it is
    prio = props.get("priority")
    priority = clamp_priority(prio) if isinstance(prio, int) else PRIORITY_STEPS[step]
    mid = headers.get("id") or props.get("correlation_id")
    return (payload, priority, mid if isinstance(mid, str) else None,
            env if payload is element else None)


def envelope(body: bytes, headers: dict[str, Any], exchange: str, routing_key: str,
             delivery_mode: int = 1, tag: str | None = None) -> bytes:
    """A kombu envelope around a JSON ``body`` (base64, as kombu's Redis channel sends)."""
    before, after = envelope_parts(headers, exchange, routing_key, delivery_mode)
    return b"".join([before, base64.b64encode(body), after,
                     jsonv(tag or uuid4()).encode(), b"}}"])


def envelope_parts(headers: dict[str, Any], exchange: str, routing_key: str,
                   delivery_mode: int = 1) -> tuple[bytes, bytes]:
    """The envelope's text before and after its base64 body: :func:`envelope` is
    ``before + base64(body) + after + json(delivery_tag) + b"}}"``, the same bytes as
    ``codec.dumps`` of the envelope dict in kombu's key order. A producer sending many
    event messages keeps these parts instead of encoding them for every message."""
    j = jsonv
    return (b'{"body":"', (
        f'","content-encoding":"utf-8","content-type":"application/json",'
        f'"headers":{codec.dumps(headers)},"properties":{{"delivery_mode":{j(delivery_mode)},'
        f'"delivery_info":{{"exchange":{j(exchange)},"routing_key":{j(routing_key)}}},'
        f'"priority":0,"body_encoding":"base64","delivery_tag":').encode())


def open_envelope(raw: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any]] | None:
    """(body, headers, properties) of a kombu envelope, or None when it is not one."""
    try:
        env = json.loads(raw)
        body = env["body"]
        headers = env.get("headers") or {}
        props = env.get("properties") or {}
        if props.get("body_encoding", "base64") == "base64":
            data = base64.b64decode(body, validate=True)
        else:
            data = body.encode("utf-8")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    if not isinstance(headers, dict) or not isinstance(props, dict):
        return None
    return data, headers, props
