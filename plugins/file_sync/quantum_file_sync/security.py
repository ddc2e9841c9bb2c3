"""Bearer-token authentication, the browser Origin policy and CORS.

Tokens come inline (``auth.tokens``) or from ``auth.token_file`` (one per line; blank lines and
``#`` comments ignored) and are compared in constant time against every configured token.

Origins: without ``allowed_origins`` only same-origin browsers (the Origin's host:port equals
the Host header) and clients that send no Origin (curl, the sync client) are accepted;
``["*"]`` accepts any. A request whose Origin is refused gets 403 — for the API as for ``/ws``
— which also shields state-changing requests from cross-site forms (browsers always send Origin
on cross-origin POST/PUT/DELETE). Accepted origins get ``Access-Control-Allow-Origin`` echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from quantum_file_sync.errors import error_response
from quantum_file_sync.options import AuthSettings

ALLOWED_METHODS = "GET, HEAD, PUT, DELETE, POST, PATCH, OPTIONS"
ALLOWED_HEADERS = (
    "Authorization, Content-Type, If-Match, If-None-Match, If-Range, Range, X-Quantum-Client, "
    # resumable uploads (/api/uploads): the IETF draft and tus
    "Upload-Complete, Upload-Offset, Upload-Length, Upload-Draft-Interop-Version, Repr-Digest, "
    "Tus-Resumable, Upload-Metadata, Upload-Checksum"
)
EXPOSED_HEADERS = (
    "ETag, Content-Range, Accept-Ranges, Content-Length, WWW-Authenticate, Location, "
    "Upload-Complete, Upload-Offset, Upload-Length, Upload-Limit, Upload-Expires, "
    "Upload-Draft-Interop-Version, Upload-Metadata, Tus-Resumable, Tus-Version, Tus-Extension, "
    "Tus-Max-Size, Tus-Checksum-Algorithm"
)
PREFLIGHT_MAX_AGE = "600"
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class TokenAuth:
    """A set of accepted bearer tokens."""

    def __init__(self, tokens: Iterable[str]) -> None:
        digests = [hashlib.sha256(token.encode()).digest() for token in tokens if token]
        if not digests:
            raise ValueError("auth: no token configured (tokens is empty, token_file has none)")
        self._digests = tuple(digests)

    @classmethod
    def from_settings(cls, settings: AuthSettings | None) -> TokenAuth | None:
        """``None`` when auth is off. Reads ``token_file`` (blocking)."""
        if settings is None:
            return None
        tokens = list(settings.tokens)
        if settings.token_file is not None:
            tokens.extend(read_token_file(settings.token_file))
        return cls(tokens)

    def check(self, token: str | None) -> bool:
        """Constant time in the token's content: every configured token is compared."""
        if token is None:
            return False
        candidate = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def read_token_file(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def header_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer T``, else ``None``."""
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_token(request: web.Request) -> str | None:
    """``Authorization: Bearer T`` or, for links a browser follows, ``?token=T``."""
    return header_token(request) or request.query.get("token")


def unauthorized(message: str = "a valid bearer token is required") -> web.Response:
    return error_response(
        401, "unauthorized", message, {hdrs.WWW_AUTHENTICATE: 'Bearer realm="quantum"'}
    )


def forbidden_origin() -> web.Response:
    return error_response(403, "forbidden_origin", "this Origin is not allowed")


def _host_port(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and netloc.endswith(f":{default}"):
        return netloc[: -len(f":{default}")]
    return netloc


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased without a default port; ``None`` if not an origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    scheme = parts.scheme.lower()
    return f"{scheme}://{_host_port(parts.netloc, scheme)}"


class OriginPolicy:
    def __init__(self, allowed: Iterable[str] | None) -> None:
        self.any = False
        self.listed: frozenset[str] | None = None
        if allowed is not None:
            entries = list(allowed)
            self.any = "*" in entries
            self.listed = frozenset(
                n for n in (normalise_origin(e) for e in entries if e != "*") if n is not None
            )

    def allows(self, request: web.Request) -> bool:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True  # not a browser's cross-origin request
        if self.any:
            return True
        normalised = normalise_origin(origin)
        if normalised is None:
            return False
        if self.listed is not None and normalised in self.listed:
            return True
        return self._same_origin(normalised, request)

    @staticmethod
    def _same_origin(origin: str, request: web.Request) -> bool:
        host = request.headers.get(hdrs.HOST)
        if not host:
            return False
        scheme, _, netloc = origin.partition("://")
        return netloc == _host_port(host, scheme)

    def decorate(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers for an accepted Origin (before ``response`` is prepared)."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or response.prepared:
            return
        response.headers.add(hdrs.VARY, hdrs.ORIGIN)
        if self.allows(request):
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS

    def preflight(self, request: web.Request) -> web.Response:
        """Answer ``OPTIONS``: a CORS preflight when the request is one, else just ``Allow``."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
            return web.Response(status=204, headers={hdrs.ALLOW: ALLOWED_METHODS})
        if not self.allows(request):
            return forbidden_origin()
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOWED_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: PREFLIGHT_MAX_AGE,
                hdrs.VARY: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            },
        )
