"""Private broker servers for the broker-fault rows (reliability.md §4.1): start, kill -9,
restart on the same port and directory, freeze (SIGSTOP/SIGCONT), reset connections.

:class:`RedisBroker` runs ``redis-server`` and :class:`RabbitBroker` a RabbitMQ node, each
on free loopback ports in a directory of the scenario, never on a default port. Both keep
their port, data directory (AOF, Mnesia) and node name across :meth:`restart`, so the
clients see the *same* broker come back. Every signal goes to a process this module
started, by pid (RabbitMQ: the launcher and its descendants, checked by psutil), and
:meth:`reset_connections` runs ``ss -K`` on TCP connections to this broker's port only.

The startup logic is copied from ``tests/servers`` (no pytest import here): redis-server
is ready when ``PING`` answers on its unix socket; the RabbitMQ node is configured only
by environment variables, started through the package's inner launcher (Debian's
wrapper would ``su rabbitmq`` and fail on root-owned temp dirs) and ready once a pika
``BlockingConnection`` opens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

RABBIT_LIBDIR = Path("/usr/lib/rabbitmq/bin")


class BrokerUnavailable(RuntimeError):
    """The broker binary or its client library is missing (the row is skipped)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset_connections(port: int) -> int:
    """``ss -K`` every established TCP connection to 127.0.0.1:``port`` (the client side;
    the kernel answers the peer with a RST). Returns how many sockets were killed."""
    out = subprocess.run(["ss", "-K", "-t", "-n", "state", "established", "dst", "127.0.0.1",
                          "dport", "=", f":{port}"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        raise RuntimeError(f"ss -K failed ({out.returncode}): {out.stderr.strip()}")
    return sum(1 for line in out.stdout.splitlines()[1:] if line.strip())


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class _Server:
    """What both servers share: a port, a directory, a process, its log."""

    kind = "?"

    def __init__(self, base: Path, port: int | None = None) -> None:
        self.dir = base
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def freeze(self) -> None:
        """SIGSTOP the server (it keeps its sockets: clients see silence, not errors)."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self._signal(signal.SIGCONT)
        self.frozen = False

    def reset_connections(self) -> int:
        """``ss -K`` the clients' connections to this server."""
        return reset_connections(self.port)

    def restart(self, down: float = 0.0) -> float:
        """kill -9, stay down ``down`` seconds, start again on the same port and directory;
        returns the seconds from the kill until the server answered again."""
        t0 = time.monotonic()
        self.kill()
        time.sleep(down)
        self.start()
        return time.monotonic() - t0

    def _signal(self, sig: int) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class RedisBroker(_Server):
    """A private ``redis-server``.

    Args:
        base: its directory (AOF, log, unix socket).
        aof: ``--appendonly yes --appendfsync everysec`` (else ``--save '' --appendonly no``).
        port: a fixed port (default: a free one, kept across restarts).
    """

    kind = "redis"

    def __init__(self, base: Path, *, aof: bool = False, port: int | None = None) -> None:
        super().__init__(base, port)
        self.aof = aof
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise BrokerUnavailable("redis-server is not installed (apt-get install redis-server)")
        try:
            import redis  # noqa: F401
        except ImportError:
            raise BrokerUnavailable("redis-py is not installed") from None
        self.sock = str(self.dir / "redis.sock")
        self.log = self.dir / "redis.log"

    def url(self, **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis://127.0.0.1:{self.port}/0" + (f"?{query}" if query else "")

    def client(self, timeout: float = 5.0) -> Any:
        """A raw redis-py client over the unix socket, without retries."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(unix_socket_path=self.sock, socket_timeout=timeout,
                           retry=Retry(NoBackoff(), 0))

    def start(self) -> None:
        import redis

        persistence = (["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
                       if self.aof else ["--save", "", "--appendonly", "no"])
        with self.log.open("ab") as log:
            log.write(f"===== start #{self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--unixsocket", self.sock, "--unixsocketperm", "700", *persistence,
                 "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.starts += 1
        self.frozen = False
        client = self.client(1.0)
        deadline = time.monotonic() + 30
        try:
            while True:
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on {self.port}: "
                                       f"{self.log.read_text(errors='replace')[-1500:]}")
                time.sleep(0.02)
        finally:
            client.close()

    def run_id(self) -> str:
        """``INFO server`` run_id: a new one after every start."""
        c = self.client()
        try:
            return str(c.info("server")["run_id"])
        finally:
            c.close()

    def _signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL (works on a frozen server too) and reap it."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.frozen = False

    def close(self) -> None:
        if self.alive():
            assert self.proc is not None
            if self.frozen:
                self.thaw()
            c = self.client(2.0)
            with contextlib.suppress(Exception):
                c.shutdown(nosave=True)
            c.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RabbitBroker(_Server):
    """A private RabbitMQ node (its own node name, epmd port, Mnesia and log dirs).

    Args:
        base: its directory.
        config: lines of its ``rabbitmq.conf``.
    """

    kind = "rabbitmq"
    START_TIMEOUT = 90.0

    def __init__(self, base: Path, **config: Any) -> None:
        super().__init__(base)
        self.server = self._tool("rabbitmq-server")
        try:
            import pika  # noqa: F401
        except ImportError:
            raise BrokerUnavailable("pika is not installed") from None
        self.dist, self.epmd = free_port(), free_port()
        self.node = f"tqrel-{self.port}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            "".join(f"{k} = {v}\n" for k, v in config.items()))
        self.log = self.dir / "stdout.log"
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(self.dir),  # a private Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "ERL_EPMD_PORT": str(self.epmd),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
        })

    @staticmethod
    def _tool(name: str) -> str:
        inner = RABBIT_LIBDIR / name
        if inner.exists():
            return str(inner)
        found = shutil.which(name)
        if found is None:
            raise BrokerUnavailable(f"{name} is not installed (apt-get install rabbitmq-server)")
        return found

    def url(self, **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"amqp://guest:guest@127.0.0.1:{self.port}//" + (f"?{query}" if query else "")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <node> ARGS``."""
        out = subprocess.run([self._tool("rabbitmqctl"), "-n", self.node, *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout, check=True)
        return out.stdout

    def connection(self, timeout: float = 5.0) -> Any:
        """A raw pika ``BlockingConnection`` (publishing poison, reading queues)."""
        import pika

        return pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, socket_timeout=timeout, connection_attempts=1,
            blocked_connection_timeout=timeout))

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"===== start #{self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen([self.server], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, start_new_session=True)
        self.starts += 1
        self.frozen = False
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            if port_open(self.port):
                try:
                    self.connection(2.0).close()
                    return
                except Exception:  # noqa: BLE001 - not ready yet
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"rabbitmq-server not ready after {self.START_TIMEOUT:.0f}s:\n"
                           f"{self.log.read_text(errors='replace')[-3000:]}")

    def _members(self) -> list[Any]:
        """The launcher and its descendants (beam.smp, erl_child_setup, inet_gethost),
        as psutil objects: signalling them checks each is still the same process. The
        private epmd daemonised out of the tree; :meth:`close` stops it by its port."""
        import psutil

        if not self.alive():
            return []
        try:
            launcher = psutil.Process(self.pid)
            return [launcher, *launcher.children(recursive=True)]
        except psutil.Error:
            return []

    def _signal(self, sig: int) -> None:
        import psutil

        for p in self._members():
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL beam.smp and the rest of the node's tree (kill -9), reap the launcher."""
        import psutil

        members = self._members()
        for p in reversed(members):  # beam.smp before the launcher that waits on it
            with contextlib.suppress(psutil.Error):
                p.kill()
        if self.proc is not None:
            self.proc.wait(30)
        psutil.wait_procs(members[1:], timeout=15)
        deadline = time.monotonic() + 15
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.frozen = False

    def close(self) -> None:
        if self.alive():
            assert self.proc is not None
            if self.frozen:
                self.thaw()
            with contextlib.suppress(Exception):
                self.ctl("stop", timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        # The node started a private epmd on ERL_EPMD_PORT: stop that one (ours only).
        with contextlib.suppress(Exception):
            subprocess.run(["epmd", "-kill"], env=self.env, capture_output=True, timeout=10)
