"""The AMQP transport's fast paths keep its guarantees.

Publishes handed to the I/O thread still return only once confirmed, from any number of
threads; acks coalesced into ``multiple=True`` frames still settle exactly the messages
acked (never a neighbour somebody holds); messages pushed to a claimer's consumer and
never claimed count as waiting, and go back without an attempt counted.
"""

from __future__ import annotations

import pickle
import random
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tqcore.transports import Delivery, OutgoingMessage, Transport, from_url
from tqcore.transports.amqp_chan import Chan
from tqcore.transports.amqp_settle import ack_tags

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def connect(amqp_url: str) -> Iterator[Any]:
    opened: list[Transport] = []

    def connect(**options: Any) -> Any:
        transport = from_url(amqp_url, **options)
        opened.append(transport)
        return transport

    yield connect
    for transport in opened:
        transport.close()


@pytest.fixture
def raw(rabbitmq_server: Any, amqp_url: str) -> Iterator[Any]:
    """A plain pika channel and the test's entity prefix."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(
        f"amqp://guest:guest@127.0.0.1:{rabbitmq_server.port}/%2F"))
    yield conn.channel(), amqp_url.split("prefix=", 1)[1]
    conn.close()


def claim(transport: Transport, limit: int, timeout: float = 0.0) -> list[Delivery]:
    return transport.claim(["q"], consumer="c", limit=limit, lease=30, timeout=timeout)


def claim_all(transport: Transport, want: int) -> list[Delivery]:
    got: list[Delivery] = []
    for _ in range(200):
        if len(got) >= want:
            break
        got += claim(transport, want - len(got), timeout=0.2)
    return got


# -- publishing -----------------------------------------------------------------------


def test_each_enqueue_is_confirmed_before_it_returns(connect: Any, raw: Any) -> None:
    transport = connect()
    channel, prefix = raw
    transport.enqueue("q", b"first")  # declares: later ones take the fast path

    for i in range(2, 40):
        transport.enqueue("q", f"m{i}".encode())
        # No wait: the broker counts it the moment enqueue returns.
        assert channel.queue_declare(f"{prefix}q", passive=True).method.message_count == i


def test_many_threads_publishing_at_once_are_all_confirmed(connect: Any, raw: Any) -> None:
    transport = connect()
    channel, prefix = raw
    transport.declare_queue("q")
    threads, per_thread = 8, 60
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def produce(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                transport.enqueue("q", f"t{n}-{i}".encode(), priority=i % 10)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)

    assert not errors
    assert channel.queue_declare(f"{prefix}q", passive=True).method.message_count == \
        threads * per_thread
    got = claim_all(transport, threads * per_thread)
    assert Counter(d.payload for d in got) == Counter(
        f"t{n}-{i}".encode() for n in range(threads) for i in range(per_thread))
    transport.ack(got)


def test_enqueue_with_event_confirms_both(connect: Any) -> None:
    transport = connect()
    sub = transport.subscribe_events()
    transport.enqueue("q", b"warm-up")  # declares queue and event exchange
    built: list[int] = []

    def body() -> bytes:
        built.append(1)
        return b'{"type": "task-sent", "hostname": "p@h"}'

    error = transport.enqueue_with_event([OutgoingMessage("q", b"job")], "task.sent", body,
                                         hostname="p@h")

    assert error is None and built == [1]
    assert [d.payload for d in claim(transport, 10)] == [b"warm-up", b"job"]
    assert sub.get(5.0) == [b'{"type": "task-sent", "hostname": "p@h"}']


def test_enqueue_with_event_loses_only_the_event_to_a_bad_body(connect: Any) -> None:
    transport = connect()
    transport.enqueue("q", b"warm-up")

    def body() -> bytes:
        raise TypeError("not JSON serializable")

    error = transport.enqueue_with_event([OutgoingMessage("q", b"job")], "task.sent", body)

    assert isinstance(error, TypeError)
    assert sorted(d.payload for d in claim(transport, 10)) == [b"job", b"warm-up"]


# -- acks -----------------------------------------------------------------------------


class _FakeChannel:
    def __init__(self) -> None:
        self.is_open = True
        self.acks: list[tuple[int, bool]] = []

    def add_on_close_callback(self, _cb: Any) -> None:
        pass

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))


def test_a_multiple_ack_stops_below_the_first_tag_still_held() -> None:
    chan = Chan(_FakeChannel(), 1)
    chan.unsettled.update(range(1, 11))

    ack_tags(chan, [3, 1, 2, 5, 7])  # 4 is still held: 5 and 7 must go one by one

    assert chan.channel.acks == [(3, True), (5, False), (7, False)]
    assert chan.unsettled == {4, 6, 8, 9, 10}
    ack_tags(chan, [4, 6, 3])  # 3 again: already settled, not sent twice
    assert chan.channel.acks[3:] == [(6, True)]
    assert chan.unsettled == {8, 9, 10}


def test_coalesced_acks_from_many_threads_settle_exactly_the_acked_messages(
        connect: Any) -> None:
    holder = connect()
    holder.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(60)])
    got = claim(holder, 60)
    assert len(got) == 60
    random.Random(7).shuffle(got)
    acked, kept = got[:40], got[40:]
    chunks = [acked[i::8] for i in range(8)]  # interleaved: tags far from contiguous
    threads = [threading.Thread(target=holder.ack, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    [figures] = holder.queue_stats(["q"])
    assert (figures.depth, figures.in_flight) == (0, 20)
    holder.close()  # the 20 never acked go back; the 40 acked must not

    other = connect()
    back = claim_all(other, 20)
    assert sorted(d.payload for d in back) == sorted(d.payload for d in kept)
    assert claim(other, 100) == []
    other.ack(back)


# -- buffered (pushed, unclaimed) messages --------------------------------------------


def test_pushed_unclaimed_messages_count_as_waiting_and_go_back_uncounted(
        connect: Any) -> None:
    first = connect()
    first.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(10)])
    batch = claim(first, 5)
    first.ack(batch)  # frees the consumer's prefetch: the broker pushes 5 more to it
    for _ in range(100):
        if first.buffered_counts() == {"q": 5}:
            break
        threading.Event().wait(0.02)
    assert first.buffered_counts() == {"q": 5}
    [figures] = first.queue_stats(["q"])
    assert (figures.depth, figures.in_flight) == (5, 0)

    first.close()  # gives them back without counting an attempt

    rest = claim_all(connect(), 5)
    assert sorted(d.payload for d in rest) == [f"m{i}".encode() for i in range(5, 10)]
    assert {d.attempts for d in rest} == {1}


def test_purge_removes_messages_pushed_to_our_consumer(connect: Any) -> None:
    transport = connect()
    transport.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(6)])
    transport.ack(claim(transport, 3))
    for _ in range(100):
        if transport.buffered_counts() == {"q": 3}:
            break
        threading.Event().wait(0.02)

    assert transport.purge("q") == 3
    assert transport.buffered_counts() == {}
    assert claim(transport, 10) == []


def test_a_delivery_id_pickles_as_its_number_only(connect: Any) -> None:
    transport = connect()
    transport.enqueue("q", b"x")
    [d] = claim(transport, 1)

    assert pickle.loads(pickle.dumps(d.delivery_id)) == repr(d.delivery_id)
    d.ack()
