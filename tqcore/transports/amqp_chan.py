"""A pika channel made awaitable, and pika's errors translated.

:class:`Chan` wraps one pika channel of a :class:`~tqcore.transports.amqp_link.Link`:
RPCs (declare, bind, qos, cancel...), ``basic.get``, consumers and publishes with
publisher confirms become awaitables on the link's I/O loop, and every one of them
fails with the translated reason when the broker closes the channel, so nothing
waits forever on a channel that is gone.

pika errors become :class:`ChannelError` (a channel the broker closed, with its
AMQP reply code), :class:`LoginRefused`, ``ConnectFailed`` or ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from tqcore.exceptions import ConnectFailed, ConnectionLost, TransportError
from tqcore.transports.amqp_codec import WireMessage

logger = logging.getLogger("tqcore.transport.amqp")

NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED = 404, 405, 406


#: pika channels whose broker-side closes we expect (passive declares probing for a
#: queue): pika's warning about them is noise, the caller handles the error.
_EXPECTED_CLOSES: weakref.WeakSet[Any] = weakref.WeakSet()


class _ExpectedCloses(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(args, tuple) and len(args) == 3
                    and args[0] in (NOT_FOUND, RESOURCE_LOCKED, PRECONDITION_FAILED)
                    and args[2] in _EXPECTED_CLOSES)


logging.getLogger("pika.channel").addFilter(_ExpectedCloses())


def expect_closes(channel: Any) -> None:
    """The broker closing ``channel`` (404, 405, 406) is expected: do not let pika log it."""
    _EXPECTED_CLOSES.add(channel)
if logging.getLogger("pika").level == logging.NOTSET:
    # pika narrates every connection step, and logs each failed attempt with a
    # traceback; we translate and log every failure ourselves, once, in one line.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


class ChannelError(TransportError):
    """The broker closed a channel (404 not found, 405 locked, 406 precondition...)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"AMQP channel error {code}: {text}")
        self.code = code


class LoginRefused(ConnectFailed):
    """Bad credentials or vhost: retrying cannot help."""


def translate(reason: BaseException | None) -> TransportError:
    """A pika close reason or exception as a :class:`TransportError` (cause kept)."""
    import pika.exceptions as pe

    if isinstance(reason, TransportError):
        return reason
    exc: TransportError
    if isinstance(reason, pe.ChannelClosedByBroker):
        exc = ChannelError(reason.reply_code, reason.reply_text)
    elif isinstance(reason, pe.ProbableAuthenticationError | pe.ProbableAccessDeniedError):
        exc = LoginRefused(f"the broker refused the login: {reason}")
    elif isinstance(reason, pe.AMQPConnectionError | OSError) and not isinstance(
            reason, pe.ConnectionClosed | pe.StreamLostError):
        exc = ConnectFailed(f"cannot connect to the broker: {reason!r}")
    else:
        exc = ConnectionLost(f"broker connection lost: {reason!r}")
    exc.__cause__ = reason
    return exc


def resolve(fut: asyncio.Future[Any], value: Any = None) -> None:
    """Set ``fut``'s result unless it is done already."""
    if not fut.done():
        fut.set_result(value)


class Sink(Protocol):
    """Where a publish's outcome goes: an ``asyncio.Future`` or a :class:`Confirms` slot."""

    def done(self) -> bool: ...  # noqa: D102

    def set_result(self, result: bool) -> None: ...  # noqa: D102

    def set_exception(self, exc: BaseException) -> None: ...  # noqa: D102


#: States of a :class:`Confirms` slot.
PENDING, CONFIRMED, RETURNED, FAILED = 0, 1, 2, 3


class Confirms:
    """The broker's answers to ``n`` publishes, waited for by a thread other than the
    I/O thread.

    Lighter than a ``concurrent.futures.Future`` per message driven through a
    coroutine: the I/O thread settles slots as confirms arrive, and the last one
    releases a lock the caller is blocked on (one wake-up per batch). Slots are only
    ever settled on the I/O thread; :meth:`wait` runs on the caller's.
    """

    __slots__ = ("_done", "_left", "_released", "error", "errors", "states")

    def __init__(self, n: int) -> None:
        self._done = threading.Lock()
        self._done.acquire()  # released when every slot is settled (or on fail())
        self._left = n
        self._released = False
        self.states = [PENDING] * n
        #: The first failure (a nack, the channel closing, a blocked connection).
        self.error: BaseException | None = None
        #: Each failed publish's error, by index.
        self.errors: dict[int, BaseException] = {}
        if n == 0:
            self._release()

    def slot(self, index: int) -> _Slot:
        """The sink for publish number ``index`` of the batch."""
        return _Slot(self, index)

    def _settle(self, index: int, state: int, exc: BaseException | None = None) -> None:
        if self.states[index] != PENDING:
            return
        self.states[index] = state
        if exc is not None:
            self.errors[index] = exc
            if self.error is None:
                self.error = exc
        self._left -= 1
        if self._left <= 0:
            self._release()

    def fail(self, exc: BaseException) -> None:
        """Give up on the whole batch now (nothing more will be published)."""
        if self.error is None:
            self.error = exc
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """Block until every publish is settled; False if ``timeout`` passed first."""
        return self._done.acquire(timeout=max(0.0, timeout))

    @property
    def returned(self) -> list[int]:
        """Indexes of the publishes the broker returned as unroutable."""
        return [i for i, state in enumerate(self.states) if state == RETURNED]


class _Slot:
    """One publish of a :class:`Confirms` batch, as a :class:`Sink`."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: Confirms, index: int) -> None:
        self.batch, self.index = batch, index

    def done(self) -> bool:
        return self.batch.states[self.index] != PENDING

    def set_result(self, result: bool) -> None:
        self.batch._settle(self.index, CONFIRMED if result else RETURNED)

    def set_exception(self, exc: BaseException) -> None:
        self.batch._settle(self.index, FAILED, exc)


class Chan:
    """A pika channel with awaitable RPCs and publisher confirms.

    Every awaiting future fails with the translated reason when the channel closes,
    so no caller waits forever on a channel the broker shut.
    """

    def __init__(self, channel: Any, generation: int,
                 check: Callable[[], None] | None = None) -> None:
        self.channel = channel
        self._check = check
        self.generation = generation
        self.closed: TransportError | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        #: Publishes awaiting their confirm, by publish sequence number (ascending:
        #: dicts keep insertion order, which :meth:`_confirmed` relies on).
        self._unconfirmed: dict[int, tuple[Sink, str, bytes]] = {}
        self._tag = 0
        #: Delivery tags received on this channel and not yet acked or rejected: an ack
        #: with ``multiple=True`` may only cover tags that are all ours to settle.
        self.unsettled: set[int] = set()
        self.on_close: list[Callable[[Chan], None]] = []
        channel.add_on_close_callback(self._closed)

    @property
    def is_open(self) -> bool:
        """True until the channel or its connection closes."""
        return self.closed is None and self.channel.is_open

    def _closed(self, _channel: Any, reason: BaseException) -> None:
        self.closed = translate(reason)
        futures = list(self._pending) + [f for f, _, _ in self._unconfirmed.values()]
        self._pending.clear()
        self._unconfirmed.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(self.closed)
        for hook in self.on_close:
            try:
                hook(self)
            except Exception:  # a broken hook must not stop the others
                logger.exception("channel close hook failed")

    def _future(self) -> asyncio.Future[Any]:
        if self.closed is not None:
            raise self.closed
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    async def rpc(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``channel.<method>(..., callback=...)`` and await the broker's answer."""
        fut = self._future()

        def done(*result: Any) -> None:
            if not fut.done():
                fut.set_result(result[-1] if result else None)

        try:
            getattr(self.channel, method)(*args, callback=done, **kwargs)
        except Exception as exc:  # pika refuses the call: the channel is closing
            raise translate(exc) from exc
        return await fut

    async def consume(self, queue: str, on_message: Callable[..., None], *,
                      auto_ack: bool = False, arguments: dict[str, Any] | None = None) -> str:
        """Start a consumer; returns its tag once the broker confirmed it."""
        fut = self._future()
        try:
            tag: str = self.channel.basic_consume(
                queue, on_message, auto_ack=auto_ack, arguments=arguments,
                callback=lambda _frame: resolve(fut))
        except Exception as exc:
            raise translate(exc) from exc
        await fut
        return tag

    async def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """One ``basic.get`` (manual ack): ``(method, properties, body)`` or None if empty."""
        import pika.spec

        fut = self._future()

        def got(channel: Any, method: Any, props: Any, body: bytes) -> None:
            # Drop our Basic.GetEmpty callback, or every non-empty get leaves one behind.
            channel.callbacks.remove(channel.channel_number, pika.spec.Basic.GetEmpty, empty)
            if not fut.done():
                fut.set_result((method, props, body))
            else:  # the caller gave up (timeout): give the message back at once
                channel.basic_reject(method.delivery_tag, requeue=True)

        def empty(_frame: Any) -> None:
            if not fut.done():
                fut.set_result(None)

        try:
            self.channel.add_callback(empty, [pika.spec.Basic.GetEmpty], one_shot=True)
            self.channel.basic_get(queue, got, auto_ack=False)
        except Exception as exc:
            raise translate(exc) from exc
        result: tuple[Any, Any, bytes] | None = await fut
        return result

    # -- publishing with confirms ------------------------------------------------
    async def enable_confirms(self) -> None:
        """Put the channel in confirm mode and watch returns of mandatory publishes."""
        self.channel.add_on_return_callback(self._returned)
        await self.rpc("confirm_delivery", self._confirmed)

    def publish(self, exchange: str, routing_key: str, wire: WireMessage,
                mandatory: bool = False) -> asyncio.Future[bool]:
        """Publish; the future is True once confirmed, False if returned unroutable."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.publish_to(fut, exchange, routing_key, wire.body, wire.properties(), mandatory)
        return fut

    def publish_to(self, sink: Sink, exchange: str, routing_key: str, body: bytes,
                   properties: Any, mandatory: bool = False) -> None:
        """Publish (I/O thread) with ready-made ``properties``; the outcome goes to
        ``sink``: True once confirmed, False if returned unroutable, or the error.

        Raises:
            TransportError: the channel is closed or the broker blocks publishing.
        """
        if self.closed is not None:
            raise self.closed
        if self._check is not None:
            self._check()
        try:
            self.channel.basic_publish(exchange, routing_key, body, properties,
                                       mandatory=mandatory)
        except Exception as exc:
            raise translate(exc) from exc
        self._tag += 1
        self._unconfirmed[self._tag] = (sink, routing_key, body)

    def fail_unconfirmed(self, exc: TransportError) -> None:
        """Fail every publish still waiting for its confirm."""
        waiting, self._unconfirmed = self._unconfirmed, {}
        for fut, _, _ in waiting.values():
            if not fut.done():
                fut.set_exception(exc)

    def _confirmed(self, frame: Any) -> None:
        import pika.spec

        method = frame.method
        last = method.delivery_tag
        if method.multiple:
            # Sequence numbers were inserted in ascending order: stop at the first past it.
            tags = []
            for tag in self._unconfirmed:
                if tag > last:
                    break
                tags.append(tag)
        else:
            tags = [last]
        ok = isinstance(method, pika.spec.Basic.Ack)
        for tag in tags:
            entry = self._unconfirmed.pop(tag, None)
            if entry is None or entry[0].done():
                continue
            if ok:
                entry[0].set_result(True)
            else:
                entry[0].set_exception(TransportError("the broker refused a message (nack)"))

    def _returned(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        # A basic.return comes before the confirm of the same message; match it to
        # the oldest unconfirmed publish with the same routing key and body.
        for tag in sorted(self._unconfirmed):
            fut, key, sent = self._unconfirmed[tag]
            if key == method.routing_key and sent == body and not fut.done():
                del self._unconfirmed[tag]
                fut.set_result(False)
                return

    async def close(self) -> None:
        """Close the channel (errors ignored: it may already be gone)."""
        if self.is_open:
            try:
                self.channel.close()
            except Exception:  # noqa: BLE001 - closing anyway
                logger.debug("channel close failed", exc_info=True)
