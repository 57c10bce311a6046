"""Reading and checking webhook bodies: bounded, shallow, typed, never a server error.

Carrier and payment-provider webhooks share this edge. A body is read with its size
limit enforced while reading (the declared Content-Length first, then a running count of
what actually arrives), so an oversized body is refused without ever being held whole.
JSON is checked for nesting depth in one linear pass before it is parsed, so 5,000 `[`
are a 400 rather than a RecursionError. Field helpers apply the input-hygiene rules every
input follows: no control characters except newline and tab, bounded lengths, and business
times within the years 1900-2200 with a real-world UTC offset.

Status codes: 400 for a body that is not what the endpoint reads (not JSON, not an object,
a missing field, a field of the wrong JSON type), 413 for a body over the limit, 422 for a
well-formed field whose value is not acceptable (out of range, unknown value).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NoReturn

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from domain.errors import ValidationError
from domain.validation import business_time

MAX_BODY = 64 * 1024
MAX_DEPTH = 20
MAX_TEXT = 500
_ALLOWED_CONTROL = {"\n", "\t"}


class WebhookError(Exception):
    """A refusal with its HTTP status, code, message and (where one is to blame) field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return JSONResponse({"error": error}, status_code=self.status)


def malformed(message: str, field: str | None = None) -> NoReturn:
    raise WebhookError(400, "MALFORMED", message, field)


def invalid(message: str, field: str) -> NoReturn:
    raise WebhookError(422, "VALIDATION", message, field)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, or a 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            malformed("Content-Length must be a whole number of bytes")
        if int(declared) > limit:
            raise WebhookError(413, "TOO_LARGE", f"the body must be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebhookError(413, "TOO_LARGE", f"the body must be at most {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        malformed("the client disconnected before sending the whole body")
    return b"".join(chunks)


def _nesting_depth_within(text: str, limit: int) -> bool:
    """Whether no array or object nests deeper than `limit`: one pass, strings skipped."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _no_constants(name: str) -> NoReturn:
    malformed(f"{name} is not JSON")


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        malformed("the body must be UTF-8 JSON")
    if not _nesting_depth_within(text, MAX_DEPTH):
        malformed(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        malformed("the body is not valid JSON")
    if not isinstance(payload, dict):
        malformed("the body must be a JSON object")
    return payload


def text(payload: dict[str, Any], field: str, *, required: bool,
         max_length: int = MAX_TEXT) -> str | None:
    """A string field: present if required, no control characters, at most `max_length`."""
    value = payload.get(field)
    if value is None or value == "":
        if required:
            malformed(f"missing field: {field}", field)
        return None
    if not isinstance(value, str):
        malformed(f"{field} must be a string", field)
    if len(value) > max_length:
        invalid(f"{field} must be at most {max_length} characters", field)
    if any((ord(c) < 32 and c not in _ALLOWED_CONTROL) or ord(c) == 127 for c in value):
        invalid(f"{field} must not contain control characters", field)
    return value


def whole_number(payload: dict[str, Any], field: str, *, minimum: int,
                 maximum: int) -> int:
    """A required integer field within [minimum, maximum]."""
    value = payload.get(field)
    if value is None:
        malformed(f"missing field: {field}", field)
    if not isinstance(value, int) or isinstance(value, bool):
        malformed(f"{field} must be a whole number", field)
    if not minimum <= value <= maximum:
        invalid(f"{field} must be from {minimum} to {maximum}", field)
    return value


def moment(payload: dict[str, Any], field: str, *, required: bool) -> datetime | None:
    """An ISO-8601 time with a zone: 400 if it is not one, 422 if it is not a sane one."""
    value = payload.get(field)
    if value is None and not required:
        return None
    if value is None:
        malformed(f"missing field: {field}", field)
    if not isinstance(value, str) or len(value) > 64:
        malformed(f"{field} must be an ISO-8601 time with a zone", field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        malformed(f"{field} must be an ISO-8601 time with a zone", field)
    if parsed.tzinfo is None:
        malformed(f"{field} must include a time zone", field)
    try:
        return business_time(parsed, field)
    except ValidationError as error:
        invalid(error.message, field)
