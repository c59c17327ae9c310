"""One AMQP connection whose I/O runs on its own thread.

pika is not thread-safe, and a pika connection only answers heartbeats while its I/O
loop runs (pika/pika#418: a long task in the consuming thread gets the connection
dropped). So every :class:`Link` owns a thread running an asyncio loop with a pika
``AsyncioConnection``: heartbeats are answered however long tasks run, and every
other thread reaches the connection only by submitting a coroutine
(:meth:`Link.run`) or a callback (:meth:`Link.soon`) to that loop.

A lost connection is reopened on next use, with jittered exponential backoff for up
to ``connect_retry`` seconds; every reopen increments :attr:`Link.generation`, which
invalidates what was declared or delivered on the old connection (topology caches
are keyed by it, and delivery tags of an old generation are never acked). While a
resource alarm blocks publishing, publishes fail at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tqcore.exceptions import ConnectFailed, ConnectionLost, TransportError
from tqcore.transports.amqp_chan import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    RESOURCE_LOCKED,
    Chan,
    ChannelError,
    LoginRefused,
    expect_closes,
    resolve,
    translate,
)
from tqcore.transports.amqp_codec import AMQPURL

__all__ = ["NOT_FOUND", "PRECONDITION_FAILED", "RESOURCE_LOCKED", "Chan", "ChannelError",
           "Link", "LoginRefused", "translate"]

logger = logging.getLogger("tqcore.transport.amqp")

T = TypeVar("T")


class Link:
    """A broker connection served by a private I/O thread.

    Args:
        url: the parsed broker URL.
        name: a label for the thread (debugging).
    """

    def __init__(self, url: AMQPURL, name: str = "amqp") -> None:
        self.url = url
        self.pid = os.getpid()
        self.generation = 0
        self._params = url.parameters()
        self._retry_for = url.float_option("connect_retry", 10.0)
        self._conn: Any = None
        self._lock: asyncio.Lock | None = None
        self._channels: dict[str, Chan] = {}
        self._channel_locks: dict[str, asyncio.Lock] = {}
        self._loop = asyncio.new_event_loop()
        self._posted: deque[Callable[[], None]] = deque()
        self._post_armed = False
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"tqcore-{name}-io")
        self._thread.start()
        self.closed = False
        self.closing = False
        #: Why the broker blocks our publishes (a memory or disk alarm), or None.
        self.blocked: str | None = None

    # -- crossing threads --------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The I/O thread's event loop."""
        return self._loop

    def in_io_thread(self) -> bool:
        """True when called from the I/O thread itself."""
        return threading.current_thread() is self._thread

    def run(self, factory: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``factory()`` on the I/O loop and wait up to ``timeout`` for its result.

        Raises:
            TransportError: the operation failed or timed out.
        """
        if self.closed:
            raise ConnectionLost("transport closed")
        if self.pid != os.getpid():
            raise ConnectionLost("this connection belongs to the parent process (forked)")
        if self.in_io_thread():
            raise RuntimeError("Link.run called from the I/O thread (it would wait forever)")

        async def wrapped() -> T:
            return await factory()

        fut = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TransportError(f"the broker did not answer within {timeout:.1f}s") from None
        except TransportError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O loop without waiting."""
        if not self.closed:
            self._loop.call_soon_threadsafe(fn, *args)

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the I/O thread soon, without waiting (hot paths: publishes,
        acks). Calls posted from any threads before the I/O thread gets to them run in
        one loop turn, in order, and their frames leave in one write: the loop is woken
        once per turn, not once per call.

        Raises:
            ConnectionLost: the link is closed (nothing would ever run ``fn``).
        """
        if self.closed:
            raise ConnectionLost("transport closed")
        self._posted.append(fn)
        # Racy on purpose: the I/O thread clears the flag *before* draining, so a call
        # appended after the drain saw an empty queue finds the flag clear and wakes it.
        if not self._post_armed:
            self._post_armed = True
            self._loop.call_soon_threadsafe(self._run_posted)

    def _run_posted(self) -> None:
        self._post_armed = False
        posted = self._posted
        while posted:
            fn = posted.popleft()
            try:
                fn()
            except Exception:  # one failed call must not strand the others
                logger.exception("posted call failed")
        self.flush()

    def flush(self) -> None:
        """Write buffered frames to the socket now (I/O thread).

        pika only buffers a frame and waits for a writability event, which costs a loop
        turn (and two epoll_ctl calls) per burst; on a plaintext socket we send at once.
        """
        transport = getattr(self._conn, "_transport", None)
        if transport is None or not getattr(transport, "_tx_buffers", None):
            return
        if type(transport).__name__ != "_AsyncPlaintextTransport":
            return  # TLS has its own read/write choreography: leave it to pika
        try:
            transport._on_socket_writable()
        except Exception:  # noqa: BLE001 - pika will notice a broken socket itself
            logger.debug("flush failed", exc_info=True)

    # -- connection ----------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._conn is not None and self._conn.is_open

    async def connection(self) -> Any:
        """The open connection, (re)connecting with jittered backoff if needed."""
        if self.connected:
            return self._conn
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.connected:
                return self._conn
            deadline = self._loop.time() + self._retry_for
            delay = 0.1
            while True:
                try:
                    self._conn = await self._open()
                    break
                except TransportError as exc:
                    if isinstance(exc, LoginRefused) or self._loop.time() + delay > deadline:
                        raise
                    logger.warning("broker %s unreachable (%s); retrying in %.1fs",
                                   self._display(), exc, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 3.0)
            self.generation += 1
            self._channels.clear()
            if self.generation > 1:
                logger.info("reconnected to %s", self._display())
            return self._conn

    def _blocked(self, _conn: Any, frame: Any) -> None:
        self.blocked = str(getattr(frame.method, "reason", "") or "resource alarm")
        logger.error("the broker blocks publishing (%s): publishes fail until it recovers",
                     self.blocked)
        # Publishers waiting for a confirm would wait out the alarm: tell them now.
        # Their message may still arrive once the alarm clears (outcome unknown).
        exc = TransportError(f"the broker blocked publishing ({self.blocked}); the message"
                             " may still be delivered when it recovers")
        for chan in self._channels.values():
            chan.fail_unconfirmed(exc)

    def _unblocked(self, _conn: Any, _frame: Any) -> None:
        self.blocked = None
        logger.info("the broker accepts publishes again")

    def check_blocked(self) -> None:
        """Raise at once, instead of hanging, while the broker refuses publishes."""
        if self.blocked is not None:
            raise TransportError(f"the broker refuses publishes for now: {self.blocked}")

    def _display(self) -> str:
        return f"{self.url.host}:{self.url.port}"

    async def _open(self) -> Any:
        from pika.adapters.asyncio_connection import AsyncioConnection

        fut: asyncio.Future[Any] = self._loop.create_future()

        def opened(conn: Any) -> None:
            self.blocked = None
            conn.add_on_connection_blocked_callback(self._blocked)
            conn.add_on_connection_unblocked_callback(self._unblocked)
            if not fut.done():
                fut.set_result(conn)

        def failed(_conn: Any, err: BaseException | str) -> None:
            if not fut.done():
                fut.set_exception(self._connect_error(err))

        def closed(_conn: Any, reason: BaseException) -> None:
            if not fut.done():
                fut.set_exception(translate(reason))
            elif not self.closing:
                logger.warning("broker connection closed: %s", reason)

        try:
            AsyncioConnection(self._params, on_open_callback=opened,
                              on_open_error_callback=failed, on_close_callback=closed,
                              custom_ioloop=self._loop)
        except Exception as exc:
            raise translate(exc) from exc
        timeout = self.url.float_option("connect_timeout", 10.0) * 2
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ConnectFailed(f"no answer from {self._display()} within {timeout}s") from None

    def _connect_error(self, err: BaseException | str) -> TransportError:
        """Why a connection attempt failed, as ConnectFailed (or LoginRefused)."""
        import pika.exceptions as pe

        inner: Any = err
        # pika wraps the real cause: workflow failure -> connector error -> exception.
        while True:
            nested = getattr(inner, "exceptions", None) or [getattr(inner, "exception", None)]
            if not isinstance(nested[-1], BaseException):
                break
            inner = nested[-1]
        exc: TransportError
        if isinstance(inner, pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError):
            exc = LoginRefused(f"the broker at {self._display()} refused the login: {inner}")
        else:
            exc = ConnectFailed(f"cannot connect to the broker at {self._display()}: {inner!r}")
        if isinstance(err, BaseException):
            exc.__cause__ = err
        return exc

    async def open_channel(self, confirms: bool = False) -> Chan:
        """A new channel on the (re)opened connection."""
        conn = await self.connection()
        fut: asyncio.Future[Any] = self._loop.create_future()

        def opened(channel: Any) -> None:
            if not fut.done():
                fut.set_result(channel)

        try:
            conn.channel(on_open_callback=opened)
        except Exception as exc:
            raise translate(exc) from exc
        timeout = self.url.float_option("connect_timeout", 10.0)
        try:
            channel = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ConnectionLost("the broker did not open a channel") from None
        chan = Chan(channel, self.generation, self.check_blocked)
        if confirms:
            await chan.enable_confirms()
        return chan

    async def channel(self, key: str, confirms: bool = False,
                      setup: Callable[[Chan], Awaitable[None]] | None = None,
                      probing: bool = False) -> Chan:
        """The shared channel named ``key``, reopened if the broker closed it.

        ``probing``: the broker closing it (404, 405, 406) is expected, not logged.
        """
        chan = self._channels.get(key)
        if chan is not None and chan.is_open:
            return chan
        lock = self._channel_locks.setdefault(key, asyncio.Lock())
        async with lock:
            chan = self._channels.get(key)
            if chan is not None and chan.is_open:
                return chan
            chan = await self.open_channel(confirms)
            if probing:
                expect_closes(chan.channel)
            if setup is not None:
                await setup(chan)
            self._channels[key] = chan
            return chan

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection and stop the I/O thread (from any other thread)."""
        if self.closed:
            return
        if self.pid != os.getpid():  # a forked child: the parent owns the socket
            self.closed = True
            return

        self.closing = True

        async def shut() -> None:
            conn = self._conn
            if conn is not None and (conn.is_open or conn.is_opening):
                done = self._loop.create_future()
                conn.add_on_close_callback(lambda *_: resolve(done))
                try:
                    conn.close()
                    await asyncio.wait_for(done, timeout)
                except Exception:  # noqa: BLE001 - best effort
                    logger.debug("close failed", exc_info=True)

        if not self.in_io_thread():
            try:
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout + 1)
            except Exception:  # noqa: BLE001 - best effort
                logger.debug("close failed", exc_info=True)
        self.closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        if not self.in_io_thread():
            self._thread.join(timeout)
