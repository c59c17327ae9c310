"""A private RabbitMQ node for the tests (aesthetics.md §8.7).

The node is configured only through environment variables: its own node name,
loopback listener, distribution and epmd ports, and data/log directories in a
temporary directory, with no plugins. It is started through the package's inner
launcher (``/usr/lib/rabbitmq/bin/rabbitmq-server``), not Debian's wrapper, which
would re-exec as the ``rabbitmq`` user and fail to write our root-owned temp dirs.
Default ports are never used, and only the processes started here are stopped.

Contract tests share the session's node and isolate themselves with a unique
entity prefix (``?prefix=``): every queue and exchange the transport creates is
named under it and deleted at teardown.

Missing binaries skip the tests locally and fail them when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LIBDIR = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class RabbitMQServer:
    """A running private node.

    Attributes:
        url: ``amqp://guest:guest@127.0.0.1:<port>//``.
        port: the AMQP listener port.
        node: the Erlang node name (for ``rabbitmqctl -n``).
        env: the environment the node and ``rabbitmqctl`` need.
        pid: the launcher's process id.
    """

    url: str
    port: int
    node: str
    env: dict[str, str]
    pid: int

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> <args>`` and return its output."""
        out = subprocess.run([_tool("rabbitmqctl"), "-n", self.node, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout, check=True)
        return out.stdout


def _tool(name: str) -> str:
    inner = LIBDIR / name
    if inner.exists():
        return str(inner)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"rabbitmq-server is required in CI: {reason}")
    pytest.skip(f"rabbitmq-server not available: {reason}")


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import pika

    deadline = time.monotonic() + START_TIMEOUT
    params = pika.ConnectionParameters("127.0.0.1", port, socket_timeout=2,
                                       connection_attempts=1, blocked_connection_timeout=2)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-4000:]}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            try:
                pika.BlockingConnection(params).close()
                return
            except Exception:  # noqa: BLE001 - not ready yet
                pass
        time.sleep(0.2)
    raise RuntimeError(f"rabbitmq-server not ready after {START_TIMEOUT}s:\n"
                       f"{log.read_text(errors='replace')[-4000:]}")


@contextlib.contextmanager
def run_rabbitmq(**config: Any) -> Iterator[RabbitMQServer]:
    """Start a private node (``config`` lines go into its ``rabbitmq.conf``)."""
    try:
        server = _tool("rabbitmq-server")
    except FileNotFoundError:
        _missing("no rabbitmq-server binary (apt-get install rabbitmq-server)")
        raise  # unreachable: _missing raises
    try:
        import pika  # noqa: F401
    except ImportError:
        _missing("pika is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="tq-rabbitmq-"))
    port, dist, epmd = _free_port(), _free_port(), _free_port()
    node = f"tqtest-{port}@localhost"
    plugins = tmp / "enabled_plugins"
    plugins.write_text("[].\n")
    conf = tmp / "rabbitmq.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in config.items()))
    env = dict(os.environ)
    env.update({
        "HOME": str(tmp),  # a private Erlang cookie
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(tmp / "mnesia"),
        "RABBITMQ_LOG_BASE": str(tmp / "log"),
        "RABBITMQ_PID_FILE": str(tmp / "rabbitmq.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_CONFIG_FILE": str(conf),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(tmp / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(tmp / "rabbitmq-env.conf"),
    })
    log = tmp / "stdout.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([server], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp, start_new_session=True)
    info = RabbitMQServer(f"amqp://guest:guest@127.0.0.1:{port}//", port, node, env, proc.pid)
    try:
        _wait_ready(port, proc, log)
        yield info
    finally:
        _stop(info, proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(info: RabbitMQServer, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(Exception):
            info.ctl("stop", timeout=30)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Our own session only: the launcher and the beam it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # The node started a private epmd on ERL_EPMD_PORT; stop that one.
    with contextlib.suppress(Exception):
        subprocess.run(["epmd", "-kill"], env=info.env, capture_output=True, timeout=10)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """One private RabbitMQ node for the whole session."""
    with run_rabbitmq() as server:
        yield server


def delete_prefixed(url: str, prefix: str, names: list[str]) -> None:
    """Delete the queues and exchanges a test created (best effort)."""
    import pika

    from tqcore.transports.amqp import parse_url

    params = parse_url(url).parameters()
    try:
        conn = pika.BlockingConnection(params)
    except Exception:  # noqa: BLE001 - the node is gone: nothing to clean
        return
    try:
        for name in names:
            if prefix not in name:
                continue
            for kind in ("queue", "exchange"):
                with contextlib.suppress(Exception):
                    ch = conn.channel()
                    if kind == "queue":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
                    ch.close()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def private_url(request: pytest.FixtureRequest, server: RabbitMQServer, **options: str) -> str:
    """A URL of ``server`` whose entities are private to the test (a unique prefix),
    deleted when the test ends."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
    url = f"{server.url}?{query}"

    def cleanup() -> None:
        from tqcore.transports.amqp import created_entities

        delete_prefixed(url, prefix, created_entities(prefix))

    request.addfinalizer(cleanup)
    return url


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest, rabbitmq_server: RabbitMQServer) -> str:
    """A broker URL with a prefix private to the test."""
    return private_url(request, rabbitmq_server)


def _amqp(request: pytest.FixtureRequest) -> Any:
    from tests.contract.conftest import Broker

    return Broker(private_url(request, request.getfixturevalue("rabbitmq_server")),
                  multiprocess=True)


#: The contract suite's RabbitMQ broker (merged by ``tests/contract/conftest.py``).
CONTRACT_BROKERS = {"amqp": _amqp}
