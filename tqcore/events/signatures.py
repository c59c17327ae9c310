"""Failure signatures: failures grouped by what went wrong, not by which task it happened to.

A signature is the exception type, the message with its variable parts replaced by
placeholders (UUIDs, quoted strings, hex ids, numbers) and the top frame of the traceback (file
basename and function; the line number is dropped so a deploy that shifts lines keeps the
signature). An incident is usually one signature, not 1,904 rows.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqcore.events.tasks import Task

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b")
# A quote preceded by a letter or digit is an apostrophe ("can't"), not the start of a string.
_QUOTED = re.compile(r"""(?<![A-Za-z0-9])(?:'[^'\n]*'|"[^"\n]*")""")
# 0x-prefixed, or 8+ hex digits mixing letters and digits (so words like "facade" survive).
_HEX = re.compile(
    r"\b(?:0[xX][0-9a-fA-F]+|(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,})\b")
# A digit run not glued to a preceding letter or digit: "order 42" and "user_7", not "v2" or "h264".
_NUMBER = re.compile(r"(?<![A-Za-z0-9])\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")
_FRAME = re.compile(r'File "([^"]*)", line \d+, in (\S+)')
_REPR = re.compile(r"^\s*([A-Za-z_][\w.]*)\((.*)\)\s*$", re.S)
_STRING_LITERAL = re.compile(r"""^(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")$""")

#: Normalised messages are cut to this length.
MAX_MESSAGE = 300


def normalise_message(message: str) -> str:
    """``message`` with UUIDs, quoted strings, hex ids and numbers replaced by placeholders.

    >>> normalise_message("order 123 for 'bob' at 0x7f3a")
    'order <num> for <str> at <hex>'
    """
    text = _UUID.sub("<uuid>", message)
    text = _QUOTED.sub("<str>", text)
    text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<num>", text)
    return _SPACE.sub(" ", text).strip()[:MAX_MESSAGE]


def top_frame(traceback: str | None) -> str:
    """``"file.py:function"`` of the last ``File "…", line N, in function`` line, else ``""``."""
    if not traceback:
        return ""
    at = traceback.rfind('File "')
    if at < 0:
        return ""
    match = _FRAME.match(traceback, at)
    if match is None:
        return ""
    path, func = match.groups()
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{func}"


def parse_exception(exception: str | None) -> tuple[str, str]:
    """``(type, message)`` from an exception repr such as ``ValueError('bad id 42')``.

    The message is what ``str(exc)`` would give for a single string argument (KeyError keeps
    its quotes, as ``str(KeyError('k'))`` does); other arguments are kept as written.
    """
    if not exception:
        return "", ""
    match = _REPR.match(exception)
    if match is None:
        return "", exception
    exc_type, inner = match.groups()
    inner = inner.strip()
    if exc_type != "KeyError" and _STRING_LITERAL.match(inner):
        try:
            value = ast.literal_eval(inner)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, str):
            return exc_type, value
    return exc_type, inner


def signature_of(exc_type: str | None, exc_message: str | None, exception: str | None,
                 traceback: str | None) -> tuple[str, str, str, str]:
    """``(id, type, normalised message, top frame)`` of a failure.

    ``exc_type``/``exc_message`` (tqcore's fields) win over what is parsed from the
    ``exception`` repr (Celery's field). The id is a stable 12-hex-digit digest of the rest.
    """
    if exc_type is None or exc_message is None:
        parsed_type, parsed_message = parse_exception(exception)
        exc_type = exc_type if exc_type is not None else parsed_type
        exc_message = exc_message if exc_message is not None else parsed_message
    message = normalise_message(exc_message)
    frame = top_frame(traceback)
    key = f"{exc_type}\x1f{message}\x1f{frame}".encode("utf-8", "replace")
    return hashlib.blake2b(key, digest_size=6).hexdigest(), exc_type, message, frame


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """An immutable view of one failure signature (see :meth:`FailureSignature.info`)."""

    id: str
    exc_type: str
    message: str
    frame: str
    #: The first raw message seen (before normalisation).
    example: str
    count: int
    first_seen: float
    last_seen: float
    task_names: Mapping[str, int]
    workers: Mapping[str, int]
    #: ``(minute start, count)`` for each minute with failures in the window.
    per_minute: tuple[tuple[float, int], ...]
    samples: tuple[str, ...]


class FailureSignature:
    """Counters for one signature; ``samples`` are the most recent task ids (bounded)."""

    __slots__ = ("id", "exc_type", "message", "frame", "example", "count", "first_seen",
                 "last_seen", "task_names", "workers", "per_minute", "samples")

    def __init__(self, id_: str, exc_type: str, message: str, frame: str, example: str,
                 ts: float, samples: int) -> None:
        self.id = id_
        self.exc_type = exc_type
        self.message = message
        self.frame = frame
        self.example = example
        self.count = 0
        self.first_seen = ts
        self.last_seen = ts
        self.task_names: dict[str, int] = {}
        self.workers: dict[str, int] = {}
        self.per_minute: dict[int, int] = {}
        self.samples: deque[str] = deque(maxlen=samples)

    def info(self) -> SignatureInfo:
        """An immutable copy."""
        return SignatureInfo(
            id=self.id, exc_type=self.exc_type, message=self.message, frame=self.frame,
            example=self.example, count=self.count, first_seen=self.first_seen,
            last_seen=self.last_seen, task_names=MappingProxyType(dict(self.task_names)),
            workers=MappingProxyType(dict(self.workers)),
            per_minute=tuple((m * 60.0, n) for m, n in sorted(self.per_minute.items())),
            samples=tuple(self.samples))

    def __repr__(self) -> str:
        return f"<FailureSignature {self.id} {self.exc_type}: {self.message} ×{self.count}>"


def _bump(counter: dict[str, int], key: str | None, limit: int) -> None:
    name = key if key is not None else "?"
    if name in counter or len(counter) < limit:
        counter[name] = counter.get(name, 0) + 1
    else:  # bounded: the rest share one bucket
        counter["…"] = counter.get("…", 0) + 1


class Signatures(Mapping[str, FailureSignature]):
    """The failure signatures seen, by id; least recently seen evicted beyond ``max_signatures``."""

    def __init__(self, max_signatures: int = 1_000, samples: int = 20, window_minutes: int = 60,
                 max_names: int = 50) -> None:
        self.max_signatures = max_signatures
        self.samples = samples
        self.window_minutes = window_minutes
        self.max_names = max_names
        self._items: OrderedDict[str, FailureSignature] = OrderedDict()

    def record(self, task: Task, ts: float) -> str:
        """Count ``task``'s failure at ``ts``; returns the signature id."""
        sig_id, exc_type, message, frame = signature_of(
            task.exc_type, task.exc_message, task.exception, task.traceback)
        items = self._items
        sig = items.get(sig_id)
        if sig is None:
            example = task.exc_message if task.exc_message is not None else (task.exception or "")
            sig = items[sig_id] = FailureSignature(sig_id, exc_type, message, frame, example[:1000],
                                                   ts, self.samples)
            if len(items) > self.max_signatures:
                items.popitem(last=False)
        else:
            items.move_to_end(sig_id)
        sig.count += 1
        if ts > sig.last_seen:
            sig.last_seen = ts
        if ts < sig.first_seen:
            sig.first_seen = ts
        _bump(sig.task_names, task.name, self.max_names)
        _bump(sig.workers, task.worker, self.max_names)
        sig.samples.append(task.uuid)
        minute = int(ts // 60)
        per_minute = sig.per_minute
        if minute not in per_minute:
            newest = max(per_minute, default=minute)
            if minute <= newest - self.window_minutes:
                return sig_id  # older than the window
            if minute > newest:
                for old in [m for m in per_minute if m <= minute - self.window_minutes]:
                    del per_minute[old]
        per_minute[minute] = per_minute.get(minute, 0) + 1
        return sig_id

    def top(self, limit: int = 20, by: str = "recent") -> tuple[SignatureInfo, ...]:
        """The ``limit`` most recently seen (``by="recent"``) or most frequent (``by="count"``)
        signatures, first first."""
        if by == "count":
            ranked = sorted(self._items.values(), key=lambda s: (-s.count, -s.last_seen))
            return tuple(sig.info() for sig in ranked[:limit])
        out: list[SignatureInfo] = []
        for sig in reversed(self._items.values()):
            if len(out) >= limit:
                break
            out.append(sig.info())
        return tuple(out)

    def __getitem__(self, sig_id: str) -> FailureSignature:
        return self._items[sig_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
