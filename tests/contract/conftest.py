"""Fixtures of the transport contract suite: one fresh, private broker per test.

Every broker the suite runs against is one entry of :data:`BROKERS`: a function that
sets up a broker nobody else uses (registering its own cleanup on ``request``) and
returns how to reach it. Adding Redis or RabbitMQ is adding one entry, e.g.::

    def _redis(request: pytest.FixtureRequest) -> Broker:
        server = request.getfixturevalue("redis_server")
        return Broker(f"{server.url}?prefix=contract-{uuid.uuid4().hex}", multiprocess=True)
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tqcore.transports import Transport, from_url
from tqcore.transports import memory as memory_transport


@dataclasses.dataclass(frozen=True)
class Broker:
    """How a test reaches its broker.

    Attributes:
        url: the broker URL; every transport built from it talks to the same broker.
        multiprocess: True when other OS processes can reach the broker with ``url``.
    """

    url: str
    multiprocess: bool


def _memory(request: pytest.FixtureRequest) -> Broker:
    name = f"contract-{uuid.uuid4().hex}"
    request.addfinalizer(lambda: memory_transport.reset(name))
    return Broker(f"memory://{name}", multiprocess=False)


def _sqlite(request: pytest.FixtureRequest) -> Broker:
    path = request.getfixturevalue("tmp_path") / "broker.db"
    return Broker(f"sqlite:///{path}", multiprocess=True)  # absolute: sqlite:////tmp/...


#: Broker id -> factory of a fresh broker for one test. Server plugins in
#: ``tests/servers`` add theirs through a ``CONTRACT_BROKERS`` dict.
BROKERS: dict[str, Callable[[pytest.FixtureRequest], Broker]] = {
    "memory": _memory,
    "sqlite": _sqlite,
}


def _load_server_brokers() -> None:
    import importlib
    import pathlib

    for path in sorted((pathlib.Path(__file__).parent.parent / "servers").glob("*.py")):
        if path.stem == "__init__":
            continue
        module = importlib.import_module(f"tests.servers.{path.stem}")
        BROKERS.update(getattr(module, "CONTRACT_BROKERS", {}))


_load_server_brokers()


@pytest.fixture(params=list(BROKERS))
def broker(request: pytest.FixtureRequest) -> Broker:
    """A fresh broker of each kind in :data:`BROKERS`."""
    return BROKERS[request.param](request)


@pytest.fixture
def connect(broker: Broker) -> Iterator[Callable[..., Transport]]:
    """Open another client of the test's broker: ``connect(max_deliveries=2)``."""
    opened: list[Transport] = []

    def connect(**options: Any) -> Transport:
        transport = from_url(broker.url, **options)
        opened.append(transport)
        return transport

    yield connect
    for transport in opened:
        transport.close()


@pytest.fixture
def transport(connect: Callable[..., Transport]) -> Transport:
    """A client of a fresh broker, with the default options."""
    return connect()
