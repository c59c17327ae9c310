"""Private redis-server and RabbitMQ nodes for the throughput benchmark.

The startup logic is that of ``tests/servers/redis_server.py`` and
``tests/servers/rabbitmq_server.py`` (copied, without pytest): free loopback ports, data
in a temp dir, no persistence, RabbitMQ configured only through environment variables
(its own node name, distribution and epmd ports, no plugins) and started through the
package's inner launcher. Each server runs in its own session under :class:`Procs`;
stopping asks it to shut down, then kills that session, and for RabbitMQ the private epmd.
Default ports are never used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.embedded import BenchError, Procs, base_env, free_port, fresh_dir, log_tail

RABBIT_LIBDIR = Path("/usr/lib/rabbitmq/bin")


@dataclasses.dataclass
class Server:
    """A server this run started."""

    kind: str
    port: int
    proc: subprocess.Popen[Any]
    env: dict[str, str]
    node: str = ""

    def url(self, db: int = 0) -> str:
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/{db}"
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"


def start_redis(procs: Procs, tmp: Path, timeout: float = 15.0) -> Server:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    exe = shutil.which("redis-server")
    if not exe:
        raise BenchError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    rdir = fresh_dir(tmp / "redis")
    log = tmp / "redis.log"
    proc = procs.start([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(rdir), "--daemonize", "no",
                        "--protected-mode", "yes", "--databases", "16"],
                       env=base_env(), log=log)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5,
                         retry=Retry(NoBackoff(), 0))
    deadline = time.monotonic() + timeout
    try:
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server on port {port} did not come up\n--- log ---\n"
                                 f"{log_tail(log)}")
            time.sleep(0.02)
    finally:
        client.close()
    return Server("redis", port, proc, {})


def stop_redis(procs: Procs, server: Server) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if server.proc.poll() is None:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5,
                             retry=Retry(NoBackoff(), 0))
        with contextlib.suppress(redis.RedisError):
            client.shutdown(nosave=True)  # the server drops the connection as it exits
        client.close()
    procs.stop(server.proc, grace=10)


def _rabbit_tool(name: str) -> str:
    inner = RABBIT_LIBDIR / name
    if inner.exists():
        return str(inner)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed (apt-get install -y rabbitmq-server)")
    return found


def start_rabbitmq(procs: Procs, tmp: Path, timeout: float = 60.0) -> Server:
    import pika

    exe = _rabbit_tool("rabbitmq-server")
    rdir = fresh_dir(tmp / "rabbitmq")
    port, dist, epmd = free_port(), free_port(), free_port()
    node = f"tqbench-{port}@localhost"
    (rdir / "enabled_plugins").write_text("[].\n")
    (rdir / "rabbitmq.conf").write_text("")
    env = base_env(
        HOME=str(rdir),  # a private Erlang cookie
        RABBITMQ_NODENAME=node,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist),
        ERL_EPMD_PORT=str(epmd),
        ERL_EPMD_ADDRESS="127.0.0.1",
        RABBITMQ_MNESIA_BASE=str(rdir / "mnesia"),
        RABBITMQ_LOG_BASE=str(rdir / "log"),
        RABBITMQ_PID_FILE=str(rdir / "rabbitmq.pid"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(rdir / "enabled_plugins"),
        RABBITMQ_CONFIG_FILE=str(rdir / "rabbitmq.conf"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(rdir / "advanced.config"),
        RABBITMQ_CONF_ENV_FILE=str(rdir / "rabbitmq-env.conf"),
    )
    log = tmp / "rabbitmq.log"
    proc = procs.start([exe], env=env, log=log)
    server = Server("amqp", port, proc, env, node)
    params = pika.ConnectionParameters("127.0.0.1", port, socket_timeout=2,
                                       connection_attempts=1, blocked_connection_timeout=2)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BenchError(f"rabbitmq-server exited with {proc.returncode}\n--- log ---\n"
                             f"{log_tail(log)}")
        try:
            pika.BlockingConnection(params).close()
            return server
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"rabbitmq-server not ready after {timeout:.0f}s\n--- log ---\n"
                             f"{log_tail(log)}")
        time.sleep(0.2)


def stop_rabbitmq(procs: Procs, server: Server) -> None:
    if server.proc.poll() is None:
        with contextlib.suppress(Exception):
            subprocess.run([_rabbit_tool("rabbitmqctl"), "-n", server.node, "stop"],
                           env=server.env, capture_output=True, timeout=30, check=False)
    procs.stop(server.proc, grace=20)  # then SIGKILL to its own session if it lingers
    # The node started a private epmd on ERL_EPMD_PORT: stop that one only.
    with contextlib.suppress(Exception):
        subprocess.run(["epmd", "-kill"], env=server.env, capture_output=True, timeout=10,
                       check=False)


def redis_calls(server: Server, reset: bool = False) -> dict[str, int]:
    """Calls per command since the last reset (``INFO commandstats``); ``reset=True``
    resets the counters (the whole server: measurements run one at a time)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
    try:
        if reset:
            client.config_resetstat()
            return {}
        info = client.info("commandstats")
    finally:
        client.close()
    out = {}
    for name, stats in info.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd not in ("info", "config|resetstat", "config"):
            out[cmd] = int(stats["calls"])
    return out
