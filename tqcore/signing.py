"""Optional message signing with a shared secret (``security_key`` / ``TQ_SECURITY_KEY``).

When a key is configured, producers add to every task message the headers
``x_tq_signed_at`` (epoch), ``x_tq_nonce`` (uuid4) and ``x_tq_signature``: an
HMAC-SHA256 over the canonical JSON of the other headers plus the body bytes. Control
commands carry the same three fields inside the command body. Workers refuse, count
and dead-letter (tasks) or ignore (commands):

* unsigned messages and wrong signatures;
* stale ones: signed more than ``security_max_age`` seconds before they were due
  (their ETA, or their signing time);
* replays: a first delivery whose nonce this worker has already seen (redeliveries of
  the same message by the broker, ``attempts > 1``, are not replays).

The seen-nonce window is per worker and bounded; a replay sent to a different worker
inside ``security_max_age`` is caught only by the age check. Signing authenticates,
it does not encrypt.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from typing import Any

from tqcore.exceptions import TqError
from tqcore.message import Envelope, parse_time

SIG, SIGNED_AT, NONCE = "x_tq_signature", "x_tq_signed_at", "x_tq_nonce"
_WINDOW = 100_000


class SignatureError(TqError):
    """A message failed signature checks; the text is the reason."""


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in fields.items() if k != SIG}, sort_keys=True,
                      separators=(",", ":"), default=str).encode("utf-8")


class Signer:
    """Signs and verifies with one shared secret.

    Args:
        secret: the shared key (bytes or text).
        max_age: seconds a signature stays valid after the message is due.
    """

    def __init__(self, secret: bytes | str, max_age: float = 300.0) -> None:
        self.secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self.max_age = max_age
        self._seen: collections.deque[str] = collections.deque(maxlen=_WINDOW)
        self._seen_set: set[str] = set()
        self._lock = threading.Lock()
        self.refused = 0

    def _mac(self, fields: dict[str, Any], body: bytes = b"") -> str:
        return hmac.new(self.secret, _canonical(fields) + b"\n" + body, hashlib.sha256).hexdigest()

    # -- task messages ------------------------------------------------------------
    def sign_envelope(self, env: Envelope) -> None:
        """Add the signature headers to ``env`` (in place)."""
        env.headers[SIGNED_AT] = time.time()
        env.headers[NONCE] = str(uuid.uuid4())
        env.headers[SIG] = self._mac(env.headers, env.body)

    def verify_envelope(self, env: Envelope, *, first_delivery: bool) -> None:
        """Check ``env``; raises :class:`SignatureError` with the reason."""
        self._check(env.headers, env.body, env.headers.get("eta"), first_delivery)

    # -- control commands -----------------------------------------------------------
    def sign_command(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with signature fields added."""
        signed = dict(body, **{SIGNED_AT: time.time(), NONCE: str(uuid.uuid4())})
        signed[SIG] = self._mac(signed)
        return signed

    def verify_command(self, body: dict[str, Any]) -> None:
        """Check a control command; raises :class:`SignatureError` with the reason."""
        self._check(body, b"", None, True)

    def _check(self, fields: dict[str, Any], body: bytes, eta: Any, first: bool) -> None:
        try:
            self._verify(fields, body, eta, first)
        except SignatureError:
            with self._lock:
                self.refused += 1
            raise

    def _verify(self, fields: dict[str, Any], body: bytes, eta: Any, first: bool) -> None:
        given = fields.get(SIG)
        if not isinstance(given, str):
            raise SignatureError("unsigned message refused (signing is required)")
        if not hmac.compare_digest(given, self._mac(fields, body)):
            raise SignatureError("bad signature")
        try:
            signed_at = float(fields.get(SIGNED_AT) or 0)
            due = max(signed_at, parse_time(eta) or 0.0)
        except (TypeError, ValueError, TqError):
            raise SignatureError("bad signature timestamp") from None
        if time.time() - due > self.max_age:
            raise SignatureError(f"signature expired (older than {self.max_age:.0f}s)")
        nonce = str(fields.get(NONCE))
        with self._lock:
            if nonce in self._seen_set:
                if first:
                    raise SignatureError("replayed message refused")
                return
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(nonce)
            self._seen_set.add(nonce)


def signer_for(conf: Any) -> Signer | None:
    """The app's signer, or None when no ``security_key`` is configured."""
    key = conf.get("security_key") or os.environ.get("TQ_SECURITY_KEY")
    if not key:
        return None
    return Signer(key, float(conf.get("security_max_age") or 300.0))
