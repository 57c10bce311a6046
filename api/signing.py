"""HMAC-SHA256 signatures over a timestamp and a raw body, for every webhook in and out.

One scheme for carriers and payment providers calling us, and for the notices we send:

    X-Patron-Timestamp: <unix time in whole seconds>
    X-Patron-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

Signing the timestamp with the body is what makes a captured request worthless later: a
receiver refuses a timestamp outside its replay window (5 minutes either way by default),
and an attacker cannot move the timestamp without breaking the signature. The comparison is
constant-time. Nothing here knows about HTTP frameworks, so the demo seed, the command line
and the tests sign exactly as a real sender does.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Patron-Signature"
TIMESTAMP_HEADER = "X-Patron-Timestamp"
REPLAY_WINDOW_SECONDS = 300
# A timestamp is a Unix time in seconds: 10 digits until 2286. Longer is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class SignatureError(Exception):
    """Why a request's signature is not accepted: UNSIGNED, BAD_SIGNATURE or STALE."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `"<timestamp>." + body`."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The two headers a sender adds to a request carrying `body` (signed now by default)."""
    moment = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(moment), SIGNATURE_HEADER: signature(secret, moment, body)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value.strip() if isinstance(value, str) else None


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    window: int = REPLAY_WINDOW_SECONDS,
) -> int:
    """Check a request's signature and freshness; returns its timestamp or raises.

    The signature is checked before the timestamp's age, so a stale error tells the sender
    only what it signed itself.
    """
    given = _header(headers, SIGNATURE_HEADER)
    raw_timestamp = _header(headers, TIMESTAMP_HEADER)
    if not given or not raw_timestamp:
        raise SignatureError(
            "UNSIGNED",
            f"sign the request: {TIMESTAMP_HEADER} (Unix seconds) and {SIGNATURE_HEADER} "
            "(sha256=<hex HMAC-SHA256 of '<timestamp>.' + body>)",
        )
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit() or len(
        raw_timestamp
    ) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError("BAD_SIGNATURE", f"{TIMESTAMP_HEADER} must be Unix seconds")
    if not hmac.compare_digest(given.encode(), signature(secret, raw_timestamp, body).encode()):
        raise SignatureError("BAD_SIGNATURE", "the signature does not match the timestamp and body")
    timestamp = int(raw_timestamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > window:
        raise SignatureError(
            "STALE", f"the timestamp is more than {window} seconds away from the server's time"
        )
    return timestamp
