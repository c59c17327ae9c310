"""Where beat remembers each entry's last run, so a restart neither skips nor repeats one.

Per (namespace, entry name) a store keeps the last run handled (epoch milliseconds),
the schedule it was computed for, and a run count. Every write is a compare-and-set
on the previous last run: a beat records a run only if nobody recorded another since
it last looked, and sends the task only after that succeeds. So even two beats that
both believe they lead (one stalled past its lock) cannot send the same run twice.

Layouts:

* memory: a dict in this process, shared by the name of the ``memory://`` URL;
* SQLite: table ``beat_state(namespace, name, last_run_ms, schedule, total_run_count)``
  in the broker's file, through :mod:`tqcore.sqlite_db`;
* Redis: hash ``tqcore:beat:<namespace>``, field = entry name, value = JSON; the
  compare-and-set is a Lua script.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

from tqcore.exceptions import ConnectionLost, ImproperlyConfigured, TransportError
from tqcore.urls import redact, scheme_of, sqlite_path


@dataclasses.dataclass(frozen=True, slots=True)
class EntryState:
    """What is persisted per entry."""

    last_run_ms: int
    """The last run handled, epoch ms (or the time the entry was first seen)."""
    schedule: str
    """The schedule's :meth:`~tqcore.beat.schedules.BaseSchedule.key` at that time."""
    total_run_count: int = 0
    """Runs sent so far (0: the entry has only been anchored, never run)."""

    def to_json(self) -> str:
        """The JSON form (Redis)."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> EntryState:
        """Parse :meth:`to_json` output."""
        data = json.loads(text)
        return cls(int(data["last_run_ms"]), str(data["schedule"]),
                   int(data.get("total_run_count", 0)))


class BeatStore(abc.ABC):
    """Persisted entry states. Implementations are thread-safe."""

    display_url: str = ""

    @abc.abstractmethod
    def load(self, namespace: str) -> dict[str, EntryState]:
        """Every stored entry of ``namespace``."""

    @abc.abstractmethod
    def record(self, namespace: str, name: str, expected_ms: int | None,
               state: EntryState) -> bool:
        """Store ``state`` if the stored last run is still ``expected_ms`` (None: no row).

        Returns:
            False when someone else recorded a different run first.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryBeatStore(BeatStore):
    """States in a dict (in-process only)."""

    def __init__(self, name: str = "") -> None:
        self.display_url = f"memory://{name}"
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], EntryState] = {}

    def load(self, namespace: str) -> dict[str, EntryState]:
        with self.lock:
            return {name: st for (ns, name), st in self.rows.items() if ns == namespace}

    def record(self, namespace: str, name: str, expected_ms: int | None,
               state: EntryState) -> bool:
        with self.lock:
            current = self.rows.get((namespace, name))
            if (current.last_run_ms if current else None) != expected_ms:
                return False
            self.rows[(namespace, name)] = state
            return True


_SCHEMA = """
CREATE TABLE IF NOT EXISTS beat_state (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    last_run_ms INTEGER NOT NULL,
    schedule TEXT NOT NULL,
    total_run_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, name)
);
"""


class SQLiteBeatStore(BeatStore):
    """States in the ``beat_state`` table of an SQLite file."""

    def __init__(self, url: str) -> None:
        self.display_url = redact(url)
        self.path: Path = sqlite_path(url).resolve()

    def _db(self) -> Any:
        from tqcore.sqlite_db import open_database

        db = open_database(self.path)
        db.ensure_schema("beat_state", _SCHEMA)
        return db

    def load(self, namespace: str) -> dict[str, EntryState]:
        rows = self._db().read(lambda conn: conn.execute(
            "SELECT name, last_run_ms, schedule, total_run_count FROM beat_state "
            "WHERE namespace = ?", (namespace,)).fetchall())
        return {str(r[0]): EntryState(int(r[1]), str(r[2]), int(r[3])) for r in rows}

    def record(self, namespace: str, name: str, expected_ms: int | None,
               state: EntryState) -> bool:
        with self._db().write() as conn:
            row = conn.execute("SELECT last_run_ms FROM beat_state WHERE namespace = ? AND name = ?",
                               (namespace, name)).fetchone()
            if (int(row[0]) if row else None) != expected_ms:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO beat_state "
                "(namespace, name, last_run_ms, schedule, total_run_count) VALUES (?, ?, ?, ?, ?)",
                (namespace, name, state.last_run_ms, state.schedule, state.total_run_count))
            return True


_CAS = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
    if ARGV[2] == '' or cjson.decode(current)['last_run_ms'] ~= tonumber(ARGV[2]) then
        return 0
    end
elseif ARGV[2] ~= '' then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class RedisBeatStore(BeatStore):
    """States in one Redis hash per namespace."""

    prefix = "tqcore:beat:"

    def __init__(self, url: str) -> None:
        import redis

        from tqcore.transports.redis_client import RedisConnector

        connector = RedisConnector(url, {})  # same URL options (prefix, TLS) as the broker
        self.display_url = redact(url)
        self.prefix = connector.prefix + type(self).prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._lost: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
        self.client = connector.client
        self._cas = self.client.register_script(_CAS)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._lost as exc:
            raise ConnectionLost(f"redis {self.display_url}: {exc}") from exc
        except self._errors as exc:
            raise TransportError(f"redis {self.display_url}: {exc}") from exc

    def load(self, namespace: str) -> dict[str, EntryState]:
        raw = self._call(self.client.hgetall, self.prefix + namespace)
        out = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            out[name] = EntryState.from_json(value)
        return out

    def record(self, namespace: str, name: str, expected_ms: int | None,
               state: EntryState) -> bool:
        expected = "" if expected_ms is None else str(expected_ms)
        return bool(self._call(self._cas, keys=[self.prefix + namespace],
                               args=[name, expected, state.to_json()]))

    def close(self) -> None:
        self.client.close()


_memory: dict[str, MemoryBeatStore] = {}
_stores: dict[tuple[str, int], BeatStore] = {}
_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _stores.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def beat_store_for_url(url: str) -> BeatStore:
    """The beat state store for ``url`` (one per URL and process).

    Raises:
        ImproperlyConfigured: the URL's scheme cannot hold beat state.
    """
    key = (url, os.getpid())
    with _lock:
        store = _stores.get(key)
        if store is not None:
            return store
        scheme = scheme_of(url)
        if scheme == "memory":
            name = url.split("://", 1)[1]
            store = _memory.setdefault(name, MemoryBeatStore(name))
        elif scheme == "sqlite":
            store = SQLiteBeatStore(url)
        elif scheme in ("redis", "rediss"):
            store = RedisBeatStore(url)
        else:
            raise ImproperlyConfigured(f"beat cannot keep its state in {redact(url)!r} "
                                       f"(use memory://, sqlite:// or redis://)")
        _stores[key] = store
        return store
