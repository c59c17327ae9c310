"""One SQLite file shared by the embedded broker and result backend of a process.

The embedded transport and the SQLite result backend both open the file through
:func:`open_database`, which keeps one :class:`Database` per (path, process). A
database holds a single connection guarded by a lock: SQLite serialises writers
anyway, and one connection per process avoids lock contention between our own
threads. Across processes, writes use ``BEGIN IMMEDIATE`` (so a reader never has to
upgrade to a writer and hit an immediate ``SQLITE_BUSY``) with a busy timeout.

WAL mode with ``synchronous=NORMAL`` survives application crashes (SIGKILL) without
losing committed transactions; set ``TQ_SQLITE_SYNCHRONOUS=FULL`` to survive power
loss too. The WAL file is bounded by periodic truncating checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from tqcore.exceptions import ConnectFailed, TransportError

T = TypeVar("T")

_BUSY_TIMEOUT_MS = 10_000
_CHECKPOINT_EVERY = 1.0  # seconds between truncating checkpoints
_SIZE_CHECK_EVERY = 0.1  # seconds between WAL size checks
_WAL_MAX_BYTES = 16 * 1024 * 1024
_registry: dict[tuple[str, int], Database] = {}
_registry_lock = threading.Lock()


class Database:
    """A process-local handle on one SQLite file.

    Args:
        path: the database file; its directory is created if missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self._schemas: set[str] = set()
        self._last_checkpoint = time.monotonic()
        self._last_size_check = self._last_checkpoint
        self._wal_path = str(path) + "-wal"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_MS / 1000,
                                        isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            sync = os.environ.get("TQ_SQLITE_SYNCHRONOUS", "NORMAL").upper()
            if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                sync = "NORMAL"
            self.conn.execute(f"PRAGMA synchronous={sync}")
            self.conn.execute("PRAGMA journal_size_limit=67108864")
        except (sqlite3.Error, OSError) as exc:
            raise ConnectFailed(f"cannot open SQLite database {path}: {exc}") from exc

    def ensure_schema(self, name: str, ddl: str) -> None:
        """Run ``ddl`` (idempotent ``CREATE ... IF NOT EXISTS``) once per process."""
        if name in self._schemas:
            return
        with self.lock:
            if name in self._schemas:
                return
            self._run(lambda: self.conn.executescript(ddl))
            self._schemas.add(name)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on exit, rolled back on error.

        Raises:
            TransportError: the database failed (locked past the timeout, disk full, ...).
        """
        with self.lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise TransportError(f"SQLite {self.path}: {exc}") from exc
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise TransportError(f"SQLite {self.path}: {exc}") from exc
            self._maybe_checkpoint()

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` outside an explicit transaction (a consistent snapshot per statement)."""
        with self.lock:
            return self._run(lambda: fn(self.conn))

    def _run(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise TransportError(f"SQLite {self.path}: {exc}") from exc

    def _maybe_checkpoint(self) -> None:
        # A reader that never lets go starves automatic checkpoints and the WAL grows
        # without bound: checkpoint every second, or at once when the WAL passes
        # _WAL_MAX_BYTES (checked every _SIZE_CHECK_EVERY s). TRUNCATE waits for readers
        # through the busy handler, so it runs with a short timeout: a busy checkpoint is
        # simply retried soon, never a stalled writer.
        now = time.monotonic()
        if now - self._last_checkpoint < _CHECKPOINT_EVERY:
            if now - self._last_size_check < _SIZE_CHECK_EVERY:
                return
            self._last_size_check = now
            try:
                if os.stat(self._wal_path).st_size < _WAL_MAX_BYTES:
                    return
            except OSError:
                return
        self._last_checkpoint = now
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA busy_timeout=200")
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy and busy[0]:
                self._last_checkpoint = now - _CHECKPOINT_EVERY + 0.1  # retry soon
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    def close(self) -> None:
        """Close the connection (the registry forgets it)."""
        with _registry_lock:
            _registry.pop((str(self.path), self.pid), None)
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.conn.close()


def _before_fork() -> None:
    # No thread may be inside a transaction when the process forks: SQLite keeps its
    # file-lock bookkeeping in process memory, and a child that inherits it mid-write
    # can never take the write lock on a connection of its own.
    _registry_lock.acquire()
    for db in list(_registry.values()):
        db.lock.acquire()


def _after_fork_in_parent() -> None:
    for db in list(_registry.values()):
        db.lock.release()
    _registry_lock.release()


def _after_fork_in_child() -> None:
    # The child starts with no open databases (connections must not cross a fork) and
    # fresh locks (the inherited ones belong to the parent's threads).
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def open_database(path: Path) -> Database:
    """The :class:`Database` for ``path`` in this process (one per path and pid).

    After a fork, the child gets a fresh connection: SQLite connections must not
    cross a fork.
    """
    key = (str(path.resolve()), os.getpid())
    with _registry_lock:
        db = _registry.get(key)
        if db is None:
            db = Database(Path(key[0]))
            _registry[key] = db
        return db
