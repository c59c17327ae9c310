"""A private redis-server for the tests (aesthetics.md §8.7).

``redis_server`` (session scope) starts ``redis-server`` on a free loopback port with a
unix socket in a temp dir and no persistence, waits for ``PING``, and stops it with
``SHUTDOWN NOSAVE`` (only this pid, never a server it did not start). Tests isolate
themselves by a key prefix (``?prefix=t-<uuid>:``) rather than by db number or
``FLUSHALL``. Without the binary, Redis tests are skipped, unless ``CI=true``, where
they fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

STARTUP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class RedisServer:
    """A running test server.

    Attributes:
        host: loopback address.
        port: its TCP port.
        unix_socket: path of its unix socket.
        pid: its process id.
    """

    host: str
    port: int
    unix_socket: str
    pid: int

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def private_url(self, tag: str = "t") -> str:
        """The server URL with a fresh key prefix: a namespace nobody else uses."""
        return f"{self.url}?prefix={tag}-{uuid.uuid4().hex[:12]}:"

    def client(self) -> Any:
        """A raw redis-py client over the unix socket (for assertions on keys)."""
        import redis

        return redis.Redis(unix_socket_path=self.unix_socket, socket_timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server is not installed (apt-get install -y redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing("redis-py is not installed")
    assert binary is not None
    return binary


@contextlib.contextmanager
def running_redis(tmp: Path, port: int | None = None,
                  tls: tuple[Path, Path, Path] | None = None) -> Iterator[RedisServer]:
    """Run a redis-server in ``tmp`` (on ``port`` or a free one) until the block ends.

    The server has no persistence, listens on 127.0.0.1 and a unix socket, and is
    stopped with ``SHUTDOWN NOSAVE`` (or is already gone, if the test killed it).
    With ``tls=(cert, key, ca)`` the port speaks TLS only (clients need no certificate).
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    binary = _binary()
    tmp.mkdir(parents=True, exist_ok=True)
    sock = str(tmp / "redis.sock")
    port = port or _free_port()
    log = open(tmp / "redis.log", "ab")  # noqa: SIM115 - kept open for the server's life
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls[0]),
                  "--tls-key-file", str(tls[1]), "--tls-ca-cert-file", str(tls[2]),
                  "--tls-auth-clients", "no"]
    proc = subprocess.Popen(
        [binary, *listen, "--bind", "127.0.0.1", "--unixsocket", sock,
         "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(tmp),
         "--daemonize", "no", "--protected-mode", "yes", "--databases", "16"],
        stdout=log, stderr=subprocess.STDOUT)
    # no retries: SHUTDOWN drops the connection, and redis-py would retry it for seconds
    client = redis.Redis(unix_socket_path=sock, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            if client.ping():
                break
        except (redis.ConnectionError, FileNotFoundError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log.close()
            pytest.fail(f"redis-server did not start: {(tmp / 'redis.log').read_text()[-2000:]}")
        time.sleep(0.02)
    try:
        yield RedisServer("127.0.0.1", port, sock, proc.pid)
    finally:
        if proc.poll() is None:
            try:
                client.shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        client.close()
        log.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server private to this test session (one per xdist worker)."""
    tmp = Path(tempfile.mkdtemp(prefix="tq-redis-"))
    try:
        with running_redis(tmp) as server:
            yield server
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A broker URL with a key prefix private to one test."""
    return redis_server.private_url()


def _contract_broker(request: pytest.FixtureRequest) -> Any:
    from tests.contract.conftest import Broker

    server: RedisServer = request.getfixturevalue("redis_server")
    return Broker(server.private_url("contract"), multiprocess=True)


#: Merged into the transport contract suite's brokers (tests/contract/conftest.py).
CONTRACT_BROKERS = {"redis": _contract_broker}
