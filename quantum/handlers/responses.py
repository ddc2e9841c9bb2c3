"""Response helpers shared by the built-in handlers: Caddy-compatible shapes of common answers."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from aiohttp import hdrs, web


class BareResponse(web.Response):
    """A response that sends no ``Content-Type`` unless one was set.

    aiohttp labels every non-empty body ``application/octet-stream``; Caddy deliberately sends no
    type for content it cannot name (so browsers do not sniff it into something executable).
    """

    async def _prepare_headers(self) -> None:
        had_type = hdrs.CONTENT_TYPE in self._headers
        await super()._prepare_headers()
        if not had_type:
            self._headers.popall(hdrs.CONTENT_TYPE, None)


def response_class(headers: Mapping[str, str]) -> type[web.Response]:
    """The class for an in-memory response with ``headers``: :class:`BareResponse` is only needed
    when there is no ``Content-Type`` to protect, and the plain class is cheaper to send."""
    return web.Response if hdrs.CONTENT_TYPE in headers else BareResponse


def implicit_content_type(body: str) -> str:
    """Caddy's type for a ``static_response`` body without one: JSON if it looks like JSON."""
    trimmed = body.strip()
    if (trimmed.startswith("{") and trimmed.endswith("}")) or (
        trimmed.startswith("[") and trimmed.endswith("]")
    ):
        return "application/json"
    return "text/plain; charset=utf-8"


def redirect(request: web.Request, location: str, status: int = 308) -> web.Response:
    """Like Caddy's canonical redirects: keeps the query; ``text/html`` for GET/HEAD, a body for
    GET. Leading slashes are collapsed so ``//host/x`` cannot become an off-site redirect."""
    while location.startswith("//"):
        location = location[1:]
    query = request.rel_url.raw_query_string
    if query:
        location += "?" + query
    headers = {hdrs.LOCATION: location}
    body = b""
    if request.method in ("GET", "HEAD"):
        headers[hdrs.CONTENT_TYPE] = "text/html; charset=utf-8"
    if request.method == "GET":
        reason = {301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect"}.get(
            status, "Permanent Redirect"
        )
        body = f'<a href="{html.escape(location)}">{reason}</a>.\n\n'.encode()
    return BareResponse(status=status, body=body, headers=headers)


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get(hdrs.ACCEPT, "")


def error_response(
    request: web.Request,
    status: int,
    message: str,
    code: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error as ``{"error", "code"}`` JSON when the client accepts JSON, plain text otherwise."""
    if wants_json(request):
        body = json.dumps({"error": message, "code": code}).encode()
        content_type = "application/json"
    else:
        body = (message + "\n").encode()
        content_type = "text/plain; charset=utf-8"
    return web.Response(
        status=status, body=body, headers={hdrs.CONTENT_TYPE: content_type, **(headers or {})}
    )
