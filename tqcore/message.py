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

from tqcore import codec
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
        props.setdefault("delivery_tag", str(uuid.uuid4()))
        return codec.dumps({
            "body": base64.b64encode(self.body).decode("ascii"),
            "content-encoding": self.content_encoding,
            "content-type": self.content_type,
            "headers": self.headers,
            "properties": props,
        }).encode("utf-8")


def decode_envelope(payload: bytes, *, max_size: int = codec.MAX_SIZE,
                    max_depth: int = codec.MAX_DEPTH) -> Envelope:
    """Parse an envelope, refusing non-JSON content before the body is decoded.

    Raises:
        DecodeError: malformed envelope or over a cap.
        ContentDisallowed: content type other than JSON (pickle, yaml, ...).
    """
    raw = codec.loads(payload, max_size=max_size, max_depth=max_depth)
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
                max_depth: int = codec.MAX_DEPTH,
                verify: Callable[[Envelope], None] | None = None) -> TaskMessage:
    """Decode and validate a task message.

    Raises:
        DecodeError: anything malformed, with a reason fit for a dead letter.
    """
    env = decode_envelope(payload, max_size=max_size, max_depth=max_depth)
    if verify is not None:
        verify(env)  # before the body is decoded: unsigned input is not even parsed
    headers = env.headers
    name, task_id = headers.get("task"), headers.get("id")
    if not isinstance(name, str) or not name:
        raise DecodeError("not a protocol v2 task message: no 'task' header")
    if not isinstance(task_id, str) or not task_id:
        raise DecodeError("task message has no 'id' header")
    body = codec.loads(env.body, max_size=max_size, max_depth=max_depth)
    if not (isinstance(body, list) and len(body) == 3):
        raise DecodeError("task body is not [args, kwargs, embed]")
    args, kwargs, embed = body
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise DecodeError("task args must be a list and kwargs an object")
    if embed is None:
        embed = {}
    if not isinstance(embed, dict):
        raise DecodeError("task embed must be an object")
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
) -> bytes:
    """Encode a protocol v2 task message, headers in the order Celery 5.7 writes them."""
    args = list(args or ())
    kwargs = dict(kwargs or {})
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": shadow,
        "eta": isoformat(eta),
        "expires": isoformat(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": [time_limit, soft_time_limit],
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": saferepr(tuple(args)),
        "kwargsrepr": saferepr(kwargs),
        "origin": _ORIGIN,
        "ignore_result": ignore_result,
        "replaced_task_nesting": replaced_task_nesting,
        "stamped_headers": None,
        "stamps": {},
    }
    if extra_headers:
        for key, value in extra_headers.items():
            headers.setdefault(key, value)
    embed = {"callbacks": callbacks or None, "errbacks": errbacks or None,
             "chain": chain or None, "chord": chord}
    body = codec.dumps([args, kwargs, embed]).encode("utf-8")
    properties = {
        "correlation_id": task_id,
        "reply_to": reply_to or _REPLY_TO,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority or 0,
    }
    env = Envelope(headers, properties, body)
    if signer is not None:
        signer.sign_envelope(env)
    return env.encode()


_REPLY_TO = str(uuid.uuid3(uuid.NAMESPACE_OID, _ORIGIN))
