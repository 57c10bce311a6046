"""Rate limits on /graphql with the `limits` library: per client address for anonymous
calls, per token subject for signed-in ones.

The counters live in memory (one server) or in Redis (`PATRON_RATE_LIMIT_STORAGE=
redis://host:6379`) so several servers share them. A refused call gets 429 with
Retry-After and a GraphQL error with code RATE_LIMITED, before its body is read.

Behind a reverse proxy the client address is the proxy's unless uvicorn is told to trust
it (`--forwarded-allow-ips`), which rewrites the ASGI client from X-Forwarded-For.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Principal
from api.http_errors import error_response
from domain.metadata import Role

log = logging.getLogger("patron.http")


@dataclass(frozen=True)
class RatePolicy:
    anonymous: tuple[RateLimitItem, ...]
    signed_in: tuple[RateLimitItem, ...]
    storage_uri: str

    @classmethod
    def parse(cls, anonymous: str, signed_in: str, storage_uri: str) -> RatePolicy:
        """Limits such as "300/minute" or "10/second;300/minute"; empty means no limit.
        Raises ValueError on a malformed limit or storage."""
        return cls(_items(anonymous), _items(signed_in), storage_uri.strip() or "memory://")

    @property
    def enabled(self) -> bool:
        return bool(self.anonymous or self.signed_in)


def _items(text: str) -> tuple[RateLimitItem, ...]:
    text = text.strip()
    return tuple(parse_many(text)) if text else ()


def async_storage(uri: str) -> Storage:
    """The asyncio variant of a `limits` storage URI (memory://, redis://…)."""
    scheme = uri if uri.startswith("async+") else f"async+{uri}"
    if scheme.startswith(("async+redis", "async+rediss")):
        # redis-py is the client we install; `limits` defaults to coredis.
        return storage_from_string(scheme, implementation="redispy")
    return storage_from_string(scheme)


class RateLimit:
    """ASGI middleware; needs the principal the request gate put in scope["state"]."""

    def __init__(self, app: ASGIApp, policy: RatePolicy) -> None:
        self.app = app
        self.policy = policy
        self.limiter = MovingWindowRateLimiter(async_storage(policy.storage_uri))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.enabled:
            await self.app(scope, receive, send)
            return
        state = scope.get("state", {})
        principal: Principal | None = state.get("principal")
        if principal is None or principal.role is Role.ANONYMOUS:
            client = scope.get("client")
            key, items = ("address", client[0] if client else "unknown"), self.policy.anonymous
        else:
            key, items = ("subject", principal.subject), self.policy.signed_in
        for item in items:
            if not await self.limiter.hit(item, *key):
                stats = await self.limiter.get_window_stats(item, *key)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                log.info("rate limited %s (%s) on %s", key[0],
                         "anonymous" if key[0] == "address" else key[1], item)
                response = error_response(
                    429, f"too many requests: at most {item} for this client; retry after "
                    f"{retry_after} s", "RATE_LIMITED", request_id=state.get("request_id"),
                    headers={"Retry-After": str(retry_after)}, retryAfter=retry_after,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
