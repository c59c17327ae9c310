"""Signatures and primitives: Celery's dict form and calling semantics (no broker)."""

from __future__ import annotations

import json

import pytest

from tqcore import App, chain, chord, chunks, group, signature
from tqcore.canvas import Signature, xmap, xstarmap


@pytest.fixture()
def app() -> App:
    app = App("canvas", broker="memory://canvas-unit", set_as_current=False)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.tsum")
    def tsum(xs: list[int]) -> int:
        return sum(xs)

    return app


def test_signature_is_celerys_dict(app: App) -> None:
    add = app.tasks["t.add"]
    sig = add.s(2, 2).set(countdown=10)
    assert dict(sig) == {"task": "t.add", "args": (2, 2), "kwargs": {},
                         "options": {"countdown": 10}, "subtask_type": None, "immutable": False}
    again = signature(json.loads(json.dumps(sig)), app=app)
    assert again == sig and isinstance(again, Signature)


def test_partial_args_are_prepended_and_kwargs_merged(app: App) -> None:
    sig = app.tasks["t.add"].s(2, z=1)
    args, kwargs, _ = sig._merge((4,), {"w": 2})
    assert args == (4, 2) and kwargs == {"z": 1, "w": 2}


def test_immutable_signature_ignores_new_args(app: App) -> None:
    sig = app.tasks["t.add"].si(2, 2)
    assert sig.clone((99,)).args == (2, 2)


def test_clone_does_not_share_options(app: App) -> None:
    sig = app.tasks["t.add"].s(1).set(queue="a")
    c = sig.clone()
    c.set(queue="b")
    assert sig.options["queue"] == "a"


@pytest.mark.parametrize("build, kind", [
    (lambda a: chain(a.s(1, 1), a.s(2)), "chain"),
    (lambda a: group(a.s(1, 1), a.s(2, 2)), "group"),
    (lambda a: chord([a.s(1, 1)], a.s(2)), "chord"),
    (lambda a: xmap(a.s(), [1, 2]), "xmap"),
    (lambda a: xstarmap(a.s(), [(1, 2)]), "xstarmap"),
    (lambda a: chunks(a.s(), [(1, 2)], 1), "chunks"),
])
def test_primitives_round_trip_through_json(app: App, build, kind) -> None:  # type: ignore[no-untyped-def]
    sig = build(app.tasks["t.add"])
    data = json.loads(json.dumps(sig))
    assert data["subtask_type"] == kind
    back = Signature.from_dict(data, app=app)
    assert type(back) is type(sig)
    assert json.loads(json.dumps(back)) == data


def test_pipe_builds_chains_and_group_pipe_task_builds_a_chord(app: App) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    c = add.s(1, 1) | add.s(2) | add.s(3)
    assert isinstance(c, chain) and len(c.tasks) == 3
    assert isinstance(group(add.s(1, 1)) | tsum.s(), chord)


def test_chain_with_group_then_task_is_prepared_as_a_chord(app: App) -> None:
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    steps = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(5)).prepare_steps()
    assert len(steps) == 2 and isinstance(steps[1], chord)
    assert isinstance(steps[1].body, chain) and len(steps[1].body.tasks) == 2


def test_frozen_chain_links_results_to_parents(app: App) -> None:
    add = app.tasks["t.add"]
    c = add.s(1, 1) | add.s(2) | add.s(3)
    res = c.freeze()
    assert res.parent is not None and res.parent.parent is not None
    ids = [t.id for t in c.tasks]
    assert [res.parent.parent.id, res.parent.id, res.id] == ids
    assert c.tasks[1].options["parent_id"] == ids[0]
    assert all(t.options["root_id"] == ids[0] for t in c.tasks)


def test_eager_canvas_gives_celerys_values(app: App) -> None:
    app.conf.task_always_eager = True
    add, tsum = app.tasks["t.add"], app.tasks["t.tsum"]
    assert (add.s(2, 2) | add.s(4) | add.s(8))().get() == 16
    assert group(add.s(i, i) for i in range(5))().get() == [0, 2, 4, 6, 8]
    assert chord((add.s(i, i) for i in range(10)), tsum.s())().get() == 90
    assert add.chunks(zip(range(4), range(4)), 2)().get() == [[0, 2], [4, 6]]
    assert tsum.map([range(3), range(4)]).apply().get() == [3, 6]
