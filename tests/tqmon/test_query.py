"""The ``/`` filter language: what matches, what does not, and errors with positions."""

from __future__ import annotations

from typing import Any

import pytest

from tqmon.query import QueryError, parse

NOW = 10_000.0

ROWS: dict[str, dict[str, Any]] = {
    "email_fail": {
        "id": "7f3a0c1e-1111-4d1b-ac63-38d064bf1402", "name": "demo.send_email",
        "state": "FAILURE", "worker": "demo1@host-3", "queue": "emails",
        "exc_type": "SMTPError", "exception": "SMTPError('relay refused for user42')",
        "signature": "9f3a12ab34cd", "root_id": "7f3a0c1e-1111-4d1b-ac63-38d064bf1402",
        "args": "('user42@example.com',)", "kwargs": "{'template': 'receipt'}",
        "retries": 3, "runtime": 0.4, "received": NOW - 600, "started": NOW - 599,
    },
    "charge_ok": {
        "id": "19be0000-2222-4d1b-ac63-38d064bf1404", "name": "demo.charge", "state": "SUCCESS",
        "worker": "demo2@host-1", "queue": "celery", "exc_type": None, "exception": None,
        "signature": None, "root_id": "22c00000-3333-4d1b-ac63-38d064bf149a",
        "args": "('ord-1042', 4999)", "kwargs": "{}", "retries": 0, "runtime": 45.0,
        "received": NOW - 30,
    },
    "card_declined": {
        "id": "22c00000-3333-4d1b-ac63-38d064bf149a", "name": "demo.charge", "state": "FAILURE",
        "worker": "demo2@host-1", "queue": "celery", "exc_type": "CardDeclined",
        "exception": "CardDeclined('card visa-4242 declined for order ord-7')",
        "signature": "abcdef012345", "root_id": "22c00000-3333-4d1b-ac63-38d064bf149a",
        "args": "('ord-7', 1299)", "kwargs": "{}", "retries": 0, "runtime": 0.2,
        "age": 120.0,
    },
    "queued": {
        "id": "aaaa0000-4444-4d1b-ac63-38d064bf1400", "name": "demo.resize_image",
        "state": "PENDING", "worker": None, "queue": "media", "retries": 0, "runtime": None,
        "sent": NOW - 400,
    },
}


def matching(text: str) -> set[str]:
    query = parse(text)
    return {key for key, row in ROWS.items() if query.matches(row, NOW)}


@pytest.mark.parametrize(("text", "expected"), [
    ("", set(ROWS)),
    ("   ", set(ROWS)),
    ("name:demo.charge", {"charge_ok", "card_declined"}),
    ("name:send_*", {"email_fail"}),            # a glob finds the dotted tail
    ("name:demo.*", set(ROWS)),
    ("name:CHARGE", {"charge_ok", "card_declined"}),  # case-insensitive substring
    ("state:FAILURE", {"email_fail", "card_declined"}),
    ("state:failed", {"email_fail", "card_declined"}),  # alias
    ("state:queued", {"queued"}),
    ("state:SUCCESS,PENDING", {"charge_ok", "queued"}),
    ("state:S*", {"charge_ok"}),
    ("!state:FAILURE", {"charge_ok", "queued"}),
    ("worker:host-1", {"charge_ok", "card_declined"}),
    ("worker:demo1@*", {"email_fail"}),
    ("queue:emails", {"email_fail"}),
    ("exc:CardDeclined", {"card_declined"}),
    ("exc:relay", {"email_fail"}),                # exc: searches the message too
    ("sig:9f3a", {"email_fail"}),
    ("root:22c0", {"charge_ok", "card_declined"}),
    ("id:19be", {"charge_ok"}),
    ("args:ord-7", {"card_declined"}),
    ("kwargs:receipt", {"email_fail"}),
    ("age>5m", {"email_fail", "queued"}),         # received/sent timestamps
    ("age<5m", {"charge_ok", "card_declined"}),   # explicit age wins
    ("age>=120s", {"email_fail", "queued", "card_declined"}),
    ("runtime>30s", {"charge_ok"}),
    ("runtime<500ms", {"email_fail", "card_declined"}),  # no runtime: no match
    ("retries>=2", {"email_fail"}),
    ("retries=0", {"charge_ok", "card_declined", "queued"}),
    ("retries!=0", {"email_fail"}),
    ("declined", {"card_declined"}),               # bare word: exception
    ("ord-1042", {"charge_ok"}),                   # bare word: args
    ("7f3a0c1e", {"email_fail"}),                  # bare word: id
    ('"visa-4242 declined"', {"card_declined"}),   # quoted phrase
    ('exc:"for order"', {"card_declined"}),
    ("~decl(ined|ared)", {"card_declined"}),       # regex, parentheses inside it
    ("exc:~^smtp", {"email_fail"}),
    ("name:charge state:FAILURE", {"card_declined"}),  # implicit AND
    ("name:charge AND state:FAILURE", {"card_declined"}),
    ("queue:emails OR queue:media", {"email_fail", "queued"}),
    ("queue:emails or queue:media", {"email_fail", "queued"}),
    ("(queue:emails OR queue:media) !state:PENDING", {"email_fail"}),
    ("!(queue:emails OR queue:media)", {"charge_ok", "card_declined"}),
    ("state:FAILURE (exc:Card OR retries>=3)", {"email_fail", "card_declined"}),
    ("!!state:SUCCESS", {"charge_ok"}),
    ("state:FAILUR", set()),                       # not a state: matches nothing
])
def test_matches(text: str, expected: set[str]) -> None:
    assert matching(text) == expected


@pytest.mark.parametrize(("text", "message", "position"), [
    ("nmae:charge", "unknown field 'nmae'", 0),
    ("state:FAILURE  colour:red", "unknown field 'colour'", 15),
    ("age>5x", "bad duration '5x'", 4),
    ("runtime>", "runtime> needs a value", 8),
    ("retries>1.5", "retries takes a whole number", 8),
    ("size>3", "cannot compare 'size'", 0),
    ("(name:a OR name:b", "missing ')'", 0),
    ("name:a)", "unbalanced ')'", 6),
    ("OR name:a", "expected a term", 0),
    ("name:a OR", "OR needs a term after it", 7),
    ("name:a AND", "AND needs a term on each side", 7),
    ("!", "'!' needs a term after it", 0),
    ("state:SUCCESS,,RETRY", "empty state in list", 14),
    ("name:", "name: needs a value", 0),
    ('exc:"unterminated', "unterminated quote", 4),
    ("exc:~decl(ined", "bad regular expression", 9),  # at the unclosed "("
    ("()", "expected a term", 1),
])
def test_errors_have_message_and_position(text: str, message: str, position: int) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    assert message in info.value.message
    assert info.value.position == position
    assert f"column {position + 1}" in str(info.value)


def test_query_reports_fields_and_truthiness() -> None:
    query = parse("name:charge age>5m boom")
    assert query.fields == {"name", "age", "*"}
    assert query and not parse("  ")
    assert query.text == "name:charge age>5m boom"


def test_missing_and_odd_values_never_raise() -> None:
    query = parse("name:x* worker:y exc:z age>1s runtime>1s retries>1 sig:a root:b id:c word")
    for row in ({}, {"name": None, "retries": "3", "runtime": True, "age": "old"},
                {"name": 42, "worker": ["a"], "state": 7}):
        assert query.matches(row, NOW) is False
    assert parse("!name:x").matches({}, NOW) is True


def test_untrusted_text_is_matched_literally() -> None:
    row = {"name": "evil[bold]", "args": "\x1b[2J(1,)", "id": "x", "state": "SUCCESS"}
    assert parse('"[bold]"').matches(row, NOW)
    assert parse("args:\x1b[2J").matches(row, NOW) is False  # a glob class, not a crash
    assert parse('args:"\x1b[2J"').matches(row, NOW)


def test_rows_that_are_not_tasks() -> None:
    worker = {"name": "demo1@vm", "worker": "demo1@vm", "state": "online"}
    flow = {"root": "22c0aa", "id": "22c0aa", "name": "demo.validate", "state": "RUNNING"}
    signature = {"sig": "9f3a12ab34cd", "id": "9f3a12ab34cd", "state": "FAILURE",
                 "exc": "CardDeclined card <str> declined", "name": "demo.charge"}
    assert parse("state:online").matches(worker, NOW)
    assert not parse("state:lost").matches(worker, NOW)
    assert parse("state:running").matches(flow, NOW)            # the word itself...
    assert parse("state:running").matches({"state": "STARTED"}, NOW)  # ...or its task state
    assert parse("root:22c0").matches(flow, NOW)
    assert parse("sig:9f3a exc:CardDeclined").matches(signature, NOW)
    assert parse("declined").matches(signature, NOW)
