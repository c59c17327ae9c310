"""Posted acks on Redis (``Transport.ack_nowait``, :mod:`tqcore.transports.redis_raw`):
written with their reply switched off, confirmed by a later reply on the same
connection, sent again when that connection fails first, kept while Redis is down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.redis_server import RedisServer
from tqcore.exceptions import TransportError
from tqcore.transports import OutgoingMessage, from_url
from tqcore.transports.redis import RedisTransport
from tqcore.transports.redis_raw import _CONFIRM_EVERY, command

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def transport(redis_url: str) -> Iterator[RedisTransport]:
    t = from_url(redis_url)
    assert isinstance(t, RedisTransport)
    yield t
    t.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    yield client
    client.close()


def _kept(t: RedisTransport) -> list[Any]:
    return list(t._raw._free)


def _unconfirmed(t: RedisTransport) -> int:
    return sum(len(getattr(c, "tq_unconfirmed", None) or []) for c in _kept(t))


def _fill(t: RedisTransport, n: int) -> list[Any]:
    t.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(n)])
    return t.claim(["q"], consumer="c", limit=n, lease=30)


def test_a_posted_ack_leaves_no_reply_to_read_and_is_confirmed_by_the_next_call(
        transport: RedisTransport) -> None:
    got = _fill(transport, 3)
    for d in got:
        d.ack(wait=False)
    assert _unconfirmed(transport) == 3
    assert not any(c.can_read(timeout=0.05) for c in _kept(transport))  # nothing unread

    assert transport.claim(["q"], consumer="c", limit=10, lease=30) == []
    assert _unconfirmed(transport) == 0
    assert transport.queue_stats(["q"])[0].in_flight == 0


def test_posted_acks_are_confirmed_every_few_and_at_close(redis_url: str) -> None:
    t = from_url(redis_url)
    assert isinstance(t, RedisTransport)
    got = _fill(t, _CONFIRM_EVERY + 3)
    for d in got:
        d.ack(wait=False)
    assert _unconfirmed(t) == 3  # the first _CONFIRM_EVERY were confirmed by a PING
    t.close()
    other = from_url(redis_url)
    try:
        assert other.queue_stats(["q"])[0].in_flight == 0
    finally:
        other.close()


def test_unconfirmed_posts_are_sent_again_when_their_connection_fails(
        transport: RedisTransport, raw: Any) -> None:
    _fill(transport, 1)
    [c] = _kept(transport)
    # As if posted but never run: the connection dies before the server reads it.
    key = transport._k("posted")
    c.tq_unconfirmed = [command("SET", key, "1")]
    raw.client_kill_filter(_type="normal", skipme=True)

    assert transport.claim(["q"], consumer="c", limit=1, lease=30) == []  # retried
    assert raw.get(key) == b"1"


def test_a_failed_enqueue_sends_the_posts_of_its_connection_again(
        transport: RedisTransport, raw: Any) -> None:
    transport.enqueue("q", b"first")
    [c] = _kept(transport)
    key = transport._k("posted")
    c.tq_unconfirmed = [command("SET", key, "1")]
    raw.client_kill_filter(_type="normal", skipme=True)

    transport.enqueue("q", b"second")  # the producer's write fails once, then is retried
    assert raw.get(key) == b"1"
    assert len(transport.claim(["q"], consumer="c", limit=5, lease=30)) == 2


def test_posts_wait_while_redis_is_down_and_go_out_when_it_is_back(tmp_path: Path) -> None:
    from tests.servers.redis_server import running_redis

    with running_redis(tmp_path / "a") as server:
        port = server.port
        t = from_url(f"{server.url}?socket_connect_timeout=1")
        assert isinstance(t, RedisTransport)
        t.enqueue("q", b"x")
        [c] = _kept(t)
        c.tq_unconfirmed = [command("SET", "posted", "1")]
        os.kill(server.pid, signal.SIGKILL)
        time.sleep(0.1)
        with pytest.raises(TransportError):  # fails: the post is kept, not lost
            t.conn.run("confirm", t._raw.confirm)
        assert t._raw._orphans == [command("SET", "posted", "1")]

    with running_redis(tmp_path / "b", port=port) as server:
        t.conn.run("confirm", t._raw.confirm)  # an idle worker's next wait sends it
        assert server.client().get("posted") == b"1"
        assert t._raw._orphans == []
        t.close()


def test_a_forked_child_never_sends_its_parents_posts(
        transport: RedisTransport, raw: Any) -> None:
    key = transport._k("posted")
    transport.claim(["q"], consumer="c", limit=1, lease=30)
    transport._raw._orphans = [command("SET", key, "child")]
    pid = os.fork()
    if pid == 0:  # child: its first call uses its own client, without the parent's posts
        try:
            transport.claim(["q"], consumer="c", limit=1, lease=30)
            os._exit(0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert raw.get(key) is None
    transport.claim(["q"], consumer="c", limit=1, lease=30)  # the parent's next call sends it
    assert raw.get(key) == b"child"


def test_a_server_refusing_client_reply_gets_acks_that_wait_for_their_answer(
        redis_url: str, raw: Any) -> None:
    user = f"noreply{os.getpid()}"
    raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all",
                        "-client|reply")
    try:
        t = from_url(redis_url.replace("redis://", f"redis://{user}:pw@"))
        assert isinstance(t, RedisTransport)
        try:
            got = _fill(t, 3)
            for d in got:
                d.ack(wait=False)
            assert t._raw._skips is False and _unconfirmed(t) == 0
            assert t.claim(["q"], consumer="c", limit=5, lease=30) == []  # still in step
            assert t.queue_stats(["q"])[0].in_flight == 0
        finally:
            t.close()
    finally:
        raw.execute_command("ACL", "DELUSER", user)


_POST_AND_HANG = """
import sys, time
from tqcore.transports import from_url
t = from_url(sys.argv[1])
got = t.claim(["q"], consumer="doomed", limit=100, lease=1.0)
for d in got:
    d.ack(wait=False)
print(len(got), flush=True)
time.sleep(600)
"""


def test_acks_posted_by_a_process_killed_at_once_are_not_lost(
        transport: RedisTransport, redis_url: str) -> None:
    transport.enqueue_many([OutgoingMessage("q", f"m{i}".encode()) for i in range(50)])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _POST_AND_HANG, redis_url],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "50"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    # Past the dead consumer's 1 s lease, nothing comes back: every ack was delivered.
    assert transport.claim(["q"], consumer="c", limit=100, lease=30, timeout=2.5) == []
    assert transport.queue_stats(["q"])[0].in_flight == 0
