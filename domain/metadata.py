"""Who did what, through which channel, why, and as part of which request.

Auditors need to answer these questions for every event, so each event carries an
`EventMetadata` as its `meta` attribute. The API builds it from the request; the domain only
checks it (for example that staff gave a reason) and never invents it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from domain.errors import ReasonRequiredError, ValidationError


class Role(StrEnum):
    MEMBER = "member"
    AGENT = "agent"
    ADMIN = "admin"
    AUDITOR = "auditor"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"

    @property
    def is_staff(self) -> bool:
        return self in (Role.AGENT, Role.ADMIN)


class Channel(StrEnum):
    WEB = "web"
    APP = "app"
    MINI_PROGRAM = "mini_program"
    STORE = "store"
    ADMIN = "admin"
    SYSTEM = "system"


MAX_REASON_LENGTH = 500


@dataclass(frozen=True)
class EventMetadata:
    actor_id: str
    actor_role: Role
    channel: Channel
    correlation_id: str
    causation_id: str | None
    request_id: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.reason is not None:
            reason = self.reason.strip()
            if len(reason) > MAX_REASON_LENGTH:
                raise ValidationError(
                    f"reason must be at most {MAX_REASON_LENGTH} characters", "meta.reason"
                )
            object.__setattr__(self, "reason", reason or None)

    def require_reason(self) -> None:
        """Admin actions are only accepted with a reason an auditor can read later."""
        if not self.reason:
            raise ReasonRequiredError()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["actor_role"] = self.actor_role.value
        data["channel"] = self.channel.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventMetadata:
        return cls(
            actor_id=data["actor_id"],
            actor_role=Role(data["actor_role"]),
            channel=Channel(data["channel"]),
            correlation_id=data["correlation_id"],
            causation_id=data.get("causation_id"),
            request_id=data["request_id"],
            reason=data.get("reason"),
        )
