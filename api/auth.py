"""Bearer tokens and the rules of who may read or change what.

Tokens are HS256 JWTs signed with PATRON_SECRET_KEY, carrying the subject (a member id for
members, a staff id otherwise), the role and optional scopes (`pii` lets an auditor see
personal data unmasked).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt

from domain.errors import DomainError, ErrorCode, ForbiddenError
from domain.metadata import Role

ISSUER = "patron"
ALGORITHM = "HS256"
TOKEN_ROLES = (Role.MEMBER, Role.AGENT, Role.ADMIN, Role.AUDITOR)
PII_SCOPE = "pii"


class AuthenticationError(DomainError):
    code = ErrorCode.UNAUTHENTICATED


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_staff(self) -> bool:
        return self.role.is_staff

    @property
    def member_id(self) -> str | None:
        return self.subject if self.role is Role.MEMBER else None

    def can_read_member(self, member_id: str) -> bool:
        return self.role in (Role.AGENT, Role.ADMIN, Role.AUDITOR) or self.member_id == member_id

    @property
    def sees_personal_data(self) -> bool:
        """Personal data of any member: agents and admins, auditors only with the `pii`
        scope. Searching, filtering or sorting members by a personal field needs this too,
        or the count of matches would reveal what the masked fields hide."""
        if self.role is Role.AUDITOR:
            return PII_SCOPE in self.scopes
        return self.is_staff

    def can_see_personal_data(self, member_id: str) -> bool:
        return self.sees_personal_data or self.member_id == member_id

    def require_role(self, *roles: Role) -> None:
        if self.role is Role.ANONYMOUS:
            raise AuthenticationError("sign in first: this operation needs a bearer token")
        if self.role not in roles:
            names = ", ".join(r.value for r in roles)
            raise ForbiddenError(f"this operation needs one of the roles: {names}")

    def require_member_access(self, member_id: str) -> None:
        """Members act only on themselves; staff act on anyone."""
        if self.role is Role.ANONYMOUS:
            raise AuthenticationError("sign in first: this operation needs a bearer token")
        if self.is_staff or self.member_id == member_id:
            return
        raise ForbiddenError("you may only act on your own member account")


ANONYMOUS = Principal(subject="anonymous", role=Role.ANONYMOUS)

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


MAX_TOKEN_LIFETIME = timedelta(days=366)


def parse_duration(text: str) -> timedelta:
    """A token lifetime such as 30m, 12h or 7d: positive and at most a year."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30m, 1h, 7d")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = MAX_TOKEN_LIFETIME * 2
    if duration <= timedelta(0) or duration > MAX_TOKEN_LIFETIME:
        raise ValueError(f"duration {text!r} must be positive and at most 366d")
    return duration


def mint_token(
    secret: str,
    role: Role,
    subject: str | None = None,
    expires_in: timedelta = timedelta(hours=1),
    scopes: tuple[str, ...] = (),
) -> str:
    if role not in TOKEN_ROLES:
        raise ValueError(f"role must be one of {', '.join(r.value for r in TOKEN_ROLES)}")
    if role is Role.MEMBER:
        if not subject:
            raise ValueError("a member token needs the member id")
        try:
            uuid.UUID(subject)
        except ValueError:
            raise ValueError(f"member id {subject!r} is not a UUID") from None
    if expires_in > MAX_TOKEN_LIFETIME:
        raise ValueError("tokens live at most 366 days")
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "sub": subject or f"{role.value}-{uuid.uuid4().hex[:8]}",
        "role": role.value,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def principal_from_authorization(header: str | None, secret: str) -> Principal:
    if not header:
        return ANONYMOUS
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(
            token.strip(),
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "iss"]},
        )
        role = Role(claims["role"])
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("token has expired") from None
    except (jwt.PyJWTError, KeyError, ValueError):
        raise AuthenticationError("token is invalid") from None
    if role not in TOKEN_ROLES:
        raise AuthenticationError("token carries an unknown role")
    subject = str(claims["sub"])
    if role is Role.MEMBER:
        # Member ids are UUIDs everywhere (events, read models, PostgreSQL uuid columns): a
        # correctly signed token with another subject was minted wrongly and is refused here,
        # not discovered later by a query as an internal error.
        try:
            canonical = str(uuid.UUID(subject)) == subject
        except ValueError:
            canonical = False
        if not canonical:
            raise AuthenticationError("token is invalid: its subject is not a member id")
    scopes = frozenset(str(claims.get("scope", "")).split())
    return Principal(subject=subject, role=role, scopes=scopes)
