"""``file_server``: serve static files read-only (Caddy's ``file_server``).

The request path is cleaned (``..`` cannot climb out of ``root``) and joined to ``root``.
Directories are served through an index file (with a canonical redirect to the trailing-slash
URL) or listed when ``browse`` is set. Files get ``ETag``, ``Last-Modified``, ``Accept-Ranges``,
conditional requests (304/412), single and multiple ranges (206/416) and ``HEAD``.

Speed: one ``os.stat`` per request; files up to 64 KiB are answered from a bounded in-memory
cache validated by that stat, larger ones are sent with ``sendfile``. Like Caddy, symlinks inside
``root`` are followed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict

from quantum.handler import Handler, HandlerError, HandlerSpec, Next, ProvisionContext
from quantum.handlers import browse, precompressed
from quantum.handlers.conditional import Decision, Outcome, evaluate
from quantum.handlers.content_types import content_type_for
from quantum.handlers.file_cache import FileCache
from quantum.handlers.placeholders import Template
from quantum.handlers.responses import BareResponse, redirect, response_class
from quantum.handlers.sendfile import SendfileResponse
from quantum.matchers import clean_path, glob_regex

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "root": {
            "type": "string",
            "description": "Directory to serve (relative to the working directory); default '.'.",
        },
        "index_names": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Files served for a directory, first found wins "
            "(default index.html, index.txt).",
        },
        "hide": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": "Files never served or listed: a name (glob) hides that name in any "
            "directory; a path (with '/') hides it and everything under it.",
        },
        "browse": {
            "type": "object",
            "properties": {},
            "additionalProperties": False,
            "description": "List directories without an index file: JSON when the client accepts "
            "application/json, HTML otherwise.",
        },
        "canonical_uris": {
            "type": "boolean",
            "default": True,
            "description": "Redirect (308) directory URLs without a trailing slash to add it.",
        },
        "pass_thru": {
            "type": "boolean",
            "default": False,
            "description": "Continue with the next handler instead of answering 404.",
        },
        "status_code": {
            "oneOf": [
                {"type": "integer", "minimum": 100, "maximum": 999},
                {"type": "string", "pattern": "^[0-9]{3}$"},
            ],
            "description": "Status of successful (otherwise 200) whole-file responses.",
        },
        **precompressed.SCHEMA,
    },
}

DEFAULT_INDEX_NAMES = ("index.html", "index.txt")
_GET_OR_HEAD = frozenset(("GET", "HEAD"))
_MULTIPART_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Representation:
    """What a stat of a file determines: validators and the headers of a 200."""

    size: int
    mtime: int
    etag: str
    content_type: str | None
    headers: CIMultiDict[str]


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
        if not value:
            return out


def describe(filename: str, st: os.stat_result) -> Representation:
    etag = f'"{_base36(st.st_mtime_ns)}{_base36(st.st_size)}"'
    content_type = content_type_for(filename)
    headers: CIMultiDict[str] = CIMultiDict()
    headers[hdrs.ACCEPT_RANGES] = "bytes"
    if content_type is not None:
        headers[hdrs.CONTENT_TYPE] = content_type
    headers[hdrs.ETAG] = etag
    headers[hdrs.LAST_MODIFIED] = formatdate(st.st_mtime, usegmt=True)
    return Representation(st.st_size, int(st.st_mtime), etag, content_type, headers)


def describe_sidecar(
    filename: str, st: os.stat_result, sidecar: os.stat_result, coding: str
) -> Representation:
    """A precompressed sidecar of ``filename``: its bytes, size and ETag, but the original's
    type and modification time (as Caddy serves them)."""
    rep = describe(filename, sidecar)
    headers = rep.headers.copy()
    headers[hdrs.LAST_MODIFIED] = formatdate(st.st_mtime, usegmt=True)
    headers[hdrs.CONTENT_ENCODING] = coding
    headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
    return Representation(rep.size, int(st.st_mtime), rep.etag, rep.content_type, headers)


def compile_hide(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Caddy's ``hide``: a name (no ``/``) is globbed against every path component; a path hides
    itself and what is below it, or is globbed against the whole path."""
    if not patterns:
        return lambda filename: False
    names: list[str] = []
    paths: list[str] = []
    for pattern in patterns:
        if "/" in pattern:
            paths.append(os.path.abspath(pattern) if "*" not in pattern else pattern)
        else:
            names.append(glob_regex(pattern))
    name_regex = re.compile("(?:" + "|".join(names) + r")\Z", re.S) if names else None
    path_globs = [re.compile(glob_regex(p) + r"\Z", re.S) for p in paths]
    prefixes = tuple(p.rstrip("/") + "/" for p in paths)

    def hidden(filename: str) -> bool:
        if name_regex is not None and any(
            name_regex.match(part) for part in filename.split("/") if part
        ):
            return True
        if prefixes and (filename + "/").startswith(prefixes):
            return True
        return any(glob.match(filename) for glob in path_globs)

    return hidden


@dataclass(frozen=True, slots=True)
class Sidecar:
    filename: str
    st: os.stat_result
    representation: Representation


def _safe_in_root(placeholder: str, value: str) -> bool:
    """A value put into ``root`` from the request (a Host header, a query parameter...) must be
    one ordinary path segment, so ``Host: ..`` cannot widen the root to its parent. Environment
    variables are the operator's and may hold whole paths."""
    if placeholder.startswith("{env."):
        return "\x00" not in value
    return value not in ("", ".", "..") and not any(c in value for c in "/\\\x00")


class FileServer(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        root = options.get("root", ".")
        self._root_template: Template | None = None
        if "{" in root:
            template = Template(root)
            if template.unknown():
                raise ValueError(f"root: unknown placeholder {template.unknown()[0]}")
            if template.constant is None:
                self._root_template = template
            root = template.constant or root
        self.root = os.path.abspath(root)
        self._prefix = self.root.rstrip("/")
        self._index_names = tuple(options.get("index_names", DEFAULT_INDEX_NAMES))
        self._hidden = compile_hide(options.get("hide", []))
        self._browse = "browse" in options
        self._canonical = bool(options.get("canonical_uris", True))
        self._pass_thru = bool(options.get("pass_thru", False))
        self._status = int(options.get("status_code", 200))
        self._cache: FileCache[Representation] = FileCache(describe)
        codings = options.get("precompressed")
        self._precompressed = (
            precompressed.Precompressed(codings, options.get("precompressed_order", []))
            if codings
            else None
        )

    async def provision(self, ctx: ProvisionContext) -> None:
        if self._root_template is None and not os.path.isdir(self.root):
            # Like Caddy, not an error: the directory may appear later; until then, 404s.
            ctx.logger.warning("file_server root is not a directory", root=self.root)

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        path = request.path
        if "\x00" in path:
            raise _error(400)
        prefix = self._prefix
        if self._root_template is not None:
            root = self._root_template.render_checked(request, _safe_in_root)
            if root is None:
                return await self._not_found(request, next)
            prefix = os.path.abspath(root).rstrip("/")
        filename = prefix + clean_path(path)
        try:
            st = os.stat(filename)
        except (FileNotFoundError, NotADirectoryError):
            return await self._not_found(request, next)
        except PermissionError:
            raise _error(403) from None
        except OSError:
            raise _error(500) from None
        implicit_index = False
        if stat.S_ISDIR(st.st_mode):
            for index_name in self._index_names:
                candidate = filename.rstrip("/") + "/" + index_name
                if self._hidden(candidate):
                    continue
                try:
                    st = os.stat(candidate)
                except OSError:
                    continue
                filename, implicit_index = candidate, True
                break
        if stat.S_ISDIR(st.st_mode):
            if self._browse and not self._hidden(filename.rstrip("/") or "/"):
                return await self._listing(request, filename)
            return await self._not_found(request, next)
        if self._hidden(filename) or not stat.S_ISREG(st.st_mode):
            return await self._not_found(request, next)  # also FIFOs, devices, sockets
        if implicit_index and self._canonical and not path.endswith("/"):
            return redirect(request, request.rel_url.raw_path + "/")
        if request.method not in _GET_OR_HEAD:
            raise _error(405, {hdrs.ALLOW: "GET, HEAD"})
        return self._file(request, filename, st)

    def _sidecar(self, request: web.Request, filename: str, st: os.stat_result) -> Sidecar | None:
        """The precompressed file to send instead of ``filename``, if the client takes one."""
        assert self._precompressed is not None
        accept = request.headers.get(hdrs.ACCEPT_ENCODING, "")
        for coding, suffix in self._precompressed.candidates(accept):
            try:
                sidecar_st = os.stat(filename + suffix)
            except OSError:
                continue
            if stat.S_ISREG(sidecar_st.st_mode):
                rep = describe_sidecar(filename, st, sidecar_st, coding)
                return Sidecar(filename + suffix, sidecar_st, rep)
        return None

    def _file(self, request: web.Request, filename: str, st: os.stat_result) -> web.StreamResponse:
        sidecar = self._sidecar(request, filename, st) if self._precompressed else None
        if sidecar is not None:
            filename, st = sidecar.filename, sidecar.st
        body: bytes | None = None
        rep: Representation | None = None
        if st.st_size <= self._cache.max_file_size:
            entry = self._cache.get(filename, st)
            if entry is not None:
                rep, body = entry.meta, entry.body
        if sidecar is not None:
            rep = sidecar.representation
        elif rep is None:
            rep = describe(filename, st)
        decision = evaluate(request.method, request.headers, rep.etag, rep.mtime, rep.size)
        if decision.outcome is Outcome.FULL:
            if body is not None:
                kind = response_class(rep.headers)
                return kind(status=self._status, body=body, headers=rep.headers)
            return SendfileResponse(filename, 0, rep.size, status=self._status, headers=rep.headers)
        return self._conditional(filename, rep, body, decision)

    def _conditional(
        self, filename: str, rep: Representation, body: bytes | None, decision: Decision
    ) -> web.StreamResponse:
        outcome = decision.outcome
        if outcome is Outcome.NOT_MODIFIED:
            headers_304 = {hdrs.ETAG: rep.etag}
            if hdrs.VARY in rep.headers:
                headers_304[hdrs.VARY] = rep.headers[hdrs.VARY]
            return BareResponse(status=304, headers=headers_304)
        if outcome is Outcome.PRECONDITION_FAILED:
            headers_412 = rep.headers.copy()
            del headers_412[hdrs.ACCEPT_RANGES]
            return BareResponse(status=412, headers=headers_412)
        if outcome is Outcome.UNSATISFIABLE:
            error_headers = {
                hdrs.CONTENT_TYPE: "text/plain; charset=utf-8",
                "X-Content-Type-Options": "nosniff",
                hdrs.ETAG: rep.etag,
                hdrs.LAST_MODIFIED: rep.headers[hdrs.LAST_MODIFIED],
            }
            if decision.no_overlap:
                error_headers[hdrs.CONTENT_RANGE] = f"bytes */{rep.size}"
            body_416 = (decision.message + "\n").encode()
            return web.Response(status=416, body=body_416, headers=error_headers)
        headers = rep.headers.copy()
        if len(decision.ranges) == 1:
            start, length = decision.ranges[0]
            headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + length - 1}/{rep.size}"
            if body is not None:
                return BareResponse(status=206, body=body[start : start + length], headers=headers)
            return SendfileResponse(filename, start, length, status=206, headers=headers)
        return self._multipart(filename, rep, body, decision.ranges, headers)

    def _multipart(
        self,
        filename: str,
        rep: Representation,
        body: bytes | None,
        ranges: Sequence[tuple[int, int]],
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        if body is not None:
            chunks = [body[start : start + length] for start, length in ranges]
        elif sum(length for _, length in ranges) > _MULTIPART_MAX:
            # Too much to assemble in memory: ignoring Range is allowed (RFC 9110 14.2).
            return SendfileResponse(filename, 0, rep.size, status=self._status, headers=rep.headers)
        else:
            with open(filename, "rb") as file:
                chunks = [os.pread(file.fileno(), length, start) for start, length in ranges]
        boundary = secrets.token_hex(30)
        parts: list[bytes] = []
        for index, ((start, length), chunk) in enumerate(zip(ranges, chunks, strict=True)):
            head = ("\r\n" if index else "") + f"--{boundary}\r\n"
            head += f"Content-Range: bytes {start}-{start + length - 1}/{rep.size}\r\n"
            if rep.content_type is not None:
                head += f"Content-Type: {rep.content_type}\r\n"
            parts += [(head + "\r\n").encode(), chunk]
        parts.append(f"\r\n--{boundary}--\r\n".encode())
        headers[hdrs.CONTENT_TYPE] = f"multipart/byteranges; boundary={boundary}"
        return web.Response(status=206, body=b"".join(parts), headers=headers)

    async def _listing(self, request: web.Request, directory: str) -> web.StreamResponse:
        if self._canonical and not request.path.endswith("/"):
            return redirect(request, request.rel_url.raw_path + "/")
        try:
            entries = await asyncio.to_thread(browse.read_directory, directory, self._hidden)
        except PermissionError:
            raise _error(403) from None
        except OSError:
            raise _error(404) from None
        return browse.listing_response(request, entries)

    async def _not_found(self, request: web.Request, next: Next) -> web.StreamResponse:
        if self._pass_thru:
            return await next(request)
        raise _error(404)


def _error(status: int, headers: Mapping[str, str] | None = None) -> HandlerError:
    """file_server's errors, answered by the server's ``errors`` routes if it has them."""
    return HandlerError(status, HTTPStatus(status).phrase, headers)


SPEC = HandlerSpec(
    name="file_server",
    schema=SCHEMA,
    factory=FileServer,
    description="Serves static files read-only, with ranges, validators and directory listings.",
)
