"""A chain's rest cut from the message text is byte for byte what encoding it writes.

:mod:`tqcore.message_chain` passes a chain's remaining steps on as a slice of the body
just decoded; these tests hold the next message to the bytes the encoder writes for the
same values, and check that a body written any other way is encoded again instead.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tqcore import App, chain, codec, message
from tqcore.message_chain import MessageChain, RawJSONList, body_json

texts = st.text(max_size=8)
scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
steps = st.fixed_dictionaries({
    "task": texts, "args": st.lists(values, max_size=3),
    "kwargs": st.dictionaries(texts, values, max_size=2),
    "options": st.dictionaries(texts, values, max_size=3),
    "subtask_type": st.none(), "immutable": st.booleans()})
maybe_sigs = st.none() | st.lists(steps, min_size=1, max_size=2)


def decoded(payload: bytes) -> message.TaskMessage:
    return message.decode_task(payload)


@settings(max_examples=150, deadline=None)
@given(args=st.lists(values, max_size=3), kwargs=st.dictionaries(texts, values, max_size=3),
       callbacks=maybe_sigs, errbacks=maybe_sigs, chord=st.none() | steps,
       rest=st.lists(steps, min_size=2, max_size=6))
def test_the_rest_is_what_encoding_it_writes(args: list[Any], kwargs: dict[str, Any],
                                             callbacks: Any, errbacks: Any, chord: Any,
                                             rest: list[Any]) -> None:
    payload = message.build_task("t", "id-1", args, kwargs, queue="q", callbacks=callbacks,
                                 errbacks=errbacks, chain=rest, chord=chord)
    msg = decoded(payload)
    steps = msg.embed["chain"]
    assert type(steps) is MessageChain and steps == rest
    cut = steps.rest()
    assert type(cut) is RawJSONList
    assert list(cut) == rest[:-1]
    assert cut.json == codec.dumps(rest[:-1])
    # the next message carries the cut text: the same bytes as encoding the list
    kw: dict[str, Any] = {"queue": "q", "callbacks": callbacks, "errbacks": errbacks,
                          "chord": chord, "delivery_tag": "tag"}
    assert message.build_task("n", "id-2", [1], {}, chain=cut, **kw) == \
        message.build_task("n", "id-2", [1], {}, chain=list(cut), **kw)
    assert body_json(args, kwargs, callbacks, errbacks, cut, chord) == codec.dumps(
        [args, kwargs, {"callbacks": callbacks, "errbacks": errbacks, "chain": rest[:-1],
                        "chord": chord}])


def test_a_body_written_otherwise_is_encoded_again_or_cut_right() -> None:
    """A Celery producer's spacing: no cut (the caller encodes the list again). Its
    ASCII escapes with compact separators: the cut text decodes to the same steps."""
    rest = [{"task": "b", "args": ["é"]}, {"task": "a", "args": []}]
    env = json.loads(message.build_task("t", "id-1", [], {}, queue="q", chain=rest))
    body = [[], {}, {"callbacks": None, "errbacks": None, "chain": rest, "chord": None}]

    def steps_of(text: str) -> Any:
        env["body"] = base64.b64encode(text.encode()).decode()
        steps = decoded(json.dumps(env).encode()).embed["chain"]
        assert type(steps) is MessageChain and steps == rest
        return steps

    assert steps_of(json.dumps(body)).rest() is None
    cut = steps_of(json.dumps(body, separators=(",", ":"))).rest()
    assert cut is not None and "\\u00e9" in cut.json and json.loads(cut.json) == rest[:-1]


def test_a_changed_message_or_a_short_chain_is_not_cut() -> None:
    rest = [{"task": "b"}, {"task": "a"}]
    msg = decoded(message.build_task("t", "id-1", [1], {}, queue="q", chain=rest))
    steps = msg.embed["chain"]
    assert type(steps) is MessageChain and steps.rest() is not None
    msg.args.append(2)  # the task changed its own arguments: the text no longer matches
    assert steps.rest() is None
    one = decoded(message.build_task("t", "id-1", [], {}, queue="q", chain=[{"task": "a"}]))
    assert type(one.embed["chain"]) is list  # nothing left after the next step


def test_a_chain_runs_its_steps_in_order_with_the_cut_rest() -> None:
    """Eagerly through the worker's path: every step's message decoded and run."""
    from tqcore.trace import trace_task
    from tqcore.transports.base import Delivery
    from tqcore.worker.job import Job

    app = App("mc", broker="memory://", backend="memory://")
    seen: list[int] = []

    @app.task(name="mc.step")
    def step(acc: list[int], i: int) -> list[int]:
        seen.append(i)
        return [*acc, i]

    sent: list[Any] = []
    app.transport.enqueue_many = lambda ms: sent.extend(ms)  # type: ignore[method-assign]
    chain(step.s([], 0), *[step.s(i) for i in range(1, 30)]).apply_async()
    while sent:
        payload = sent.pop().payload
        msg = message.decode_task(payload)
        job = Job(Delivery(app.transport, "celery", payload, 1, 0, "x", msg.id), msg,
                  app.tasks[msg.name], "h")
        trace_task(app, job.task, job.request)
    assert seen == list(range(30))
