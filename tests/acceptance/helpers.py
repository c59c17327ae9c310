"""Small polling helpers shared by the acceptance tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tests.acceptance.proj.tasks import read_records

T = TypeVar("T")

#: Generous default wait for anything a worker has to do.
WAIT = 30.0


def token() -> str:
    """A unique tag for the records one test writes."""
    return uuid.uuid4().hex


def wait_for(predicate: Callable[[], T], timeout: float = WAIT, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises:
        AssertionError: it stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def records(kind: str, **match: Any) -> list[dict[str, Any]]:
    """Records of ``kind`` whose fields equal every ``match`` item."""
    return [r for r in read_records(kind) if all(r.get(k) == v for k, v in match.items())]


def wait_records(kind: str, count: int = 1, timeout: float = WAIT,
                 **match: Any) -> list[dict[str, Any]]:
    """Wait until at least ``count`` matching records exist; return them all."""
    return wait_for(lambda: (found := records(kind, **match)) and len(found) >= count and found,
                    timeout=timeout, message=f"{count} {kind!r} record(s) matching {match}")


def wait_state(result: Any, state: str, timeout: float = WAIT) -> None:
    """Wait until ``result.state == state``."""
    wait_for(lambda: result.state == state, timeout=timeout,
             message=f"{result!r} to reach {state} (last: {result.state})")


def leaves(node: Any) -> Iterator[Any]:
    """Every AsyncResult below ``node``, expanding GroupResults (anything with ``.results``)."""
    if node is None:
        return
    if isinstance(node, list | tuple):
        for item in node:
            yield from leaves(item)
        return
    subresults = getattr(node, "results", None)
    if subresults is not None:
        for item in subresults:
            yield from leaves(item)
    else:
        yield node
