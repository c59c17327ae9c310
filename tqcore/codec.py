"""Hardened JSON: the only content type tqcore accepts, decoded with caps.

Everything read off a broker or a result store goes through :func:`loads`, which
refuses oversized input, invalid UTF-8, NaN/Infinity, giant integers and nesting
beyond a depth cap, always with :class:`~tqcore.exceptions.DecodeError` and a reason
(never ``RecursionError`` or a crash). :func:`dumps` writes compact JSON and turns
values JSON cannot carry (datetimes, UUIDs, sets, bytes) into strings or lists.

orjson does the work where it gives the same answer as the standard library (its
decoder is about twice as fast, its encoder ten times): :func:`loads` of bytes, and
:func:`dumps_own` of the values tqcore builds itself (events). Everything orjson refuses
or would read differently goes through the standard library, which stays the reference.
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from tqcore.exceptions import DecodeError

JSON = "application/json"
#: Default cap on an encoded message, bytes.
MAX_SIZE = 10 * 1024 * 1024
#: Default cap on container nesting.
MAX_DEPTH = 100


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID | decimal.Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if hasattr(obj, "__json__"):
        return obj.__json__()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact JSON text for ``obj``.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent.
        ValueError: ``obj`` holds NaN or infinity.
    """
    return _encoder.encode(obj)


_str = json.encoder.encode_basestring  # what dumps() writes for a str (not ASCII-only)


def jsonv(value: Any) -> str:
    """``dumps(value)``, quicker for the scalars that make up most headers."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return _str(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    return dumps(value)


_OWN_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                | orjson.OPT_PASSTHROUGH_DATACLASS)


def dumps_own(obj: Any) -> bytes:
    """UTF-8 JSON for a value tqcore built itself (an event, a batch of events).

    The JSON value :func:`dumps` would write (floats may be spelled differently:
    ``1e16`` for ``1e+16``), but for NaN and infinity, which become ``null`` (such values
    hold no user floats). Values orjson refuses (integers over 64 bits, strings that are
    not UTF-8) go through :func:`dumps`.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent.
    """
    try:
        return orjson.dumps(obj, default=_default, option=_OWN_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is one
        return dumps(obj).encode("utf-8")


#: Digits to "9", every other byte to a space: 19 nines in a row after translating mark
#: an integer orjson would read as a float (beyond 64 bits), see :func:`loads`.
_DIGITS = bytes(0x39 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"9" * 19


def loads(data: bytes | str, *, max_size: int = MAX_SIZE,
          max_depth: int | None = MAX_DEPTH) -> Any:
    """Decode untrusted JSON (``max_depth`` None: text whose depth was checked before).

    Raises:
        DecodeError: over ``max_size`` bytes, not UTF-8, not JSON, NaN/Infinity, an
            integer over 4,300 digits, or nested deeper than ``max_depth``.
    """
    check_size(data, max_size)
    if type(data) is bytes and _LONG_NUMBER not in data.translate(_DIGITS):
        # orjson refuses what the standard library refuses here (NaN, bad UTF-8, control
        # characters) and a few things it accepts (lone surrogates, 1e400): those take
        # the standard path below. It reads integers beyond 64 bits as floats: a run of
        # 19 digits sends the text the standard way too.
        try:
            obj = orjson.loads(data)
        except (orjson.JSONDecodeError, RecursionError):
            pass
        else:
            if max_depth is not None and data.count(b"[") + data.count(b"{") > max_depth:
                check_depth(obj, max_depth)
            return obj
    text = data if isinstance(data, str) else utf8(data)
    try:
        obj = _decoder.decode(text)
    except RecursionError:
        raise DecodeError(f"JSON nested too deeply (limit {max_depth or MAX_DEPTH})") from None
    except ValueError as exc:  # JSONDecodeError, NaN, huge ints
        raise DecodeError(f"invalid JSON: {str(exc)[:200]}") from None
    # Nesting needs a bracket per level: text with few brackets (most messages, counted
    # at C speed, strings included) cannot be too deep, so the walk is spared.
    if max_depth is not None and text.count("[") + text.count("{") > max_depth:
        check_depth(obj, max_depth)
    return obj


def check_size(data: bytes | str, max_size: int = MAX_SIZE) -> None:
    """Raise :class:`DecodeError` if ``data`` is over ``max_size`` bytes (or characters)."""
    if len(data) > max_size:
        raise DecodeError(f"message too large: {len(data)} bytes (limit {max_size})")


def utf8(data: bytes | bytearray | memoryview) -> str:
    """``data`` decoded as strict UTF-8.

    Raises:
        DecodeError: not UTF-8 (naming the first bad byte).
    """
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


def check_parsed(data: bytes, obj: Any, *, max_size: int = MAX_SIZE,
                 max_depth: int | None = MAX_DEPTH) -> None:
    """The checks :func:`loads` makes, for ``obj`` decoded from ``data`` elsewhere
    (strict UTF-8, as :func:`loads` decodes): its size and depth caps.

    Raises:
        DecodeError: over ``max_size`` bytes or nested deeper than ``max_depth``.
    """
    check_size(data, max_size)
    if max_depth is not None and data.count(b"[") + data.count(b"{") > max_depth:
        check_depth(obj, max_depth)


def check_depth(obj: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`DecodeError` if ``obj`` nests containers deeper than ``max_depth``."""
    # Level by level, keeping only the containers of each level, with the values of a
    # wide level chained at C speed: a 200-step chain's body holds thousands of values
    # and is decoded at every step, where a Python loop over them cost more than the
    # JSON decoding itself.
    level = [obj] if type(obj) is dict or type(obj) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise DecodeError(f"JSON nested too deeply (limit {max_depth})")
        if len(level) <= 4:
            values: Iterable[Any] = itertools.chain.from_iterable(
                node.values() if type(node) is dict else node for node in level)
        else:
            dicts = [n for n in level if type(n) is dict]
            values = itertools.chain.from_iterable(map(dict.values, dicts))
            if len(dicts) < len(level):
                values = itertools.chain(values, itertools.chain.from_iterable(
                    [n for n in level if type(n) is list]))
        level = [v for v in values if type(v) is dict or type(v) is list]
