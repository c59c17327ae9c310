"""Message signing: HMAC over headers and body, expiry, replay window."""

from __future__ import annotations

import time

import pytest

from tqcore import App, message
from tqcore.signing import SIG, SIGNED_AT, SignatureError, Signer
from tqcore.testing import start_worker


def _signed_env(signer: Signer) -> message.Envelope:
    payload = message.build_task("t.add", "id-1", (1, 2), {}, queue="celery", signer=signer)
    return message.decode_envelope(payload)


def test_a_signed_message_verifies_once_and_its_replay_is_refused() -> None:
    signer = Signer("secret")
    env = _signed_env(signer)
    signer.verify_envelope(env, first_delivery=True)
    signer.verify_envelope(env, first_delivery=False)  # a broker redelivery is fine
    with pytest.raises(SignatureError, match="replayed"):
        signer.verify_envelope(env, first_delivery=True)
    assert signer.refused == 1


@pytest.mark.parametrize("tamper, reason", [
    (lambda env: env.headers.pop(SIG), "unsigned"),
    (lambda env: env.headers.update(task="os.system"), "bad signature"),
    (lambda env: setattr(env, "body", env.body.replace(b"1", b"9")), "bad signature"),
    (lambda env: env.headers.update({SIG: "0" * 64}), "bad signature"),
])
def test_unsigned_or_tampered_messages_are_refused(tamper, reason) -> None:  # type: ignore[no-untyped-def]
    signer = Signer("secret")
    env = _signed_env(signer)
    tamper(env)
    with pytest.raises(SignatureError, match=reason):
        signer.verify_envelope(env, first_delivery=True)


def test_a_message_signed_with_another_key_is_refused() -> None:
    env = _signed_env(Signer("other"))
    with pytest.raises(SignatureError, match="bad signature"):
        Signer("secret").verify_envelope(env, first_delivery=True)


def test_stale_signatures_expire_but_eta_extends_them() -> None:
    signer = Signer("secret", max_age=10)
    env = _signed_env(signer)
    env.headers[SIGNED_AT] = time.time() - 60
    env.headers[SIG] = signer._mac(env.headers, env.body)
    with pytest.raises(SignatureError, match="expired"):
        signer.verify_envelope(env, first_delivery=True)
    env.headers["eta"] = message.isoformat(time.time() - 5)
    env.headers[SIG] = signer._mac(env.headers, env.body)
    signer.verify_envelope(env, first_delivery=True)


def test_control_commands_are_signed_and_checked() -> None:
    signer = Signer("secret")
    body = signer.sign_command({"method": "shutdown", "arguments": {}})
    signer.verify_command(body)
    with pytest.raises(SignatureError):
        signer.verify_command({"method": "shutdown", "arguments": {}})
    forged = dict(body, method="pool_grow")
    with pytest.raises(SignatureError, match="bad signature"):
        signer.verify_command(forged)


def test_a_worker_with_a_key_runs_signed_tasks_and_dead_letters_unsigned_ones(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tq.db'}"
    app = App("signed", broker=url, security_key="s3cret", set_as_current=False)

    @app.task(name="signed.add")
    def add(x: int, y: int) -> int:
        return x + y

    unsigned = message.build_task("signed.add", "forged-1", (1, 1), {}, queue="celery")
    with start_worker(app, concurrency=1):
        assert add.delay(2, 2).get(timeout=10) == 4
        app.transport.enqueue("celery", unsigned, message_id="forged-1")
        deadline = time.monotonic() + 10
        while not app.transport.dead_letters("celery") and time.monotonic() < deadline:
            time.sleep(0.05)
        letters = app.transport.dead_letters("celery")
        assert [d.message_id for d in letters] == ["forged-1"]
        assert "unsigned" in letters[0].reason
        assert app.AsyncResult("forged-1").state == "PENDING"
        unsigned_ping = App("intruder", broker=url, set_as_current=False).control.ping(timeout=1)
        assert unsigned_ping == []
        assert app.control.ping(timeout=2) != []
