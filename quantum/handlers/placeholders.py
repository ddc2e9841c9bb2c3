"""Caddy placeholders (``{http.request.uri.path}``, ``{http.request.header.X}``, ...).

A string is compiled once into literal parts and resolvers, so rendering a template without
placeholders costs nothing. Like Caddy's replacer, ``\\{`` and ``\\}`` are literal braces, an
unknown placeholder is kept as written by :meth:`Template.render_known` (used for bodies) and
replaced with ``""`` by :meth:`Template.render` (used for header values and status codes).
"""

from __future__ import annotations

import os
import platform
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from posixpath import splitext

from aiohttp import web

from quantum.handler import HANDLER_ERROR_KEY, HandlerError
from quantum.matchers import REGEXP_CAPTURES, split_host

Resolver = Callable[[web.Request], str | None]

AUTH_USER_ID: web.RequestKey[str] = web.RequestKey("quantum.auth.user.id", str)
"""Set by the ``authentication`` handler: ``{http.auth.user.id}``."""

_REQUEST_UUID: web.RequestKey[str] = web.RequestKey("quantum.request.uuid", str)


def _request_uuid(request: web.Request) -> str:
    value = request.get(_REQUEST_UUID)
    if value is None:
        value = request[_REQUEST_UUID] = str(uuid.uuid4())
    return value


def _remote(request: web.Request) -> tuple[str, str]:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), str(peer[1])
    return request.remote or "", ""


def _port(request: web.Request) -> str:
    host = request.host
    if host.startswith("["):
        _, _, rest = host.partition("]")
        return rest[1:] if rest.startswith(":") else ""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return port
    return "443" if request.scheme == "https" else "80"


def _error_part(part: Callable[[HandlerError], str]) -> Resolver:
    """A ``{http.error.*}`` resolver: empty outside the server's ``errors`` routes."""

    def resolve(request: web.Request) -> str:
        error = request.get(HANDLER_ERROR_KEY)
        return "" if error is None else part(error)

    return resolve


def _status_text(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _path_split(request: web.Request) -> tuple[str, str]:
    path = request.path
    cut = path.rfind("/") + 1
    return path[:cut], path[cut:]


_FIXED: dict[str, Resolver] = {
    "http.request.method": lambda r: r.method,
    "http.request.orig_method": lambda r: r.method,
    "http.request.host": lambda r: split_host(r.host),
    "http.request.hostport": lambda r: r.host,
    "http.request.port": _port,
    "http.request.scheme": lambda r: r.scheme,
    "http.request.proto": lambda r: f"HTTP/{r.version.major}.{r.version.minor}",
    "http.request.uri": lambda r: r.raw_path,
    "http.request.orig_uri": lambda r: r.raw_path,
    "http.request.uri.path": lambda r: r.path,
    "http.request.orig_uri.path": lambda r: r.path,
    "http.request.uri.path.dir": lambda r: _path_split(r)[0],
    "http.request.orig_uri.path.dir": lambda r: _path_split(r)[0],
    "http.request.uri.path.file": lambda r: _path_split(r)[1],
    "http.request.orig_uri.path.file": lambda r: _path_split(r)[1],
    "http.request.uri.path.file.base": lambda r: splitext(_path_split(r)[1])[0],
    "http.request.uri.path.file.ext": lambda r: splitext(_path_split(r)[1])[1],
    "http.request.uri.query": lambda r: r.rel_url.raw_query_string,
    "http.request.orig_uri.query": lambda r: r.rel_url.raw_query_string,
    "http.request.remote": lambda r: ":".join(_remote(r)),
    "http.request.remote.host": lambda r: _remote(r)[0],
    "http.request.remote.port": lambda r: _remote(r)[1],
    "http.request.uuid": _request_uuid,
    "http.auth.user.id": lambda r: r.get(AUTH_USER_ID, ""),
    "http.error": _error_part(lambda e: str(e)),
    "http.error.status_code": _error_part(lambda e: str(e.status)),
    "http.error.status_text": _error_part(lambda e: _status_text(e.status)),
    "http.error.message": _error_part(lambda e: e.message),
    "system.hostname": lambda r: socket.gethostname(),
    "system.slash": lambda r: "/",
    "system.os": lambda r: platform.system().lower(),
    "system.arch": lambda r: platform.machine(),
    "time.now": lambda r: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "time.now.http": lambda r: formatdate(usegmt=True),
    "time.now.unix": lambda r: str(int(time.time())),
    "time.now.unix_ms": lambda r: str(int(time.time() * 1000)),
    "time.now.year": lambda r: time.strftime("%Y"),
}


def _resolver(key: str) -> Resolver | None:
    """The resolver of placeholder ``key``, or ``None`` when Quantum does not know it."""
    fixed = _FIXED.get(key)
    if fixed is not None:
        return fixed
    head, _, rest = key.rpartition(".")
    if key.startswith("http.request.header.") and len(key) > len("http.request.header."):
        name = key[len("http.request.header.") :]
        return lambda r: ",".join(r.headers.getall(name, ()))
    if key.startswith("http.request.cookie.") and len(key) > len("http.request.cookie."):
        cookie = key[len("http.request.cookie.") :]
        return lambda r: r.cookies.get(cookie, "")
    if key.startswith("http.request.uri.query.") and len(key) > len("http.request.uri.query."):
        param = key[len("http.request.uri.query.") :]
        return lambda r: r.query.get(param, "")
    if head == "http.request.uri.path" and rest.isdigit():
        index = int(rest)
        return lambda r: _segment(r.path, index)
    if key.startswith("http.regexp.") and len(key) > len("http.regexp."):
        capture = key[len("http.regexp.") :]
        return lambda r: r.get(REGEXP_CAPTURES, {}).get(capture)
    if key.startswith("env.") and len(key) > len("env."):
        variable = key[len("env.") :]
        return lambda r: os.environ.get(variable, "")
    return None


def _segment(path: str, index: int) -> str:
    segments = path.strip("/").split("/")
    return segments[index] if index < len(segments) else ""


class Template:
    """A string with placeholders, compiled once."""

    __slots__ = ("_parts", "constant", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts = _parse(source)
        self.constant: str | None = (
            "".join(p for p in self._parts if isinstance(p, str))
            if all(isinstance(p, str) for p in self._parts)
            else None
        )

    def render(self, request: web.Request) -> str:
        """Unknown placeholders become ``""`` (Caddy's ``ReplaceAll``)."""
        if self.constant is not None:
            return self.constant
        return "".join(p if isinstance(p, str) else (p[1](request) or "") for p in self._parts)

    def unknown(self) -> list[str]:
        """The placeholders (as written) Quantum cannot resolve."""
        return [p[0] for p in self._parts if not isinstance(p, str) and p[1] is _unknown]

    def render_checked(
        self, request: web.Request, allowed: Callable[[str, str], bool]
    ) -> str | None:
        """Like :meth:`render`, or None when ``allowed(placeholder, value)`` refuses a value."""
        if self.constant is not None:
            return self.constant
        out: list[str] = []
        for written, value in self._resolved(request):
            if written is not None and not allowed(written, value or ""):
                return None
            out.append(value or "")
        return "".join(out)

    def render_known(self, request: web.Request) -> str:
        """Unknown placeholders stay as written (Caddy's ``ReplaceKnown``)."""
        if self.constant is not None:
            return self.constant
        return "".join(
            value if value is not None else (written or "")
            for written, value in self._resolved(request)
        )

    def _resolved(self, request: web.Request) -> Iterator[tuple[str | None, str | None]]:
        """``(placeholder as written, its value or None)`` per part; ``(None, text)`` for text."""
        for part in self._parts:
            if isinstance(part, str):
                yield None, part
            else:
                yield part[0], part[1](request)


def _unknown(_request: web.Request) -> None:
    return None


def _parse(source: str) -> list[str | tuple[str, Resolver]]:
    parts: list[str | tuple[str, Resolver]] = []
    literal: list[str] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "\\" and source[i + 1 : i + 2] in ("{", "}"):
            literal.append(source[i + 1])
            i += 2
            continue
        if char == "{":
            end = source.find("}", i + 1)
            if end < 0:
                literal.append(source[i:])
                break
            if literal:
                parts.append("".join(literal))
                literal = []
            key = source[i + 1 : end]
            parts.append((source[i : end + 1], _resolver(key) or _unknown))
            i = end + 1
            continue
        literal.append(char)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts
