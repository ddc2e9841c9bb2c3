"""Parsing what a request carries, with a JSON error for each way it can be wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from quantum_file_sync import errors
from quantum_file_sync.errors import ApiError

CLIENT_HEADER = "X-Quantum-Client"
MAX_CLIENT_ID = 256


def source_client(request: web.Request) -> str | None:
    value = request.headers.get(CLIENT_HEADER)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_CLIENT_ID or not value.isprintable():
        raise errors.bad_request(
            f"{CLIENT_HEADER} must be 1-{MAX_CLIENT_ID} printable characters", "bad_client_id"
        )
    return value


def boolean(query: Mapping[str, str], key: str, *, default: bool) -> bool:
    value = query.get(key)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise errors.bad_request(f"{key} must be true or false")


def integer(
    query: Mapping[str, str], key: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    value = query.get(key)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise errors.bad_request(f"{key} must be a non-negative integer")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        raise errors.bad_request(f"{key} must be between {minimum}{upper}")
    return number


async def json_object(request: web.Request, *, limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object; ``limit`` replaces aiohttp's ``client_max_size``."""
    body = await json_body(request, limit=limit)
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object", "invalid_json")
    return body


async def json_body(request: web.Request, *, limit: int | None = None) -> Any:
    raw = await request.read() if limit is None else await read_body(request, limit)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.bad_request("the body must be JSON", "invalid_json") from None


async def read_body(request: web.Request, limit: int) -> bytes:
    too_large = ApiError(413, "too_large", f"the body is limited to {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def field(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise errors.bad_request(f"{key!r} must be a string")
    return value
