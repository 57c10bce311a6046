"""Transport-level refusals, answered in the shape GraphQL clients already read.

A client that sends a body the server cannot use (too large, not UTF-8, not a JSON object,
nested beyond reason) gets a 4xx with `{"errors": [{"message", "extensions": {"code"}}]}`,
never a 500 or a reset connection: its mistake is not our bug.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse

log = logging.getLogger("patron.http")

BOM = b"\xef\xbb\xbf"


class BadRequestError(Exception):
    """A request the server refuses before GraphQL sees it."""

    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def error_response(
    status: int,
    message: str,
    code: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A GraphQL-shaped error body with an HTTP status."""
    extra = {"requestId": request_id} if request_id else {}
    body = {"errors": [{"message": message, "extensions": {"code": code, **extensions, **extra}}]}
    all_headers = dict(headers or {})
    if request_id:
        all_headers["X-Request-Id"] = request_id
    return JSONResponse(body, status_code=status, headers=all_headers)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A GraphQL POST body: UTF-8 JSON (RFC 8259: no byte-order mark) holding an object.

    json.loads recurses per nesting level, so 100,000 x `[` raises RecursionError; that
    is the client's malformed body, not an internal error.
    """
    if body.startswith(BOM):
        raise BadRequestError("the body starts with a byte-order mark; send UTF-8 JSON without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequestError(f"the body is not valid UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadRequestError("the body is nested too deeply to be a GraphQL request") from None
    except ValueError as error:
        raise BadRequestError(f"the body is not valid JSON: {error.msg} at {error.pos}") from None
    if not isinstance(value, dict):
        kind = "an array (batching is not enabled)" if isinstance(value, list) else (
            "null" if value is None else f"a JSON {type(value).__name__}")
        raise BadRequestError(
            f"the body must be a JSON object with a query, not {kind}")
    return value
