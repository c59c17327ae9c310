"""The ``/`` filter language (tqmon-ux.md §3.3): Flower's query syntax, extended.

::

    name:send_*  state:FAILURE,RETRY  worker:host-3*  queue:emails  exc:CardDeclined
    sig:9f3a  root:7f3a  id:7f3a  args:42  kwargs:force
    age>5m  runtime>=30s  retries>=2          comparisons: > >= < <= = !=
    timeout                                   bare word: substring of name/id/args/exception
    "card declined"   ~declin(ed|e)           quoted phrase; regular expression
    !state:SUCCESS    (a OR b) c              negation; OR; parentheses; AND is implicit

Patterns with ``*``, ``?`` or ``[...]`` are globs over the whole value; plain values are
case-insensitive substrings (``state:`` matches whole state names, with aliases such as
``failed`` and ``running``; ``sig:``, ``root:`` and ``id:`` match id prefixes). A value starting
with ``~`` is a regular expression (searched, case-insensitive). Durations take ``ms``, ``s``,
``m``, ``h`` or ``d`` (a bare number is seconds).

:func:`parse` raises :class:`QueryError` with a message and the character position of the
problem, for the UI to show inline; a parsed :class:`Query` matches plain row mappings.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Row = Mapping[str, Any]
Matcher = Callable[[Row, float], bool]

#: ``field:`` names and the row keys they look at (the short keys serve rows that are not
#: tasks: signature rows carry ``sig``/``exc``, flow rows ``root``).
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name",), "worker": ("worker",), "queue": ("queue",),
    "exc": ("exc_type", "exception", "exc"), "args": ("args",), "kwargs": ("kwargs",),
    "state": ("state",), "sig": ("signature", "sig"), "root": ("root_id", "root"), "id": ("id",),
}
#: Fields matched by id prefix rather than substring.
PREFIX_FIELDS = frozenset({"sig", "root", "id"})
#: Row keys a bare word searches.
BARE_KEYS = ("name", "id", "args", "exception", "exc_type", "exc")
#: Comparison fields and whether their values are durations.
COMPARE_FIELDS = {"age": True, "runtime": True, "retries": False}
#: Timestamps ``age`` falls back to when a row has no ``age`` (the earliest known).
AGE_KEYS = ("sent", "received", "started", "timestamp")

STATES = ("PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED")
STATE_ALIASES = {
    "failed": "FAILURE", "fail": "FAILURE", "failure": "FAILURE", "error": "FAILURE",
    "succeeded": "SUCCESS", "success": "SUCCESS", "ok": "SUCCESS", "done": "SUCCESS",
    "retry": "RETRY", "retrying": "RETRY", "retried": "RETRY",
    "running": "STARTED", "started": "STARTED", "active": "STARTED",
    "pending": "PENDING", "queued": "PENDING", "sent": "PENDING",
    "received": "RECEIVED", "reserved": "RECEIVED",
    "revoked": "REVOKED", "cancelled": "REVOKED", "rejected": "REJECTED",
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)?$", re.I)
_COMPARE = re.compile(r"^([A-Za-z_]\w*)(>=|<=|!=|==|>|<|=)(.*)$", re.S)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "=": lambda a, b: a == b, "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class QueryError(ValueError):
    """A query that cannot be parsed.

    Attributes:
        message: what is wrong, in one line.
        position: character offset in the query text where the problem starts.
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at column {position + 1})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Query:
    """A parsed filter. ``matches(row, now)`` says whether a row passes (empty: all do)."""

    text: str
    _match: Matcher = field(repr=False, compare=False)
    #: Field names the query uses (``"*"`` for bare words).
    fields: frozenset[str] = frozenset()

    def matches(self, row: Row, now: float) -> bool:
        """Whether ``row`` (name, state, worker, queue, exc_type, exception, signature,
        root_id, id, args, kwargs, retries, runtime, timestamps, age) passes the filter."""
        return self._match(row, now)

    def __bool__(self) -> bool:
        return bool(self.text.strip())


# -- tokens ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "(" ")" "!" "OR" "AND" "TERM"
    text: str
    pos: int
    quoted: bool = False  # part of the term was quoted: no operators, a literal value
    phrase: bool = False  # the whole term was one quoted string: a bare phrase


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c == "!" and (i + 1 >= n or text[i + 1] != "="):
            toks.append(_Tok("!", c, i))
            i += 1
        elif c == '"':
            value, i2 = _read_quoted(text, i)
            toks.append(_Tok("TERM", value, i, quoted=True, phrase=True))
            i = i2
        else:
            start = i
            buf: list[str] = []
            quoted = False
            depth = 0  # parentheses inside a regular expression belong to it
            while i < n and not text[i].isspace():
                ch = text[i]
                regex = buf[:1] == ["~"] or "".join(buf[:12]).find(":~") >= 0
                if ch == "(":
                    if not regex:
                        break
                    depth += 1
                elif ch == ")":
                    if not regex or depth == 0:
                        break
                    depth -= 1
                elif ch == '"':  # field:"quoted value"
                    value, i = _read_quoted(text, i)
                    buf.append(value)
                    quoted = True
                    continue
                buf.append(ch)
                i += 1
            word = "".join(buf)
            upper = word.upper()
            if not quoted and upper in ("OR", "||"):
                toks.append(_Tok("OR", word, start))
            elif not quoted and upper in ("AND", "&&"):
                toks.append(_Tok("AND", word, start))
            else:
                toks.append(_Tok("TERM", word, start, quoted))
    return toks


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    end = text.find('"', i + 1)
    if end < 0:
        raise QueryError("unterminated quote", i)
    return text[i + 1:end], end + 1


# -- parser ----------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.fields: set[str] = set()

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def parse(self) -> Matcher:
        if not self.toks:
            return lambda row, now: True
        m = self.or_expr()
        tok = self.peek()
        if tok is not None:
            raise QueryError("unbalanced ')'" if tok.kind == ")" else f"unexpected {tok.text!r}",
                             tok.pos)
        return m

    def or_expr(self) -> Matcher:
        parts = [self.and_expr()]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.i += 1
            if self.peek() is None or self.peek().kind in (")", "OR", "AND"):  # type: ignore[union-attr]
                raise QueryError("OR needs a term after it", tok.pos)
            parts.append(self.and_expr())
        return _any(parts)

    def and_expr(self) -> Matcher:
        parts: list[Matcher] = []
        while (tok := self.peek()) is not None and tok.kind not in (")", "OR"):
            if tok.kind == "AND":
                self.i += 1
                nxt = self.peek()
                if not parts or nxt is None or nxt.kind in (")", "OR", "AND"):
                    raise QueryError("AND needs a term on each side", tok.pos)
                continue
            parts.append(self.unary())
        if not parts:
            tok = self.peek()
            pos = tok.pos if tok is not None else len(self.text)
            raise QueryError("expected a term", pos)
        return _all(parts)

    def unary(self) -> Matcher:
        tok = self.peek()
        assert tok is not None
        if tok.kind == "!":
            self.i += 1
            if self.peek() is None or self.peek().kind in (")", "OR", "AND"):  # type: ignore[union-attr]
                raise QueryError("'!' needs a term after it", tok.pos)
            inner = self.unary()
            return lambda row, now: not inner(row, now)
        if tok.kind == "(":
            self.i += 1
            inner = self.or_expr()
            close = self.peek()
            if close is None or close.kind != ")":
                raise QueryError("missing ')'", tok.pos)
            self.i += 1
            return inner
        self.i += 1
        return self.term(tok)

    def term(self, tok: _Tok) -> Matcher:
        word, pos = tok.text, tok.pos
        if tok.phrase:
            self.fields.add("*")
            return _text_matcher(BARE_KEYS, word, pos, literal=True)
        head, sep, value = word.partition(":")
        if sep and head.lower() in TEXT_FIELDS:
            return self.field_term(head.lower(), value, pos, pos + len(head) + 1, tok.quoted)
        if sep and re.fullmatch(r"[A-Za-z_]\w*", head):
            raise QueryError(f"unknown field {head!r} (fields: {', '.join(TEXT_FIELDS)},"
                             f" or {', '.join(COMPARE_FIELDS)} with > < =)", pos)
        cmp = _COMPARE.match(word) if not tok.quoted else None
        if cmp is not None:
            return self.compare(cmp.group(1), cmp.group(2), cmp.group(3), pos)
        self.fields.add("*")
        return _text_matcher(BARE_KEYS, word, pos, literal=tok.quoted)

    def field_term(self, name: str, value: str, pos: int, vpos: int, literal: bool) -> Matcher:
        if value == "" and not literal:
            raise QueryError(f"{name}: needs a value", pos)
        self.fields.add(name)
        keys = TEXT_FIELDS[name]
        if name == "state":
            return _state_matcher(value, vpos)
        if name in PREFIX_FIELDS and (literal or not (value.startswith("~") or _is_glob(value))):
            prefix = value.lower()

            def by_prefix(row: Row, now: float) -> bool:
                for key in keys:
                    v = row.get(key)
                    if v is not None and str(v).lower().startswith(prefix):
                        return True
                return False
            return by_prefix
        return _text_matcher(keys, value, vpos, literal=literal)

    def compare(self, name: str, op: str, raw: str, pos: int) -> Matcher:
        key = name.lower()
        if key not in COMPARE_FIELDS:
            raise QueryError(f"cannot compare {name!r} (use {', '.join(COMPARE_FIELDS)})", pos)
        vpos = pos + len(name) + len(op)
        if raw == "":
            raise QueryError(f"{key}{op} needs a value", vpos)
        if COMPARE_FIELDS[key]:
            m = _DURATION.match(raw)
            if m is None:
                raise QueryError(f"bad duration {raw!r} (use e.g. 500ms, 30s, 5m, 2h)", vpos)
            bound = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
        else:
            if not raw.isdigit():
                raise QueryError(f"{key} takes a whole number, not {raw!r}", vpos)
            bound = float(raw)
        self.fields.add(key)
        test = _OPS[op]
        if key == "age":
            def by_age(row: Row, now: float) -> bool:
                age = _age(row, now)
                return age is not None and test(age, bound)
            return by_age

        def by_number(row: Row, now: float) -> bool:
            v = row.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float):
                return False
            return test(float(v), bound)
        return by_number


def _all(parts: list[Matcher]) -> Matcher:
    """AND of ``parts`` as nested two-way closures (no generator per row: this runs 100k times
    per redraw)."""
    if len(parts) == 1:
        return parts[0]
    head, tail = parts[0], _all(parts[1:])
    return lambda row, now: head(row, now) and tail(row, now)


def _any(parts: list[Matcher]) -> Matcher:
    """OR of ``parts`` (see :func:`_all`)."""
    if len(parts) == 1:
        return parts[0]
    head, tail = parts[0], _any(parts[1:])
    return lambda row, now: head(row, now) or tail(row, now)


def _is_glob(value: str) -> bool:
    return any(c in value for c in "*?[")


def _age(row: Row, now: float) -> float | None:
    age = row.get("age")
    if isinstance(age, int | float) and not isinstance(age, bool):
        return float(age)
    for key in AGE_KEYS:
        ts = row.get(key)
        if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > 0:
            return now - float(ts)
    return None


def _text_matcher(keys: tuple[str, ...], value: str, pos: int, literal: bool = False) -> Matcher:
    """Substring (plain or ``literal``), glob (``*?[``) or regex (``~``) match over ``keys``,
    case-insensitive."""
    test: Callable[[str], bool]
    if not literal and value.startswith("~") and len(value) > 1:
        try:
            rx = re.compile(value[1:], re.I)
        except re.error as exc:
            raise QueryError(f"bad regular expression: {exc.msg}",
                             pos + 1 + (exc.pos or 0)) from None
        test = lambda s: rx.search(s) is not None  # noqa: E731
    elif not literal and _is_glob(value) and not _is_glob(value.strip("*")) and \
            value.startswith("*") and value.endswith("*") and len(value) > 2:
        needle = value.strip("*").lower()  # *word*: a plain substring, fast
        test = lambda s: needle in s.lower()  # noqa: E731
    elif not literal and _is_glob(value):
        # The whole value, or its dotted tail: name:send_* finds demo.send_email.
        prefix = "" if value.startswith("*") else r"(?:[^.]*\.)*?"
        glob = re.compile(prefix + fnmatch.translate(value), re.I | re.S)
        test = lambda s: glob.match(s) is not None  # noqa: E731
    else:
        needle = value.lower()
        test = lambda s: needle in s.lower()  # noqa: E731

    if len(keys) == 1:
        key = keys[0]

        def match_one(row: Row, now: float) -> bool:
            v = row.get(key)
            return v is not None and test(v if isinstance(v, str) else str(v))
        return match_one

    def match(row: Row, now: float) -> bool:
        for key in keys:
            v = row.get(key)
            if v is not None and test(v if isinstance(v, str) else str(v)):
                return True
        return False
    return match


def _state_matcher(value: str, pos: int) -> Matcher:
    wanted: set[str] = set()
    globs: list[re.Pattern[str]] = []
    offset = pos
    for part in value.split(","):
        p = part.strip()
        if not p:
            raise QueryError("empty state in list", offset)
        if _is_glob(p):
            globs.append(re.compile(fnmatch.translate(p.upper())))
        else:
            # The word itself (worker rows say ONLINE/LOST, flows RUNNING) and the task state
            # it stands for (running → STARTED, failed → FAILURE).
            wanted.add(p.upper())
            if p.lower() in STATE_ALIASES:
                wanted.add(STATE_ALIASES[p.lower()])
        offset += len(part) + 1

    def match(row: Row, now: float) -> bool:
        state = row.get("state")
        if not isinstance(state, str):
            return False
        s = state.upper()
        return s in wanted or any(g.match(s) for g in globs)
    return match


def parse(text: str) -> Query:
    """Parse a filter.

    Raises:
        QueryError: with a one-line message and the position of the problem.
    """
    parser = _Parser(text)
    matcher = parser.parse()
    return Query(text, matcher, frozenset(parser.fields))
