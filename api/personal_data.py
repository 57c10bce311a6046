"""Crypto-shredding: personal data in events is encrypted with a per-member data key.

Events are immutable, yet a member may demand erasure. So the event format keeps personal
data in one attribute, `personal`, which this mapper encrypts with AES-GCM under the
member's own key (held in `member_data_keys`). Erasure destroys the key: the events stay
intact and verifiable, and their personal part decodes to None everywhere from then on,
including in read models rebuilt from them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from domain.errors import ErasedError, ValidationError
from domain.validation import refuse_unstorable
from projections.tables import member_data_keys

PERSONAL = "personal"
# Set on a decoded event whose personal part could not be read, to why: ERASED (the
# member's key is destroyed) or TAMPERED (the key is there but the ciphertext fails its
# authentication: the stored bytes were changed). The leading underscore keeps it out of
# every event's data.
LOST_MARK = "_personal_lost"
ERASED = "erased"
TAMPERED = "tampered"
TOKEN_FORMAT = "aesgcm-v1"

log = logging.getLogger("patron.personal_data")


class DataKeyStore:
    """Per-member data keys, with a short-lived cache.

    The cache is why erasure is effective across processes only after `ttl` seconds in
    the worst case; the process that erases evicts its own entry at once.
    """

    def __init__(self, engine: Engine, ttl: float = 5.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[bytes | None, float]] = {}
        self._lock = threading.Lock()

    def _cached(self, member_id: str) -> tuple[bool, bytes | None]:
        with self._lock:
            entry = self._cache.get(member_id)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def _remember(self, member_id: str, key: bytes | None) -> None:
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[member_id] = (key, time.monotonic() + self.ttl)

    def _read(self, member_id: str) -> tuple[bool, bytes | None]:
        """(exists, key): a row with a NULL key means the key was destroyed."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(member_data_keys.c.data_key).where(
                    member_data_keys.c.member_id == member_id
                )
            ).first()
        if row is None:
            return False, None
        return True, base64.b64decode(row.data_key) if row.data_key else None

    def prefetch(self, member_ids: Iterable[str]) -> None:
        """Cache the keys of these members with one query (those not cached already): the
        projection runner calls it once per batch instead of a SELECT per member."""
        if self.ttl <= 0:
            return  # nothing is cached: each decryption reads its key anyway
        wanted = [m for m in dict.fromkeys(member_ids) if not self._cached(m)[0]]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(member_data_keys.c.member_id, member_data_keys.c.data_key).where(
                        member_data_keys.c.member_id.in_(chunk)
                    )
                ).all()
            found = {row.member_id: row.data_key for row in rows}
            for member_id in chunk:
                stored = found.get(member_id)
                # No row, or a destroyed key: nothing decrypts (as key_for_decryption says).
                self._remember(member_id, base64.b64decode(stored) if stored else None)

    def key_for_decryption(self, member_id: str) -> bytes | None:
        hit, key = self._cached(member_id)
        if hit:
            return key
        _exists, key = self._read(member_id)
        self._remember(member_id, key)
        return key

    def key_for_encryption(self, member_id: str) -> bytes:
        hit, key = self._cached(member_id)
        if hit and key is not None:
            return key
        exists, key = self._read(member_id)
        if exists and key is None:
            raise ErasedError("member has been erased; their personal data cannot be stored")
        if key is None:
            key = AESGCM.generate_key(bit_length=256)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(member_data_keys).values(
                            member_id=member_id,
                            data_key=base64.b64encode(key).decode(),
                            created_at=datetime.now(UTC),
                        )
                    )
            except IntegrityError:  # created concurrently: use the stored one
                self._cache.pop(member_id, None)
                return self.key_for_encryption(member_id)
        self._remember(member_id, key)
        return key

    def destroy(self, member_id: str) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(member_data_keys)
                .where(member_data_keys.c.member_id == member_id)
                .values(data_key=None, destroyed_at=datetime.now(UTC))
            )
            if result.rowcount == 0:
                conn.execute(
                    insert(member_data_keys).values(
                        member_id=member_id,
                        data_key=None,
                        created_at=datetime.now(UTC),
                        destroyed_at=datetime.now(UTC),
                    )
                )
        self._remember(member_id, None)


class PersonalDataCipher:
    def __init__(self, keys: DataKeyStore) -> None:
        self.keys = keys

    def encrypt(self, member_id: str, personal: dict[str, Any]) -> dict[str, str]:
        key = self.keys.key_for_encryption(member_id)
        nonce = os.urandom(12)
        plaintext = json.dumps(personal, sort_keys=True, separators=(",", ":")).encode()
        # The member id is bound as associated data: a ciphertext cannot be moved to
        # another member's event and still decrypt.
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, member_id.encode())
        return {"format": TOKEN_FORMAT, "data": base64.b64encode(nonce + ciphertext).decode()}

    def decrypt(self, member_id: str, token: Any) -> dict[str, Any] | None:
        if not isinstance(token, dict) or token.get("format") != TOKEN_FORMAT:
            return None
        key = self.keys.key_for_decryption(member_id)
        if key is None:
            return None
        try:
            raw = base64.b64decode(token["data"], validate=True)
            plaintext = AESGCM(key).decrypt(raw[:12], raw[12:], member_id.encode())
            return dict(json.loads(plaintext))
        except (InvalidTag, ValueError, TypeError) as error:
            # Authenticated encryption: any change to the stored bytes (or a token moved
            # from another member's event) fails here. Reported, never a crash: the rest
            # of the event, and the aggregate, stay usable.
            raise TamperedError(member_id) from error


class TamperedError(Exception):
    """A personal part whose ciphertext does not authenticate under its member's key."""

    def __init__(self, member_id: str) -> None:
        super().__init__(f"personal data of member {member_id} does not authenticate")
        self.member_id = member_id


def refuse_unstorable_event(state: dict[str, Any]) -> None:
    """The last check before an event is recorded: any text or moment a read model could
    not hold is refused (nothing of the command is saved) — whichever path built the event.

    A field inside `personal` is named as the client knows it (`name`, not `personal.name`).
    Snapshots are not checked: they only repeat what recorded events said.
    """
    try:
        refuse_unstorable(state)
    except ValidationError as error:
        field = error.field
        if field and field.startswith(f"{PERSONAL}."):
            field = field[len(PERSONAL) + 1:]
            raise ValidationError(f"{field} {error.message.split(' ', 1)[1]}", field) from None
        raise


class PersonalDataMapper(Mapper[Any]):
    """Encrypts the `personal` attribute of events and snapshots, nothing else.

    The key is the member's whose data it is: the event's (or snapshot's) `member_id` when
    it has one (a shipment's address belongs to its member), else the aggregate's own id.
    """

    personal_data: PersonalDataCipher

    def prefetch_keys(self, member_ids: Iterable[str]) -> None:
        """Fetch the data keys decoding the events of these members needs, in one query."""
        self.personal_data.keys.prefetch(member_ids)

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = dict(vars(domain_event))
        if not isinstance(domain_event, Snapshot):
            refuse_unstorable_event(state)
        if isinstance(domain_event, Snapshot):
            inner = dict(state["state"])
            if inner.get(PERSONAL) is not None:
                owner = str(inner.get("member_id") or state["originator_id"])
                inner[PERSONAL] = self.personal_data.encrypt(owner, inner[PERSONAL])
                state["state"] = inner
        elif state.get(PERSONAL) is not None:
            owner = str(state.get("member_id") or state["originator_id"])
            state[PERSONAL] = self.personal_data.encrypt(owner, state[PERSONAL])
        else:
            return super().to_stored_event(domain_event)
        protected = object.__new__(type(domain_event))
        object.__setattr__(protected, "__dict__", state)
        return super().to_stored_event(protected)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        domain_event = super().to_domain_event(stored_event)
        state = vars(domain_event)
        if isinstance(domain_event, Snapshot):
            inner = state["state"]
            if inner.get(PERSONAL) is not None:
                owner = str(inner.get("member_id") or stored_event.originator_id)
                inner[PERSONAL], _ = self._decrypt(owner, inner[PERSONAL], stored_event)
        elif state.get(PERSONAL) is not None:
            owner = str(state.get("member_id") or stored_event.originator_id)
            state[PERSONAL], lost = self._decrypt(owner, state[PERSONAL], stored_event)
            if lost:
                # Say why, so that an auditor can tell an erased part from a tampered one
                # and from an event that never had one.
                state[LOST_MARK] = lost
        return domain_event

    def _decrypt(
        self, owner: str, token: Any, stored_event: StoredEvent
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The personal part, or None and why it could not be read."""
        try:
            personal = self.personal_data.decrypt(owner, token)
        except TamperedError:
            log.error("personal data of event %s v%s (member %s) does not authenticate: "
                      "the stored event was changed", stored_event.originator_id,
                      stored_event.originator_version, owner)
            return None, TAMPERED
        return personal, (ERASED if personal is None else None)


def lost_personal_part(event: Any) -> str | None:
    """Why an event's personal part could not be read (ERASED or TAMPERED), or None."""
    lost = vars(event).get(LOST_MARK)
    return str(lost) if lost else None
