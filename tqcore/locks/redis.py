"""Locks in Redis (``redis://``, ``rediss://``): ``SET NX PX`` with a random token.

Key ``tqcore:lock:<name>`` holds the owner's token with a millisecond expiry measured
by the Redis server. Release and extend are Lua scripts that act only when the key
still holds the caller's token, so a holder whose lock expired cannot free or prolong
the next owner's lock. redis-py is imported only when such a URL is used.
"""

from __future__ import annotations

from typing import Any

from tqcore.exceptions import ConnectionLost, TransportError
from tqcore.locks.base import LockStore
from tqcore.urls import redact

KEY_PREFIX = "tqcore:lock:"

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisLockStore(LockStore):
    """Lock records as Redis keys with a server-side expiry.

    Args:
        url: a ``redis://`` or ``rediss://`` URL.
        prefix: the key prefix.
    """

    def __init__(self, url: str, prefix: str = KEY_PREFIX) -> None:
        import redis

        from tqcore.transports.redis_client import RedisConnector

        # The transport's connector parses tqcore's URL options (``?prefix=``, TLS,
        # timeouts) exactly as the broker does; its key prefix goes in front of ours.
        connector = RedisConnector(url, {})
        self.display_url = redact(url)
        self.prefix = connector.prefix + prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._lost: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
        self.client = connector.client
        self._release = self.client.register_script(_RELEASE)
        self._extend = self.client.register_script(_EXTEND)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._lost as exc:
            raise ConnectionLost(f"redis {self.display_url}: {exc}") from exc
        except self._errors as exc:
            raise TransportError(f"redis {self.display_url}: {exc}") from exc

    def try_acquire(self, name: str, token: str, ttl: float) -> bool:
        return bool(self._call(self.client.set, self.prefix + name, token, nx=True, px=_ms(ttl)))

    def release(self, name: str, token: str) -> bool:
        return bool(self._call(self._release, keys=[self.prefix + name], args=[token]))

    def extend(self, name: str, token: str, ttl: float) -> bool:
        return bool(self._call(self._extend, keys=[self.prefix + name], args=[token, _ms(ttl)]))

    def owner(self, name: str) -> str | None:
        value = self._call(self.client.get, self.prefix + name)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def close(self) -> None:
        self.client.close()
