"""URLs, states, rate limits, backoff."""

from __future__ import annotations

import pytest

from tqcore import states
from tqcore.exceptions import ImproperlyConfigured
from tqcore.task import backoff_delay
from tqcore.urls import redact, sqlite_path
from tqcore.worker.ratelimit import TokenBucket, parse_rate


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
    ("amqp://user:pw@host:5672//", "amqp://user:***@host:5672//"),
    ("redis://host", "redis://host"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_sqlite_urls_follow_sqlalchemy_convention() -> None:
    assert str(sqlite_path("sqlite:///rel/x.db")) == "rel/x.db"
    assert str(sqlite_path("sqlite:////abs/x.db")) == "/abs/x.db"
    with pytest.raises(ImproperlyConfigured):
        sqlite_path("sqlite:///:memory:")


@pytest.mark.parametrize("text, per_second", [
    ("10/s", 10.0), ("100/m", 100 / 60), ("1000/h", 1000 / 3600), ("5", 5.0), (None, 0.0)])
def test_parse_rate(text: str | None, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


def test_parse_rate_refuses_garbage() -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_rate("fast")


def test_token_bucket_spaces_takes() -> None:
    bucket = TokenBucket(2.0)
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert 0.3 < wait <= 0.5


def test_states_precedence_is_celerys() -> None:
    assert states.state(states.SUCCESS) > states.state(states.STARTED)
    assert states.state(states.PENDING) < states.state(states.RECEIVED)
    assert states.precedence("PROGRESS") == states.precedence(None)


def test_backoff_is_capped_and_jittered_within_bounds() -> None:
    assert backoff_delay(1, 3, 600, False) == 8
    assert backoff_delay(1, 20, 600, False) == 600
    assert all(0 <= backoff_delay(2, 2, 600, True) <= 8 for _ in range(50))
