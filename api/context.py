"""Per-request context: who is asking, through which channel, as part of which request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from api.auth import Principal
from api.loaders import Loaders
from api.runtime import Runtime
from api.service import CommandResult
from domain.errors import ValidationError
from domain.metadata import Channel, EventMetadata, Role

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
CLIENT_CHANNELS = (Channel.WEB, Channel.APP, Channel.MINI_PROGRAM, Channel.STORE)


def header_id(request: HTTPConnection, name: str) -> str | None:
    value = request.headers.get(name)
    return value if value and _SAFE_ID.match(value) else None


@dataclass
class RequestContext:
    runtime: Runtime
    request: HTTPConnection
    principal: Principal
    request_id: str
    correlation_id: str
    causation_id: str | None
    channel_header: str | None
    min_position: int
    response_headers: dict[str, str]
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        """This request's DataLoaders (made on first use)."""
        if self._loaders is None:
            self._loaders = Loaders(self.runtime.async_engine)
        return self._loaders

    @property
    def channel(self) -> Channel:
        """The channel the request came through, recorded on every event it causes."""
        if self.principal.role in (Role.ADMIN, Role.AGENT) and self.channel_header is None:
            return Channel.ADMIN
        if self.channel_header is None:
            return Channel.WEB
        try:
            channel = Channel(self.channel_header)
        except ValueError:
            channel = None
        if channel not in CLIENT_CHANNELS and not (
            self.principal.is_staff and channel is Channel.ADMIN
        ):
            allowed = ", ".join(c.value for c in CLIENT_CHANNELS)
            raise ValidationError(f"X-Patron-Channel must be one of: {allowed}")
        assert channel is not None
        return channel

    def metadata(self, reason: str | None = None) -> EventMetadata:
        return EventMetadata(
            actor_id=self.principal.subject,
            actor_role=self.principal.role,
            channel=self.channel,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            request_id=self.request_id,
            reason=reason,
        )

    async def run_command(self, command: Callable[[], CommandResult]) -> CommandResult:
        """Run a synchronous command off the event loop and remember what it wrote."""
        result = await run_in_threadpool(command)
        self.record_write(result.position)
        return result

    def record_write(self, position: int | None, subject: str | None = None) -> None:
        if position is None:
            return
        self.runtime.writes.record(subject or self.principal.subject, position)
        self.min_position = max(self.min_position, position)
        self.response_headers["X-Patron-Position"] = str(self.min_position)

    def required_position(self) -> int:
        return max(self.min_position, self.runtime.writes.last(self.principal.subject))


def new_request_id(request: HTTPConnection) -> str:
    return header_id(request, "x-request-id") or uuid.uuid4().hex


def parse_min_position(request: HTTPConnection) -> int:
    raw = request.headers.get("x-patron-min-position")
    if raw is None:
        return 0
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ValidationError("X-Patron-Min-Position must be a non-negative integer")
    return int(raw)
