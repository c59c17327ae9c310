"""The signature part of Celery's canvas guide: building and inspecting signatures.

These need no worker: they check the objects a Celery user builds before sending
anything (fields, dict/wire form, partial merging, immutability, links), with the
values the guide shows.
"""

from __future__ import annotations

import json

import pytest

from tests.acceptance.proj.tasks import add, log_error, mul, xsum
from tqcore import chain, group, signature

pytestmark = pytest.mark.usefixtures("app")


# == Signatures =========================================================================


def test_signature_by_name() -> None:
    s = signature("proj.add", args=(2, 2), countdown=10)
    assert repr(s) == "proj.add(2, 2)"
    assert s.task == "proj.add"
    assert tuple(s.args) == (2, 2)
    assert s.kwargs == {}
    assert s.options == {"countdown": 10}


def test_task_signature_method() -> None:
    s = add.signature((2, 2), countdown=10)
    assert repr(s) == "proj.add(2, 2)"
    assert s.options == {"countdown": 10}


def test_star_shortcut_and_kwargs() -> None:
    assert repr(add.s(2, 2)) == "proj.add(2, 2)"
    assert repr(add.s(2, 2, debug=True)) == "proj.add(2, 2, debug=True)"
    s = add.signature((2, 2), {"debug": True}, countdown=10)
    assert tuple(s.args) == (2, 2)
    assert s.kwargs == {"debug": True}
    assert s.options == {"countdown": 10}


def test_signature_is_a_dict_with_celerys_wire_fields() -> None:
    s = add.s(2, 2)
    assert isinstance(s, dict)
    assert json.loads(json.dumps(s)) == {
        "task": "proj.add", "args": [2, 2], "kwargs": {}, "options": {},
        "subtask_type": None, "immutable": False,
    }
    assert json.loads(json.dumps(add.si(2, 2)))["immutable"] is True


def test_signature_round_trips_through_dict_and_json() -> None:
    s = add.s(2, 2).set(countdown=1)
    again = signature(dict(s))
    assert again == s
    assert again.task == "proj.add" and tuple(again.args) == (2, 2)
    assert again.options == {"countdown": 1}
    wire = signature(json.loads(json.dumps(s)))
    assert wire.task == "proj.add"
    assert tuple(wire.args) == (2, 2)
    assert wire.kwargs == {} and wire.options == {"countdown": 1}
    assert wire.immutable is False


def test_set_updates_options_in_place_and_returns_self() -> None:
    s = add.s(2, 2)
    assert s.set(countdown=1) is s
    assert s.options == {"countdown": 1}
    assert repr(s) == "proj.add(2, 2)"


def test_clone_prepends_args_merges_kwargs_and_leaves_original() -> None:
    s = add.s(2)
    c = s.clone(args=(4,), kwargs={"debug": True})
    # The guide prints add(2, 4, debug=True); Celery 5.7's code (Signature._merge)
    # prepends partial args like every other partial call: add(4, 2, debug=True).
    assert tuple(c.args) == (4, 2)
    assert c.kwargs == {"debug": True}
    assert c is not s
    assert tuple(s.args) == (2,) and s.kwargs == {}


def test_immutable_signatures() -> None:
    assert add.signature((2, 2), immutable=True).immutable is True
    s = add.si(2, 2)
    assert s.immutable is True
    # Only options can be set on an immutable signature; partial args are ignored.
    assert tuple(s.clone(args=(5,)).args) == (2, 2)


def test_link_returns_callback_on_error_returns_self() -> None:
    s = add.s(2, 2)
    cb = mul.s(4)
    assert s.link(cb) is cb
    eb = log_error.s()
    assert s.on_error(eb) is s
    assert [sig.task for sig in s.options["link"]] == ["proj.mul"]
    assert [sig.task for sig in s.options["link_error"]] == ["proj.log_error"]


def test_chain_repr_and_types() -> None:
    c = chain(add.s(4, 4), mul.s(8), mul.s(10))
    assert len(c.tasks) == 3
    # Nested chains are flattened: 4 steps, not 3.
    c2 = add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8))
    assert [t.task for t in c2.tasks] == ["proj.add", "proj.mul", "proj.add", "proj.mul"]


def test_group_holds_its_signatures() -> None:
    g = group(add.s(2, 2), add.s(4, 4))
    assert [tuple(t.args) for t in g.tasks] == [(2, 2), (4, 4)]
    assert len(group(add.s(i, i) for i in range(10)).tasks) == 10


def test_group_piped_into_a_task_is_a_chord() -> None:
    c = group(add.s(i, i) for i in range(10)) | xsum.s()
    assert json.loads(json.dumps(c))["subtask_type"] == "chord"


def test_chunks_group_and_skew() -> None:
    g = add.chunks(zip(range(100), range(100), strict=True), 10).group()
    assert len(g.tasks) == 10
    g.skew(start=1, stop=10)
    assert [t.options["countdown"] for t in g.tasks] == [float(i) for i in range(1, 11)]


def test_calling_a_signature_executes_inline() -> None:
    assert add(2, 2) == 4
    assert add.s(2, 2)() == 4
