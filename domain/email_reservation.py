"""One member per email: a reservation per address, held by at most one member at a time.

Why an aggregate and not a read-then-write check: two registrations that read "free" at
the same moment would both succeed. The event store already refuses to record version N
of one aggregate twice, so each address gets an aggregate whose id is derived from the
address; the member's event and the reservation's event are saved in one transaction, and
of two concurrent registrations with one address exactly one records the reservation's
first version. The other collides, is retried on fresh state, finds the address held and
fails with a CONFLICT naming `email`.

The id is an HMAC of the normalised address keyed with the server's secret, not a plain
hash: without the secret, nobody can hash a list of addresses and match them against the
event store. The reservation's events carry only the holder's member id, never the address,
so erasing the member (destroying their data key) leaves nothing personal behind.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import ConflictError

_ID_CONTEXT = b"patron/email-reservation/v1\x00"


def email_key(email: str) -> str:
    """The form two addresses are compared in: same key, same mailbox as far as we judge.

    `email` is already normalised by email-validator (Unicode NFC, domain lower-cased and
    IDNA-checked, surrounding space removed); the key also lower-cases the local part, since
    practically every mail system treats it case-insensitively. Dots and `+tags` are kept:
    that they do not matter is a rule of some providers, not of email.
    """
    return unicodedata.normalize("NFC", email.strip()).lower()


def reservation_id(secret: str, email: str) -> UUID:
    """The id of the reservation of `email`: HMAC-SHA256 under the server's secret."""
    digest = hmac.new(
        secret.encode(), _ID_CONTEXT + email_key(email).encode(), hashlib.sha256
    ).digest()
    return UUID(bytes=digest[:16])


class EmailReservation(Aggregate):
    """Who holds one address. Released, it can be taken again (a new version)."""

    @classmethod
    def take(cls, reservation: UUID, member_id: str) -> EmailReservation:
        return cls._create(cls.Reserved, id=reservation, member_id=member_id)

    class Reserved(Aggregate.Created):
        member_id: str

    def __init__(self, member_id: str) -> None:
        self.holder: str | None = member_id

    def hold_for(self, member_id: str) -> None:
        """Take the address for `member_id`; CONFLICT if another member holds it."""
        if self.holder == member_id:
            return
        if self.holder is not None:
            raise ConflictError("this email is already used by another member", "email")
        self._taken(member_id=member_id)

    def release(self, member_id: str) -> None:
        """Give the address up; a no-op unless `member_id` holds it (then nothing to do)."""
        if self.holder == member_id:
            self._released(member_id=member_id)

    @event("Taken")
    def _taken(self, member_id: str) -> None:
        self.holder = member_id

    @event("Released")
    def _released(self, member_id: str) -> None:
        self.holder = None
