"""Redis connections for the Redis transport and result backend: URL options, the
client, and the one place where redis-py exceptions become tqcore errors.

URL: ``redis://[user:pass@]host[:port][/db][?option=value&...]`` or ``rediss://`` (TLS,
certificate verification on unless ``ssl_cert_reqs=none``). Options (query string or
keyword arguments, keyword arguments win):

``prefix`` (alias ``global_keyprefix``)
    prepended to every key *and* PUB/SUB channel, like kombu's ``global_keyprefix``
    transport option, so a Celery app configured with the same prefix shares them.
``socket_timeout`` (5), ``socket_connect_timeout`` (5), ``health_check_interval`` (25),
``max_connections``, ``retries`` (4: attempts of an idempotent command after a lost
connection), ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_check_hostname``; for the transport, ``events_kept`` (100000: length of the
event history stream, 0 disables it) and ``dead_letters_kept`` (100000 per queue).

redis-py's own retry is switched off: a command that may have run on the server is
retried only when running it twice is harmless (the caller says so), with jittered
exponential backoff; otherwise the failure is raised as :class:`ConnectionLost`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tqcore.exceptions import (
    ConnectFailed,
    ConnectionLost,
    ImproperlyConfigured,
    TransportError,
)
from tqcore.urls import redact

#: Forks of this process so far (a child counts one more than its parent): checked on
#: every call instead of ``os.getpid()``, a system call each time.
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)

logger = logging.getLogger("tqcore.redis")
T = TypeVar("T")

_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout", "health_check_interval")
_INT_OPTIONS = ("max_connections", "retries", "events_kept", "dead_letters_kept")
_STR_OPTIONS = ("prefix", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname")
_AUTH_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
_CERT_REQS = {"required": "required", "cert_required": "required", "optional": "optional",
              "cert_optional": "optional", "none": "none", "cert_none": "none"}


def parse_url(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """redis-py connection keyword arguments and tqcore options for ``url``.

    Raises:
        ImproperlyConfigured: malformed URL or option.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    shown = redact(url.split("?", 1)[0])  # the query may hold anything: never echo it
    if scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"not a redis URL: {shown!r}")
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    if "global_keyprefix" in query:
        query.setdefault("prefix", query.pop("global_keyprefix"))
    merged: dict[str, Any] = {**query, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(query) - set(_FLOAT_OPTIONS + _INT_OPTIONS + _STR_OPTIONS)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown option(s) {', '.join(sorted(unknown))} in redis URL {shown!r}")
    try:
        port = parts.port or 6379
        path = parts.path.strip("/")
        db = int(path) if path else int(merged.get("db", 0))
        conf: dict[str, Any] = {
            "host": parts.hostname or "localhost", "port": port, "db": db,
            "username": urllib.parse.unquote(parts.username) if parts.username else None,
            "password": urllib.parse.unquote(parts.password) if parts.password else None,
            "socket_timeout": float(merged.get("socket_timeout", 5.0)),
            "socket_connect_timeout": float(merged.get("socket_connect_timeout", 5.0)),
            "health_check_interval": int(float(merged.get("health_check_interval", 25))),
            "socket_keepalive": True,
            # RESP2: what every Redis speaks (and what kombu uses); replies parse the same.
            "protocol": 2,
            # Our retry policy decides what may run twice (see module docstring).
            "retry": Retry(NoBackoff(), 0),
        }
        if merged.get("max_connections"):
            conf["max_connections"] = int(merged["max_connections"])
        retries = int(merged.get("retries", 4))
        limits = {"events_kept": int(merged.get("events_kept", 100_000)),
                  "dead_letters_kept": max(1, int(merged.get("dead_letters_kept", 100_000)))}
    except ValueError as exc:
        raise ImproperlyConfigured(f"bad redis URL {shown!r}: {exc}") from None
    if scheme == "rediss":
        reqs = str(merged.get("ssl_cert_reqs", "required")).lower()
        if reqs not in _CERT_REQS:
            raise ImproperlyConfigured(f"bad ssl_cert_reqs {reqs!r} in redis URL {shown!r}")
        conf.update(ssl=True, ssl_cert_reqs=_CERT_REQS[reqs])
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if merged.get(key):
                conf[key] = merged[key]
        check = str(merged.get("ssl_check_hostname", "true")).lower()
        conf["ssl_check_hostname"] = check in ("1", "true", "yes") and reqs != "none"
    return {"connection": conf, "prefix": str(merged.get("prefix", "")), "retries": retries,
            "db": db, "limits": limits}


class RedisConnector:
    """A lazily created redis-py client (one pool per process) and the error policy.

    Args:
        url: the redis URL (credentials never leave this object unredacted).
        options: overrides of URL options.
    """

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        parsed = parse_url(url, options)
        self.display_url = redact(url)
        self.prefix: str = parsed["prefix"]
        self.db: int = parsed["db"]
        self.retries: int = parsed["retries"]
        #: ``events_kept`` and ``dead_letters_kept``.
        self.limits: dict[str, int] = parsed["limits"]
        self._conf: dict[str, Any] = parsed["connection"]
        # typed Any: redis-py's reply types are unions callers would only cast away
        self._client: Any = None
        self._pid = 0
        self._forks = -1
        self._lock = threading.Lock()
        self._connected_once = False

    @property
    def client(self) -> Any:
        """The process's client (rebuilt after a fork: sockets are never shared)."""
        client = self._client
        if client is None or self._forks != _forks[0]:
            with self._lock:
                if self._client is None or self._forks != _forks[0]:
                    self._client = redis.Redis(**self._conf)
                    self._pid = os.getpid()
                    self._forks = _forks[0]
                client = self._client
        return client

    def key(self, name: str) -> str:
        """``name`` with the key prefix."""
        return self.prefix + name

    def run(self, what: str, fn: Callable[[Any], T], *, idempotent: bool = True) -> T:
        """Run ``fn(client)``, retrying lost connections when ``idempotent``.

        Raises:
            ConnectFailed: the server could not be reached at all.
            ConnectionLost: the connection failed and the command could not be retried.
            TransportError: any other server error (out of memory, read-only, ...).
        """
        attempt = 0
        while True:
            try:
                result = fn(self.client)
                self._connected_once = True
                return result
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if isinstance(exc, _AUTH_ERRORS):
                    raise self.translate(exc, what) from exc
                attempt += 1
                if not idempotent or attempt > self.retries:
                    raise self.translate(exc, what) from exc
                # Full jitter: reconnecting clients of a restarted server spread out.
                delay = random.uniform(0, min(1.0, 0.05 * 2 ** attempt))
                logger.warning("%s: %s failed (%s); retrying in %.2fs", self.display_url, what,
                               exc, delay)
                time.sleep(delay)
            except redis.RedisError as exc:
                raise self.translate(exc, what) from exc

    def translate(self, exc: BaseException, what: str) -> TransportError:
        """The tqcore error for a redis-py exception (message without credentials)."""
        text = redact(str(exc))
        where = f"redis {self.display_url}: {what}"
        if isinstance(exc, _AUTH_ERRORS):
            return ConnectFailed(f"{where}: authentication failed: {text}")
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            if not self._connected_once:
                return ConnectFailed(f"{where}: cannot connect: {text}")
            return ConnectionLost(f"{where}: connection lost: {text}")
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return TransportError(f"{where}: the broker is out of memory (maxmemory): {text}")
        return TransportError(f"{where}: {text}")

    def pubsub(self) -> Any:
        """A new PUB/SUB connection (the caller closes it)."""
        return self.client.pubsub(ignore_subscribe_messages=False)

    def close(self) -> None:
        """Disconnect the idle pooled connections of this process.

        Connections in use by another thread are left to finish their command (they
        are closed when released and collected), so closing never breaks a call.
        """
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            try:
                client.connection_pool.disconnect(inuse_connections=False)
            except redis.RedisError:  # closing a broken pool must not raise
                pass
