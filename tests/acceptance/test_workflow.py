"""A realistic workflow, and retries, run by a real worker process.

The workflow is ``A -> group(B1, B2) -> C -> D`` built with Celery's canvas::

    chain(wf_a.s(10), group(wf_b1.s(), wf_b2.s()), wf_c.s(), wf_d.s())

A group followed by a task becomes a chord, so C receives ``[B1, B2]``'s results in
header order. Values: A = 10 + 1 = 11, B1 = 22, B2 = 33, C = {"inputs": [22, 33],
"total": 55}, D = 550. ``link_error`` is given for the whole workflow.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.acceptance.helpers import (
    WAIT,
    leaves,
    records,
    token,
    wait_for,
    wait_state,
)
from tests.acceptance.proj.tasks import (
    always_retry,
    autoretry,
    backoff,
    flaky,
    log_error,
    read_records,
    wf_a,
    wf_b1,
    wf_b2,
    wf_c,
    wf_d,
)
from tqcore import AsyncResult, GroupResult, chain, group, states
from tqcore.exceptions import ChordError, MaxRetriesExceededError

pytestmark = pytest.mark.usefixtures("worker")


def _workflow(tag: str, *, fail_always: bool = False) -> Any:
    return chain(
        wf_a.s(10, token=tag),
        group(wf_b1.s(token=tag), wf_b2.s(token=tag, fail_always=fail_always)),
        wf_c.s(token=tag),
        wf_d.s(token=tag),
    )


def _steps(tag: str) -> dict[str, list[dict[str, Any]]]:
    """The workflow's task runs, by step name, from the records the tasks wrote."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for rec in records("wf", token=tag):
        steps.setdefault(rec["step"], []).append(rec)
    return steps


def _errbacks(tag: str) -> list[dict[str, Any]]:
    """Errback calls for this workflow's tasks (their request kwargs carry the token)."""
    return [r for r in read_records("errors") if (r.get("kwargs") or {}).get("token") == tag]


def _errbacks_for(ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in read_records("errors") if r["request_id"] in ids]


def test_workflow_with_a_step_that_retries_once(app: Any) -> None:
    tag = token()
    res_d = _workflow(tag).apply_async(link_error=log_error.s())

    assert res_d.get(timeout=60) == 550

    steps = _steps(tag)
    # Every step ran once, except B2 which ran twice; C got both results, in order.
    assert [r["args"] for r in steps["A"]] == [[10]]
    assert [r["args"] for r in steps["B1"]] == [[11]]
    assert [r["args"] for r in steps["B2"]] == [[11], [11]]
    assert [r["args"] for r in steps["C"]] == [[[22, 33]]]
    assert [r["args"] for r in steps["D"]] == [[{"inputs": [22, 33], "total": 55}]]
    assert steps["D"][0]["id"] == res_d.id

    # B2 retried itself once under the same task id, then succeeded.
    b2_runs = steps["B2"]
    assert [r["retries"] for r in b2_runs] == [0, 1]
    assert b2_runs[0]["id"] == b2_runs[1]["id"]
    b2 = AsyncResult(b2_runs[0]["id"], app=app)
    assert b2.get(timeout=WAIT) == 33
    assert b2.state == states.SUCCESS
    assert b2.retries == 1
    assert AsyncResult(steps["B1"][0]["id"], app=app).retries == 0
    assert AsyncResult(steps["C"][0]["id"], app=app).get(timeout=WAIT) == {
        "inputs": [22, 33], "total": 55}

    # One workflow: every task has A's id as root_id; B1 and B2 are A's children.
    a_id = steps["A"][0]["id"]
    assert {r["root_id"] for rs in steps.values() for r in rs} == {a_id}
    assert steps["B1"][0]["parent_id"] == a_id
    assert b2_runs[0]["parent_id"] == a_id
    assert steps["D"][0]["parent_id"] == steps["C"][0]["id"]

    # A retry is not a failure: the workflow's errback never fired.
    time.sleep(1.0)
    assert _errbacks(tag) == []
    ids = {r["id"] for rs in steps.values() for r in rs}
    assert _errbacks_for(ids) == []


def test_workflow_result_navigation(app: Any) -> None:
    """``.parent`` from D walks back to A; A's ``children`` list the group's tasks."""
    tag = token()
    res_d = _workflow(tag).apply_async(link_error=log_error.s())
    assert res_d.get(timeout=60) == 550
    steps = _steps(tag)

    res_c = res_d.parent
    assert res_c is not None, "D.parent should be C's result"
    assert res_c.id == steps["C"][0]["id"]
    assert res_c.get(timeout=WAIT) == {"inputs": [22, 33], "total": 55}

    header = res_c.parent
    assert header is not None, "C.parent should be the group's GroupResult"
    assert isinstance(header, GroupResult)
    assert [r.id for r in header.results] == [steps["B1"][0]["id"], steps["B2"][0]["id"]]
    # The group's results, joined, in call order.
    assert header.join(timeout=WAIT) == [22, 33]
    assert header.ready() and header.successful() and header.completed_count() == 2

    res_a = header.parent
    assert res_a is not None, "the group's parent should be A's result"
    assert res_a.id == steps["A"][0]["id"]
    assert res_a.get(timeout=WAIT) == 11
    assert res_a.parent is None

    # A's children are the group's tasks.
    children = wait_for(lambda: res_a.children, message="A.children")
    child_ids = {r.id for r in leaves(children)}
    assert {r.id for r in header.results} <= child_ids, f"A.children {children!r} lacks B1/B2"


def _run_failing_workflow(tag: str, app: Any) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    res_d = _workflow(tag, fail_always=True).apply_async(link_error=log_error.s())
    b2_runs = wait_for(lambda: _steps(tag).get("B2"), message="B2 to run")
    b2 = AsyncResult(b2_runs[0]["id"], app=app)
    with pytest.raises(MaxRetriesExceededError):
        b2.get(timeout=60)
    assert b2.state == states.FAILURE
    return res_d, _steps(tag)


def test_workflow_with_a_step_that_exhausts_its_retries(app: Any) -> None:
    tag = token()
    res_d, steps = _run_failing_workflow(tag, app)

    assert AsyncResult(steps["A"][0]["id"], app=app).get(timeout=WAIT) == 11
    # The parallel branch still completes.
    assert AsyncResult(steps["B1"][0]["id"], app=app).get(timeout=WAIT) == 22

    # B2 ran 1 + max_retries (2) times, under one id.
    b2_runs = steps["B2"]
    assert [r["retries"] for r in b2_runs] == [0, 1, 2]
    assert len({r["id"] for r in b2_runs}) == 1
    assert AsyncResult(b2_runs[0]["id"], app=app).retries == 2

    # The workflow's errback fired.
    wait_for(lambda: _errbacks(tag), message="the workflow's errback to fire")

    # get() on the last task does not hang: it raises the failure upstream of it.
    with pytest.raises((MaxRetriesExceededError, ChordError)):
        res_d.get(timeout=WAIT)

    # Downstream tasks never ran.
    time.sleep(1.0)
    steps = _steps(tag)
    assert "C" not in steps and "D" not in steps, steps
    # ...and, as in Celery, the chain's remaining task is stored as failed too
    # (Backend.mark_as_failure propagates along request.chain), so nobody waits forever.
    assert res_d.state == states.FAILURE


def test_workflow_errback_fires_once_for_the_chord_body(app: Any) -> None:
    """Celery's exact behaviour with ``task_allow_error_cb_on_chord_header`` off (default).

    The errback is linked to A, the chord body C and D, not to the header tasks; when
    B2 fails the chord's body is failed with ``ChordError`` and its errbacks are called
    once, with a request for C (``Backend.chord_error_from_stack``).
    """
    tag = token()
    _run_failing_workflow(tag, app)
    wait_for(lambda: _errbacks(tag), message="the workflow's errback to fire")
    time.sleep(1.0)
    fired = _errbacks(tag)
    assert [(r["task"], r["exc_type"]) for r in fired] == [("proj.wf_c", "ChordError")]
    exc = AsyncResult(fired[0]["request_id"], app=app).get(timeout=WAIT, propagate=False)
    assert isinstance(exc, ChordError), f"C's result is {exc!r}, expected a ChordError"
    assert "MaxRetriesExceededError" in str(exc)


# == Retries =============================================================================


def test_retry_then_success_does_not_call_errback(app: Any) -> None:
    tag = token()
    res = flaky.apply_async(("ok",), {"token": tag}, link_error=log_error.s())
    assert res.get(timeout=WAIT) == "ok"
    attempts = records("attempts", token=tag)
    assert [a["retries"] for a in attempts] == [0, 1]
    assert attempts[1]["at"] - attempts[0]["at"] >= 0.4  # countdown=0.5
    assert AsyncResult(res.id, app=app).retries == 1
    time.sleep(1.0)
    assert _errbacks_for({res.id}) == []


def test_state_is_retry_while_waiting_for_the_retry() -> None:
    tag = token()
    res = flaky.apply_async(("later",), {"token": tag, "countdown": 3})
    wait_state(res, states.RETRY)
    assert not res.ready()
    assert res.get(timeout=WAIT) == "later"
    assert res.state == states.SUCCESS


def test_max_retries_exceeded(app: Any) -> None:
    tag = token()
    res = always_retry.apply_async(kwargs={"token": tag}, link_error=log_error.s())
    with pytest.raises(MaxRetriesExceededError):
        res.get(timeout=WAIT)
    assert res.state == states.FAILURE
    assert [a["retries"] for a in records("attempts", token=tag)] == [0, 1, 2]
    assert AsyncResult(res.id, app=app).retries == 2
    # The errback fires once, for the final failure only.
    wait_for(lambda: _errbacks_for({res.id}), message="errback")
    time.sleep(1.0)
    fired = _errbacks_for({res.id})
    assert [r["exc_type"] for r in fired] == ["MaxRetriesExceededError"]


def test_autoretry_for_reraises_the_original_exception() -> None:
    tag = token()
    res = autoretry.apply_async(kwargs={"token": tag})
    # After max_retries the task's own exception is raised, not MaxRetriesExceededError.
    with pytest.raises(KeyError):
        res.get(timeout=WAIT)
    assert [a["retries"] for a in records("attempts", token=tag)] == [0, 1, 2]


def test_retry_backoff_doubles_the_delay() -> None:
    tag = token()
    res = backoff.apply_async(kwargs={"token": tag, "succeed_at": 2})
    assert res.get(timeout=60) == 2
    attempts = records("attempts", token=tag)
    assert [a["retries"] for a in attempts] == [0, 1, 2]
    # retry_backoff=True, retry_jitter=False: countdown = 2 ** retries -> 1 s, then 2 s.
    assert attempts[1]["at"] - attempts[0]["at"] >= 0.9
    assert attempts[2]["at"] - attempts[1]["at"] >= 1.9
