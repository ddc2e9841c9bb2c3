"""``static_response``: answer with a fixed status, headers and body (Caddy's field names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict

from quantum.handler import Handler, HandlerSpec, Next
from quantum.handlers.placeholders import Template
from quantum.handlers.responses import BareResponse, implicit_content_type, response_class

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "status_code": {
            "description": "HTTP status (default 200); a string may hold placeholders.",
            "oneOf": [
                {"type": "integer", "minimum": 100, "maximum": 999},
                {"type": "string", "minLength": 1},
            ],
        },
        "headers": {
            "type": "object",
            "description": "Header fields to set: name -> list of values (placeholders allowed).",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "body": {
            "type": "string",
            "description": "Response body; placeholders such as {http.request.uri.path} are "
            "replaced, unknown ones are kept as written.",
        },
        "close": {
            "type": "boolean",
            "description": "Close the connection after responding.",
            "default": False,
        },
        "abort": {
            "type": "boolean",
            "description": "Close the connection at once, without responding.",
            "default": False,
        },
    },
}


ABORTED_STATUS = 444


class StaticResponse(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        self._status = Template(str(options.get("status_code", 200)))
        self._headers = [
            (Template(name), [Template(v) for v in values])
            for name, values in options.get("headers", {}).items()
        ]
        self._body = Template(options.get("body", ""))
        self._close = bool(options.get("close", False))
        self._abort = bool(options.get("abort", False))
        self._static = self._precompute()

    def validate(self) -> None:
        if self._status.constant is not None:
            _status_code(self._status.constant)

    def _precompute(self) -> tuple[type[web.Response], int, CIMultiDict[str], bytes] | None:
        """Status, headers and body when nothing depends on the request."""
        if self._status.constant is None or self._body.constant is None:
            return None
        if any(
            name.constant is None or any(v.constant is None for v in values)
            for name, values in self._headers
        ):
            return None
        try:
            status = _status_code(self._status.constant)
        except ValueError:
            return None
        body = self._body.constant
        headers = self._header_map(None, body)
        return response_class(headers), status, headers, body.encode()

    def _header_map(self, request: web.Request | None, body: str) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, values in self._headers:
            field = name.constant if request is None else name.render(request)
            assert field is not None
            headers.popall(field, None)
            for value in values:
                headers.add(field, value.constant if request is None else value.render(request))  # type: ignore[arg-type]
        if body and hdrs.CONTENT_TYPE not in headers:
            headers[hdrs.CONTENT_TYPE] = implicit_content_type(body)
        if self._close:
            headers[hdrs.CONNECTION] = "close"
        return headers

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        if self._abort:
            if request.transport is not None:
                request.transport.abort()
            # Never written (the connection is gone); 444 is nginx's "closed without response"
            # and is what the access log shows.
            return BareResponse(status=ABORTED_STATUS)
        if self._static is not None:
            kind, status, headers, body = self._static
            response = kind(status=status, body=body, headers=headers)
        else:
            text = self._body.render_known(request)
            try:
                status = _status_code(self._status.render(request))
            except ValueError as exc:
                raise web.HTTPInternalServerError(text=str(exc)) from exc
            response = BareResponse(
                status=status, body=text.encode(), headers=self._header_map(request, text)
            )
        if self._close:
            response.force_close()
        return response


def _status_code(text: str) -> int:
    try:
        status = int(text)
    except ValueError:
        raise ValueError(f"status_code {text!r} is not an integer") from None
    if not 100 <= status <= 999:
        raise ValueError(f"status_code {status} is out of range")
    return status


SPEC = HandlerSpec(
    name="static_response",
    schema=SCHEMA,
    factory=StaticResponse,
    description="Responds with a fixed status code, headers and body.",
)
