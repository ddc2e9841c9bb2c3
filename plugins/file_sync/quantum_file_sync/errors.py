"""API errors: one exception type, answered as JSON ``{"error": MESSAGE, "code": CODE}``.

Codes are stable identifiers clients may switch on (documented in docs/api.md); messages are for
humans and may change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web


class ApiError(Exception):
    """Raised anywhere below the API layer; ``api.py`` turns it into :func:`error_response`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details or {})
        """Fields added to the JSON body next to ``error`` and ``code`` (e.g. ``missing``)."""

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.headers, self.details)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> web.Response:
    body = {**(details or {}), "error": message, "code": code}
    return web.json_response(body, status=status, headers=headers)


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


def precondition_failed(message: str) -> ApiError:
    return ApiError(412, "precondition_failed", message)


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)
