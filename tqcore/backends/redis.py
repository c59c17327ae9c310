"""The Redis result backend (``redis://``, ``rediss://``), Celery's key layout (celery-wire.md §4.6).

Keys (prefixed with the URL's ``prefix``, like Celery's ``global_keyprefix``):

``celery-task-meta-<task id>`` (STRING, ``result_expires``)
    the task meta JSON, Celery's fields; every write is also ``PUBLISH``ed on the
    channel of the same name, which :meth:`RedisBackend.wait_for` subscribes to (one
    shared pub/sub connection per process, :mod:`tqcore.backends.redis_waiter`). The
    write is a Lua step that leaves a stored SUCCESS alone (first success wins).
``celery-taskset-meta-<group id>`` (STRING)
    ``{"result": <group tuple>}`` as ``GroupResult.save`` writes it.
``celery-taskset-meta-<group id>.j`` / ``.d`` / ``.c`` (ZSET / SET / STRING)
    the chord join: parts scored by ``group_index`` (member ``[1, id, state, result]``),
    Celery 5.7's dedup set, and the "fired" marker. One Lua step adds the part (once
    per index, so a header task that runs twice counts once), compares the count with
    the chord size and, for the call that completes the chord, sets the marker, returns
    every part and deletes them: the body fires exactly once. ``.t`` (Celery's
    ``add_to_chord`` counter) is honoured when present.
``tq:revoked`` / ``tq:revoked:expires`` (ZSET id -> revoke time / expiry, server time)
    persistent revokes, trimmed as they expire.
``tq:failed`` (ZSET id -> failure time) + ``tq:failed:<id>`` (HASH)
    the original messages of failed tasks, for ``tqcore retry``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from tqcore import codec, states
from tqcore.backends.base import FAILED_KEPT, REVOKE_TTL, ChordPart, FailedMessage, ResultBackend
from tqcore.backends.redis_waiter import ResultWaiter
from tqcore.transports.redis_client import RedisConnector
from tqcore.transports.redis_raw import RawLink, Script

_NOW = """
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

#: KEYS: meta key.  ARGV: meta JSON, expiry ms (0: none), channel.
_PUT_META = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' and m['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"""

#: KEYS: .j .d .c .t .s.  ARGV: index, member, dedup member, size, ttl s.
_CHORD_JOIN = """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local idx = tonumber(ARGV[1])
if redis.call('ZCOUNT', KEYS[1], idx, idx) == 0 then
  redis.call('ZADD', KEYS[1], idx, ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
local ttl = tonumber(ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
local extra = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) + extra then return false end
redis.call('SET', KEYS[3], 'done', 'EX', math.max(ttl, 300))
local parts = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
return parts
"""

#: KEYS: revoked, expires.  ARGV: ttl s, ids.
_ADD_REVOKED = _NOW + """
local now = now_s()
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(old) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now, ARGV[i])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[i])
end
return tostring(now)
"""

#: KEYS: revoked, expires.  ARGV: since.  Returns flat (id, stamp) still in force.
_REVOKED_SINCE = _NOW + """
local now = now_s()
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  local exp = redis.call('ZSCORE', KEYS[2], rows[i])
  if exp and tonumber(exp) > now then
    out[#out + 1] = rows[i]
    out[#out + 1] = rows[i + 1]
  end
end
return out
"""

#: KEYS: failed hash.  Counts a retry only of a message still kept.
_MARK_RETRIED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HINCRBY', KEYS[1], 'retried', 1) end
return 0
"""

_SCRIPTS: dict[str, Script] = {}

_FIELDS = ("name", "queue", "exc_type", "signature", "failed_at", "retried")


class RedisBackend(ResultBackend):
    """Results in Redis, readable by Celery clients (and Celery's results by tqcore)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.conn = RedisConnector(url, {})
        self._raw = RawLink()
        self._waiter = ResultWaiter(self.conn, self._meta_key, self._get_meta)

    # -- plumbing ------------------------------------------------------------------
    def _eval(self, what: str, source: str, keys: list[str], args: list[Any]) -> Any:
        # Packed on kept connections (see tqcore.transports.redis_raw): a task's result
        # write and chord join are per-task costs of the worker.
        script = _SCRIPTS.get(source)
        if script is None:
            script = _SCRIPTS[source] = Script(source)
        return self.conn.run(what, lambda c: self._raw.script(c, script, keys, args))

    def _meta_key(self, task_id: str) -> str:
        return self.conn.key(f"celery-task-meta-{task_id}")

    def _group_key(self, group_id: str) -> str:
        return self.conn.key(f"celery-taskset-meta-{group_id}")

    def _ttl_ms(self) -> int:
        return int(self.expires * 1000) if self.expires else 0

    # -- task meta -----------------------------------------------------------------
    def _put_meta(self, task_id: str, meta: dict[str, Any]) -> None:
        key = self._meta_key(task_id)
        self._eval("store result", _PUT_META, [key], [codec.dumps(meta), self._ttl_ms(), key])

    def _get_meta(self, task_id: str) -> dict[str, Any] | None:
        raw = self.conn.run("get result", lambda c: c.get(self._meta_key(task_id)))
        return _decode_meta(raw)

    def forget(self, task_id: str) -> None:
        self.conn.run("forget", lambda c: c.delete(self._meta_key(task_id)))

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        """Wait for the task's result: woken by the ``PUBLISH`` of the write over the
        process's shared pub/sub connection (:mod:`tqcore.backends.redis_waiter`), and
        reading the key again at least every ``interval``.

        Raises:
            tqcore.exceptions.TimeoutError: not ready within ``timeout`` seconds.
        """
        return self._waiter.wait(task_id, timeout, interval)

    def watch(self, task_ids: Iterable[str]) -> AbstractContextManager[None]:
        """Subscribe to these tasks' results at once (one ``SUBSCRIBE``) for a block of
        :meth:`wait_for` calls: a group join then waits for no subscription per member."""
        return self._waiter.watch(task_ids)

    def get_task_metas(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """The metas of several tasks in one round trip (``MGET``), in order."""
        if not task_ids:
            return []
        keys = [self._meta_key(t) for t in task_ids]
        raws = self.conn.run("get results", lambda c: c.mget(keys))
        out = []
        for tid, raw in zip(task_ids, raws, strict=True):
            meta = _decode_meta(raw)
            out.append(meta if meta is not None else {
                "status": states.PENDING, "result": None, "traceback": None,
                "children": [], "date_done": None, "task_id": tid})
        return out

    # -- groups and chords ---------------------------------------------------------
    def save_group(self, group_id: str, data: Any) -> None:
        key, text, ttl = self._group_key(group_id), codec.dumps({"result": data}), self._ttl_ms()
        self.conn.run("save group", lambda c: c.set(key, text, px=ttl or None))

    def restore_group(self, group_id: str) -> Any:
        meta = _decode_meta(self.conn.run("restore group",
                                          lambda c: c.get(self._group_key(group_id))))
        return None if meta is None else meta.get("result")

    def delete_group(self, group_id: str) -> None:
        self.conn.run("delete group", lambda c: c.delete(self._group_key(group_id)))

    def chord_part_return(self, group_id: str, index: int, task_id: str, status: str,
                          result: Any, size: int) -> list[ChordPart] | None:
        base = self._group_key(group_id)
        keys = [f"{base}.j", f"{base}.d", f"{base}.c", f"{base}.t", f"{base}.s"]
        member = codec.dumps([1, task_id, status, result])
        ttl = int(self.expires) if self.expires else 86400
        raw = self._eval("chord join", _CHORD_JOIN, keys,
                         [index, member, f"{task_id}:{index}", size, max(1, ttl)])
        if not raw:
            return None
        parts = []
        for i in range(0, len(raw), 2):
            _, tid, state, value = json.loads(raw[i])
            parts.append(ChordPart(int(float(raw[i + 1])), tid, state, value))
        return parts

    # -- revokes -------------------------------------------------------------------
    def _revoked_keys(self) -> list[str]:
        return [self.conn.key("tq:revoked"), self.conn.key("tq:revoked:expires")]

    def add_revoked(self, task_ids: Iterable[str], ttl: float = REVOKE_TTL) -> None:
        ids = list(task_ids)
        if ids:
            self._eval("revoke", _ADD_REVOKED, self._revoked_keys(), [ttl, *ids])

    def revoked_since(self, since: float) -> tuple[set[str], float]:
        raw = self._eval("revoked", _REVOKED_SINCE, self._revoked_keys(), [repr(float(since))])
        ids = {raw[i].decode() for i in range(0, len(raw), 2)}
        stamps = [float(raw[i]) for i in range(1, len(raw), 2)]
        return ids, max([since, *stamps])

    # -- failed messages -----------------------------------------------------------
    def _failed_key(self, task_id: str) -> str:
        return self.conn.key(f"tq:failed:{task_id}")

    def save_failed(self, failed: FailedMessage) -> None:
        key, index = self._failed_key(failed.task_id), self.conn.key("tq:failed")

        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=True)
            pipe.hset(key, mapping={"name": failed.name, "queue": failed.queue,
                                    "payload": failed.payload, "exc_type": failed.exc_type,
                                    "signature": failed.signature,
                                    "failed_at": repr(failed.failed_at)})
            pipe.hsetnx(key, "retried", 0)
            if self.expires:
                pipe.pexpire(key, self._ttl_ms())
            pipe.zadd(index, {failed.task_id: failed.failed_at})
            pipe.zcard(index)
            excess = pipe.execute()[-1] - FAILED_KEPT
            if excess > 0:
                old = c.zpopmin(index, excess)
                if old:
                    c.delete(*[self._failed_key(tid.decode()) for tid, _ in old])

        self.conn.run("save failed", run)

    def find_failed(self, task_ids: list[str] | None = None, name: str | None = None,
                    exc_type: str | None = None, signature: str | None = None,
                    limit: int = 1000) -> list[FailedMessage]:
        index = self.conn.key("tq:failed")
        if task_ids is None:
            ids = [t.decode() for t in self.conn.run(
                "find failed", lambda c: c.zrevrange(index, 0, FAILED_KEPT - 1))]
        else:
            ids = list(dict.fromkeys(task_ids))

        def fields(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for tid in ids:
                pipe.hmget(self._failed_key(tid), _FIELDS)
            result: list[Any] = pipe.execute()
            return result

        rows = []
        for tid, values in zip(ids, self.conn.run("find failed", fields) if ids else [], strict=True):
            if values[0] is None:
                continue  # expired
            row = dict(zip(_FIELDS, (v.decode() for v in values), strict=True))
            if ((name is None or row["name"] == name) and
                    (exc_type is None or row["exc_type"] == exc_type) and
                    (signature is None or row["signature"] == signature)):
                rows.append((tid, row))
        rows.sort(key=lambda r: -float(r[1]["failed_at"]))
        rows = rows[:limit]

        def payloads(c: Any) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for tid, _ in rows:
                pipe.hget(self._failed_key(tid), "payload")
            result: list[Any] = pipe.execute()
            return result

        out = []
        for (tid, row), payload in zip(rows, self.conn.run("find failed", payloads) if rows
                                       else [], strict=True):
            if payload is not None:
                out.append(FailedMessage(tid, row["name"], row["queue"], bytes(payload),
                                         row["exc_type"], row["signature"],
                                         float(row["failed_at"]), int(row["retried"] or 0)))
        return out

    def mark_retried(self, task_id: str) -> None:
        self._eval("mark retried", _MARK_RETRIED, [self._failed_key(task_id)], [])

    # -- housekeeping --------------------------------------------------------------
    def cleanup(self) -> None:
        # Revokes trim themselves on each add_revoked; drop index entries of failed
        # messages whose hash expired with the results.
        index = self.conn.key("tq:failed")
        ids = [t.decode() for t in self.conn.run("cleanup", lambda c: c.zrange(index, 0, -1))]
        if not ids:
            return

        def run(c: Any) -> None:
            pipe = c.pipeline(transaction=False)
            for tid in ids:
                pipe.exists(self._failed_key(tid))
            gone = [tid for tid, alive in zip(ids, pipe.execute(), strict=True) if not alive]
            if gone:
                c.zrem(index, *gone)

        self.conn.run("cleanup", run)

    def close(self) -> None:
        self._waiter.close()
        self._raw.close()
        self.conn.close()


def _decode_meta(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    meta = codec.loads(raw)
    return meta if isinstance(meta, dict) else None
