"""Celery message protocol v2 in a kombu-style JSON envelope (celery-wire.md §4.1-4.2).

On the wire a task is::

    {"body": base64(json([args, kwargs, embed])), "content-encoding": "utf-8",
     "content-type": "application/json", "headers": {"lang": "py", "task": ..., ...},
     "properties": {"correlation_id": id, "reply_to": ..., "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": p, "body_encoding": "base64", "delivery_tag": uuid4}}

``embed`` is ``{"callbacks", "errbacks", "chain", "chord"}`` holding signature dicts.
Decoding refuses anything but JSON before looking at the body, and applies the size
and depth caps of :mod:`tqcore.codec`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tqcore import codec, message_chain
from tqcore.codec import jsonv
from tqcore.exceptions import ContentDisallowed, DecodeError

if TYPE_CHECKING:
    from tqcore.signing import Signer

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def origin_name() -> str:
    """This producer's node name, ``gen<pid>@<host>`` as Celery writes it."""
    return f"gen{os.getpid()}@{socket.gethostname()}"
REPR_MAXSIZE = 1024


def saferepr(obj: Any, maxsize: int = REPR_MAXSIZE) -> str:
    """``repr(obj)`` cut to ``maxsize`` characters (for argsrepr and events)."""
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not break sending
        text = f"<unrepresentable {type(obj).__name__}: {exc!r}>"
    return text if len(text) <= maxsize else text[: maxsize - 3] + "..."


def isoformat(value: float | dt.datetime | None) -> str | None:
    """An epoch time or datetime as an ISO-8601 UTC string (Celery's header form)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()


def parse_time(value: Any) -> float | None:
    """An ISO-8601 string, datetime or number as epoch seconds (naive = UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"bad timestamp {value[:40]!r}") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()
    raise DecodeError(f"bad timestamp of type {type(value).__name__}")


@dataclasses.dataclass(slots=True)
class Envelope:
    """A decoded envelope: headers, properties and the raw body bytes."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes
    content_type: str = codec.JSON
    content_encoding: str = "utf-8"

    def encode(self) -> bytes:
        """The envelope as kombu-style JSON bytes (body base64-encoded)."""
        props = dict(self.properties)
        props["body_encoding"] = "base64"
        props.setdefault("delivery_tag", uuid4())
        return codec.dumps({
            "body": base64.b64encode(self.body).decode("ascii"),
            "content-encoding": self.content_encoding,
            "content-type": self.content_type,
            "headers": self.headers,
            "properties": props,
        }).encode("utf-8")


def decode_envelope(payload: bytes, *, max_size: int = codec.MAX_SIZE,
                    max_depth: int | None = codec.MAX_DEPTH, parsed: Any = None) -> Envelope:
    """Parse an envelope, refusing non-JSON content before the body is decoded.
    ``parsed``: ``payload`` as JSON already (``Delivery.parsed``), checked here as
    :func:`codec.loads` checks the text.

    Raises:
        DecodeError: malformed envelope or over a cap.
        ContentDisallowed: content type other than JSON (pickle, yaml, ...).
    """
    if parsed is None:
        raw = codec.loads(payload, max_size=max_size, max_depth=max_depth)
    else:
        codec.check_parsed(payload, parsed, max_size=max_size, max_depth=max_depth)
        raw = parsed
    if not isinstance(raw, dict):
        raise DecodeError("envelope is not a JSON object")
    ctype = raw.get("content-type")
    if ctype != codec.JSON:
        raise ContentDisallowed(f"content type {str(ctype)[:60]!r} refused (only {codec.JSON})")
    encoding = raw.get("content-encoding", "utf-8")
    if str(encoding).lower() not in ("utf-8", "utf8"):
        raise DecodeError(f"content encoding {str(encoding)[:40]!r} refused (only utf-8)")
    headers = raw.get("headers") or {}
    props = raw.get("properties") or {}
    if not isinstance(headers, dict) or not isinstance(props, dict):
        raise DecodeError("envelope headers/properties are not objects")
    body = raw.get("body")
    if not isinstance(body, str):
        raise DecodeError("envelope body is not a string")
    if props.get("body_encoding", "base64") == "base64":
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("envelope body is not valid base64") from None
    else:
        data = body.encode("utf-8")
    return Envelope(headers, props, data, ctype, "utf-8")


@dataclasses.dataclass(slots=True)
class TaskMessage:
    """A task message (protocol v2) as the worker sees it after validation."""

    headers: dict[str, Any]
    properties: dict[str, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    embed: dict[str, Any]

    @property
    def id(self) -> str:
        """The task id."""
        return str(self.headers["id"])

    @property
    def name(self) -> str:
        """The task name."""
        return str(self.headers["task"])


def decode_task(payload: bytes, *, max_size: int = codec.MAX_SIZE,
                max_depth: int | None = codec.MAX_DEPTH,
                verify: Callable[[Envelope], None] | None = None,
                parsed: Any = None) -> TaskMessage:
    """Decode and validate a task message (``parsed``: see :func:`decode_envelope`).

    Raises:
        DecodeError: anything malformed, with a reason fit for a dead letter.
    """
    env = decode_envelope(payload, max_size=max_size, max_depth=max_depth, parsed=parsed)
    if verify is not None:
        verify(env)  # before the body is decoded: unsigned input is not even parsed
    headers = env.headers
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        raise DecodeError("not a protocol v2 task message: no 'task' header")
    if not isinstance(task_id, str) or not task_id:
        raise DecodeError("task message has no 'id' header")
    # Bytes, so that codec.loads may take its fast path (its errors for bad UTF-8 are
    # those of codec.utf8).
    data = env.body if type(env.body) is bytes else codec.utf8(env.body)
    body = codec.loads(data, max_size=max_size, max_depth=max_depth)
    if not (isinstance(body, list) and len(body) == 3):
        raise DecodeError("task body is not [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise DecodeError("task args must be a list and kwargs an object")
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise DecodeError("task embed must be an object")
    if embed:
        message_chain.wrap(data, args, kwargs, embed)
    return TaskMessage(headers, env.properties, args, kwargs, embed)


def build_task(
    name: str,
    task_id: str,
    args: Any = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str,
    priority: int | None = None,
    eta: float | None = None,
    expires: float | None = None,
    retries: int = 0,
    group_id: str | None = None,
    group_index: int | None = None,
    root_id: str | None = None,
    parent_id: str | None = None,
    callbacks: list[dict[str, Any]] | None = None,
    errbacks: list[dict[str, Any]] | None = None,
    chain: list[dict[str, Any]] | None = None,
    chord: dict[str, Any] | None = None,
    time_limit: float | None = None,
    soft_time_limit: float | None = None,
    ignore_result: bool = False,
    shadow: str | None = None,
    reply_to: str | None = None,
    replaced_task_nesting: int = 0,
    extra_headers: dict[str, Any] | None = None,
    signer: Signer | None = None,
    delivery_tag: str | None = None,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
) -> bytes:
    """Encode a protocol v2 task message, headers in the order Celery 5.7 writes them.

    ``delivery_tag`` (a new uuid4 by default) lets the caller know the message's
    broker-side id without parsing the envelope again; ``argsrepr``/``kwargsrepr``
    are the reprs when the caller already made them (for its ``task-sent`` event).

    Raises:
        TypeError: an argument JSON cannot represent.
        ValueError: NaN or infinity in the arguments.
    """
    if type(args) is not tuple and type(args) is not list:
        args = list(args or ())
    if kwargs is None:
        kwargs = {}
    elif type(kwargs) is not dict:
        kwargs = dict(kwargs)
    if argsrepr is None:
        argsrepr = saferepr(tuple(args)) if args else "()"
    if kwargsrepr is None:
        kwargsrepr = saferepr(kwargs) if kwargs else "{}"
    if callbacks or errbacks or chain or chord:
        embed: Any = {"callbacks": callbacks or None, "errbacks": errbacks or None,
                      "chain": chain or None, "chord": chord}
    else:
        embed = None
    tag = delivery_tag or uuid4()
    if signer is None and not extra_headers and embed is None:
        return build_plain_task(
            name, task_id, args, kwargs, queue, priority, eta, expires, retries, group_id,
            group_index, root_id, parent_id, time_limit, soft_time_limit, ignore_result,
            shadow, reply_to, replaced_task_nesting, tag, argsrepr, kwargsrepr)
    if type(chain) is message_chain.RawJSONList:  # a chain's rest, cut from a message
        body = message_chain.body_json(args, kwargs, callbacks or None, errbacks or None,
                                       chain, chord).encode()
        body64 = base64.b64encode(body).decode("ascii")
    elif args or kwargs or embed is not None:
        body = codec.dumps([args, kwargs, embed if embed is not None else _NO_EMBED]).encode()
        body64 = base64.b64encode(body).decode("ascii")
    else:
        body, body64 = _EMPTY_BODY, _EMPTY_BODY64
    eta_text, expires_text = isoformat(eta), isoformat(expires)
    if signer is None and not extra_headers:
        return _fast_envelope(
            body64, name, task_id, shadow, eta_text, expires_text, group_id, group_index,
            retries, time_limit, soft_time_limit, root_id or task_id, parent_id, argsrepr,
            kwargsrepr, ignore_result, replaced_task_nesting, reply_to or _REPLY_TO, queue,
            priority or 0, tag)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": eta_text,
        "expires": expires_text,
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": _ORIGIN,
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": None,
        "stamps": {},
    }
    if extra_headers:
        for key, value in extra_headers.items():
            headers.setdefault(key, value)
    properties = {
        "correlation_id": task_id,
        "reply_to": reply_to or _REPLY_TO,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority or 0,
        "body_encoding": "base64",
        "delivery_tag": tag,  # last: where kombu writes it and the scripts look for it
    }
    env = Envelope(headers, properties, body)
    if signer is not None:
        signer.sign_envelope(env)
    return env.encode()


def build_plain_task(name: str, task_id: str, args: tuple[Any, ...] | list[Any],
                     kwargs: dict[str, Any], queue: str, priority: int | None,
                     eta: float | None, expires: float | None, retries: int,
                     group_id: str | None, group_index: int | None, root_id: str | None,
                     parent_id: str | None, time_limit: float | None,
                     soft_time_limit: float | None, ignore_result: bool, shadow: str | None,
                     reply_to: str | None, replaced_task_nesting: int, delivery_tag: str,
                     argsrepr: str, kwargsrepr: str) -> bytes:
    """:func:`build_task` of a message with no links, chain, chord, extra headers or
    signature, every argument given (by position: a producer's per-message path).

    The envelope is written from fragments (see :func:`_fast_envelope`): exactly the
    bytes ``codec.dumps()`` gives for the envelope dict, without building that dict.

    Raises:
        TypeError: an argument JSON cannot represent.
        ValueError: NaN or infinity in the arguments.
    """
    if args or kwargs:
        body64 = base64.b64encode(
            codec.dumps([args, kwargs, _NO_EMBED]).encode()).decode("ascii")
    else:  # ``noop.delay()``: the commonest body, encoded once
        body64 = _EMPTY_BODY64
    return _fast_envelope(
        body64, name, task_id, shadow, isoformat(eta), isoformat(expires), group_id,
        group_index, retries, time_limit, soft_time_limit, root_id or task_id, parent_id,
        argsrepr, kwargsrepr, ignore_result, replaced_task_nesting, reply_to or _REPLY_TO,
        queue, priority or 0, delivery_tag)


def uuid4() -> str:
    """A random (version 4) UUID in its canonical text form, as ``str(uuid.uuid4())``
    but without building a :class:`uuid.UUID` (it took a fifth of a message's cost)."""
    h = os.urandom(16).hex()
    # the version nibble is 4; the variant's two top bits are 10 (RFC 4122)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
def _fast_envelope(body64: str, name: str, task_id: str, shadow: Any, eta: Any, expires: Any,
                   group: Any, group_index: Any, retries: Any, time_limit: Any, soft: Any,
                   root_id: Any, parent_id: Any, argsrepr: str, kwargsrepr: str,
                   ignore_result: Any, nesting: Any, reply_to: Any, queue: str, priority: Any,
                   tag: str) -> bytes:
    j = jsonv
    key = (name, queue, reply_to, ignore_result, nesting, priority)
    template = _templates.get(key)
    if template is None:
        template = _template(*key)
    head, tail, props = template
    tid = j(task_id)
    # Most headers are the same in most messages: those parts are written as constants.
    if shadow is None and eta is None and expires is None:
        timing = '"shadow":null,"eta":null,"expires":null'
    else:
        timing = f'"shadow":{j(shadow)},"eta":{j(eta)},"expires":{j(expires)}'
    if group is None and group_index is None:
        grouping = '"group":null,"group_index":null'
    else:
        grouping = f'"group":{j(group)},"group_index":{j(group_index)}'
    if retries == 0 and type(retries) is int and time_limit is None and soft is None:
        limits = '"retries":0,"timelimit":[null,null]'
    else:
        limits = f'"retries":{j(retries)},"timelimit":[{j(time_limit)},{j(soft)}]'
    root = tid if root_id == task_id else j(root_id)
    return (
        f'{{"body":"{body64}",{head},"id":{tid},{timing},{grouping},{limits},"root_id":{root},'
        f'"parent_id":{j(parent_id)},"argsrepr":{j(argsrepr)},"kwargsrepr":{j(kwargsrepr)},'
        f'{tail}{tid}{props}{j(tag)}}}}}'
    ).encode()


def _template(name: str, queue: str, reply_to: Any, ignore_result: Any, nesting: Any,
              priority: Any) -> tuple[str, str, str]:
    """The parts of a task envelope that are the same for every message of a task sent
    the same way (name, queue, ...), JSON-encoded once."""
    j = jsonv
    template = (
        f'"content-encoding":"utf-8","content-type":"application/json",'
        f'"headers":{{"lang":"py","task":{j(name)}',
        f'"origin":{_ORIGIN_JSON},"ignore_result":{j(ignore_result)},'
        f'"replaced_task_nesting":{j(nesting)},"stamped_headers":null,"stamps":{{}}}},'
        f'"properties":{{"correlation_id":',
        f',"reply_to":{j(reply_to)},"delivery_mode":2,'
        f'"delivery_info":{{"exchange":"","routing_key":{j(queue)}}},'
        f'"priority":{j(priority)},"body_encoding":"base64","delivery_tag":')
    if len(_templates) >= 4096:  # bounded: names and queues may be made up at run time
        _templates.clear()
    _templates[(name, queue, reply_to, ignore_result, nesting, priority)] = template
    return template


_templates: dict[tuple[Any, ...], tuple[str, str, str]] = {}
_REPLY_TO = str(uuid.uuid3(uuid.NAMESPACE_OID, _ORIGIN))
_ORIGIN_JSON = jsonv(_ORIGIN)
_NO_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMPTY_BODY = codec.dumps([[], {}, _NO_EMBED]).encode("utf-8")
_EMPTY_BODY64 = base64.b64encode(_EMPTY_BODY).decode("ascii")
