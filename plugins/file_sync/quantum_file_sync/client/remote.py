"""The file_sync HTTP API as seen by the client (one shared keep-alive ``ClientSession``).

Every path the server sends back is checked with the server's own rule
(:func:`quantum_file_sync.paths.validate`): a hostile or broken server cannot make the client
write outside its folder. Uploads carry ``X-Quantum-Client`` and a precondition — ``If-Match``
with the hash the client last saw, or ``If-None-Match: *`` for a path it believes free — so the
server refuses (412) rather than overwrite a version the client has not seen.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from quantum_file_sync.bundle import BundleDecoder, Record
from quantum_file_sync.chunks import MANIFEST_MEDIA_TYPE, RECORDS_MEDIA_TYPE, Manifest
from quantum_file_sync.client.exit_codes import AuthFailed, BadServer
from quantum_file_sync.client.local import (
    CHUNK,
    INLINE_HASH_LIMIT,
    BackgroundHasher,
    FileUnstable,
    StatKey,
    TempDownload,
)
from quantum_file_sync.client.remote_view import RemoteEntry
from quantum_file_sync.client.state import Cursor
from quantum_file_sync.client.urls import api_url, file_url
from quantum_file_sync.operations import (
    ChangeEvent,
    Create,
    Delete,
    FileMetadata,
    Move,
    Update,
    operation_paths,
)
from quantum_file_sync.paths import PathError, validate

INLINE_UPLOAD_LIMIT = 4 * 1024 * 1024
"""Smaller files are read, verified and sent from memory; larger ones are streamed."""

E = TypeVar("E", bound=BaseException)
LIST_PAGE_SIZE = 10_000
HASH_BACKLOG = 32 * 1024 * 1024
"""Received bytes a download may run ahead of its hashing thread."""
OnBytes = Callable[[int], None]
Records = list[Record]
Hashes = list[str]


class ConnectionLost(Exception):
    """The server could not be reached or dropped the connection: retry later."""


class RemoteError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        """The error body's other fields (e.g. ``missing`` of a 409 ``missing_chunks``)."""


class PreconditionFailed(RemoteError):
    """412: the server's version is not the one the client based its action on."""


class BundleUnsupported(Exception):
    """The server has no bundle endpoint (an older file_sync): download one file at a time."""


class BlocksUnsupported(Exception):
    """The server does not move files by chunks (an older file_sync): plain transfers.
    ``permanent=False``: only this file could not (a 404: maybe just gone meanwhile)."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


class MissingChunks(RemoteError):
    """409 ``missing_chunks``: a commit named chunks the server has nowhere (any more)."""

    @property
    def hashes(self) -> list[str]:
        missing = self.details.get("missing")
        return [h for h in missing if isinstance(h, str)] if isinstance(missing, list) else []


class HashMismatch(Exception):
    """The downloaded bytes do not have the announced SHA-256 (the file changed meanwhile,
    or the server is lying): nothing is written."""


@dataclass
class Listing:
    epoch: str
    seq: int
    entries: dict[str, RemoteEntry]
    refused: list[tuple[str, str]] = field(default_factory=list)
    """``(path, reason)`` of entries the client will not touch (unsafe or reserved paths)."""


@dataclass
class Changes:
    epoch: str
    seq: int
    recovered: bool
    events: list[ChangeEvent]
    refused: list[tuple[int, str]] = field(default_factory=list)
    """``(seq, reason)`` of operations the client will not apply (unsafe paths)."""
    ignored: list[int] = field(default_factory=list)
    """Seqs of operations of a kind this client does not know (a newer server's): skipped."""


KNOWN_KINDS = frozenset({"Create", "Update", "Delete", "Move", "Purge"})


def unknown_kind(message: dict[str, Any]) -> bool:
    """An operation of a kind this client does not know: ignored, as docs/history.md asks
    of every client (a newer server may journal kinds that change no live file)."""
    operation = message.get("operation")
    if not isinstance(operation, dict) or len(operation) != 1:
        return False  # malformed: refused as such
    return isinstance(message.get("seq"), int) and not KNOWN_KINDS & operation.keys()


def unsafe_reason(path: object) -> str | None:
    """Why a server-supplied path must not be written (``None`` when it is safe)."""
    if isinstance(path, str):
        return _unsafe_text(path)  # every path is checked on arrival and again when settled
    return _validation_problem(path)


@functools.lru_cache(maxsize=1 << 16)
def _unsafe_text(path: str) -> str | None:
    return _validation_problem(path)


def _validation_problem(path: object) -> str | None:
    try:
        validate(path)
    except PathError as exc:
        return exc.message
    return None


def event_problem(event: ChangeEvent) -> str | None:
    if not isinstance(event.operation, Create | Update | Delete | Move):
        return None  # changes no live file (a history Purge): its paths are never written
    for path in operation_paths(event.operation):
        reason = unsafe_reason(path)
        if reason is not None:
            return f"{path!r}: {reason}"
    return None


class RemoteClient:
    def __init__(
        self, session: aiohttp.ClientSession, server: str, client_id: str, token: str | None
    ) -> None:
        self.session = session
        self.server = server
        self.headers = {"X-Quantum-Client": client_id}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    # --- reading -----------------------------------------------------------------------------

    async def check(self) -> None:
        """One cheap request: raises ConnectionLost, AuthFailed or BadServer."""
        try:
            await self._json("GET", "list", params={"path": "", "recursive": "false", "limit": "1"})
        except RemoteError as exc:
            raise BadServer(
                f"{self.server} does not answer as a file_sync server: {exc.status} {exc.code}: "
                f"{exc.message}"
            ) from None

    async def list(
        self, path: str = "", *, recursive: bool = True, page_size: int = LIST_PAGE_SIZE
    ) -> Listing:
        """The whole listing below ``path``, following pagination; the seq is the first page's
        (the oldest state the listing may reflect)."""
        params = {
            "path": path,
            "recursive": "true" if recursive else "false",
            "limit": str(page_size),
        }
        listing: Listing | None = None
        while True:
            body = await self._json("GET", "list", params=params)
            if listing is None:
                listing = Listing(str(body["epoch"]), int(body["seq"]), {})
            for item in body["files"]:
                reason = unsafe_reason(item.get("path"))
                if reason is not None:
                    listing.refused.append((str(item.get("path")), reason))
                    continue
                entry = RemoteEntry.of(FileMetadata.from_json(item))
                listing.entries[entry.path] = entry
            cursor = body.get("next")
            if not cursor:
                return listing
            params = {**params, "cursor": str(cursor)}

    async def entry(self, path: str) -> tuple[RemoteEntry | None, int]:
        """The current remote entry of one path (``None``: absent) and the listing seq."""
        directory = path.rpartition("/")[0]
        try:
            listing = await self.list(directory, recursive=False)
        except RemoteError as exc:
            if exc.status in (404, 409):
                return None, 0
            raise
        return listing.entries.get(path), listing.seq

    async def changes(self, since: Cursor) -> Changes:
        body = await self._json(
            "GET", "changes", params={"since": str(since.seq), "epoch": since.epoch}
        )
        changes = Changes(str(body["epoch"]), int(body["seq"]), bool(body["recovered"]), [])
        for message in body["operations"]:
            if unknown_kind(message):
                changes.ignored.append(message["seq"])
                continue
            try:
                event = ChangeEvent.from_message(message)
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise BadServer(f"{self.server} sent a malformed operation: {exc!r}") from None
            problem = event_problem(event)
            if problem is None:
                changes.events.append(event)
            else:
                changes.refused.append((event.seq, f"unsafe path {problem}"))
        return changes

    async def download(
        self, path: str, expected_hash: str, sink: TempDownload, on_bytes: OnBytes | None = None
    ) -> None:
        """Stream ``path`` into ``sink``; raises HashMismatch unless the bytes hash to
        ``expected_hash``."""
        url = file_url(self.server, path)
        try:
            async with await self._send("GET", url, headers=self.headers) as resp:
                if resp.status != 200:
                    await self._raise_for(resp)
                etag = resp.headers.get("ETag", "").strip('"')
                if etag and etag != expected_hash:
                    raise HashMismatch(f"{path}: the server now has {etag[:12]}…")
                await _receive(resp, sink, on_bytes)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        sink.finish()
        if sink.hexdigest() != expected_hash:
            raise HashMismatch(
                f"{path}: content hashes to {sink.hexdigest()[:12]}…, "
                f"announced {expected_hash[:12]}…"
            )

    async def bundle(self, paths: Sequence[str], max_file_size: int) -> AsyncIterator[Records]:
        """``POST /api/bundle``: the records of ``paths`` as they arrive, a list per chunk.

        Raises BundleUnsupported, ConnectionLost, AuthFailed, RemoteError, or
        :class:`~quantum_file_sync.bundle.BundleError` for a malformed or cut-short bundle. The
        records' paths are the server's word: callers match them against what they asked for."""
        decoder = BundleDecoder(max_file_size)
        url = api_url(self.server, "bundle")
        try:
            async with await self._send(
                "POST", url, headers=self.headers, json={"paths": list(paths)}
            ) as resp:
                if resp.status in (404, 405):
                    raise BundleUnsupported(f"{self.server} has no bundle endpoint")
                if resp.status != 200:
                    await self._raise_for(resp)
                async for chunk in resp.content.iter_any():
                    records = decoder.feed(chunk)
                    if records:
                        yield records
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        decoder.finish()

    # --- block transfers (docs/chunks.md) ----------------------------------------------------

    async def manifest(self, path: str) -> Manifest:
        """``GET /api/files/{path}?manifest=true``; BlocksUnsupported when the server answers
        anything but a manifest (older servers ignore the query and send the file: dropped)."""
        url = file_url(self.server, path).with_query(manifest="true")
        headers = {**self.headers, "Accept": MANIFEST_MEDIA_TYPE}
        try:
            async with await self._send("GET", url, headers=headers) as resp:
                if resp.status in (400, 404):  # this path only (gone meanwhile?)
                    raise BlocksUnsupported(f"no manifest for {path}", permanent=False)
                if resp.status in (405, 406, 415, 501):
                    raise BlocksUnsupported(f"{self.server} serves no manifests")
                if resp.status != 200:
                    await self._raise_for(resp)
                if resp.content_type != MANIFEST_MEDIA_TYPE:
                    resp.close()  # the file itself: do not read it
                    raise BlocksUnsupported(f"{self.server} serves no manifests")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        except ValueError:
            raise BadServer(f"{self.server} sent a manifest that is not JSON") from None
        try:
            return Manifest.from_json(body, max_size=2**63)
        except ValueError as exc:
            raise BadServer(f"{self.server} sent a malformed manifest: {exc}") from None

    async def missing_chunks(self, hashes: Sequence[str], path: str) -> Hashes:
        """Which of ``hashes`` the server has nowhere; ``path`` is the upload's target."""
        url = api_url(self.server, "chunks/missing")
        try:
            async with await self._send(
                "POST", url, headers=self.headers, json={"chunks": list(hashes), "path": path}
            ) as resp:
                if resp.status in (404, 405, 415, 501):
                    raise BlocksUnsupported(f"{self.server} has no chunk endpoints")
                if resp.status != 200:
                    await self._raise_for(resp)
                body = await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        except ValueError:
            raise BadServer(f"{self.server} answered chunks/missing with non-JSON") from None
        return [str(h) for h in body["missing"]]

    async def upload_chunks(self, records: bytes) -> Hashes:
        """``POST /api/chunks`` with a body of chunk records; the hashes the server stored."""
        body = await self._json(
            "POST", "chunks", headers=self.headers, data=_in_memory(records, RECORDS_MEDIA_TYPE)
        )
        return [str(h) for h in body["stored"]]

    async def fetch_chunks(self, hashes: Sequence[str]) -> AsyncGenerator[bytes, None]:
        """``POST /api/chunks/get``: the records body, piece by piece as it arrives."""
        url = api_url(self.server, "chunks/get")
        try:
            async with await self._send(
                "POST", url, headers=self.headers, json={"chunks": list(hashes)}
            ) as resp:
                if resp.status != 200:
                    await self._raise_for(resp)
                async for piece in resp.content.iter_any():
                    yield piece
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc

    async def commit_manifest(
        self, path: str, manifest: Manifest, *, if_match: str | None
    ) -> RemoteEntry:
        """PUT ``manifest`` to ``path``: the server assembles the file from chunks it has.
        Preconditions as for :meth:`upload`; raises MissingChunks (409)."""
        headers = {**self.headers, **_precondition(if_match)}
        body = json.dumps(
            {
                "hash": manifest.hash,
                "size": manifest.size,
                "chunks": [{"hash": ref.hash, "size": ref.size} for ref in manifest.chunks],
            }
        )
        try:
            reply = await self._json_url(
                "PUT",
                file_url(self.server, path),
                headers=headers,
                data=_in_memory(body.encode(), MANIFEST_MEDIA_TYPE),
            )
        except RemoteError as exc:
            if exc.status == 409 and exc.code == "missing_chunks":
                raise MissingChunks(exc.status, exc.code, exc.message, exc.details) from None
            raise
        return _entry(reply)

    # --- writing -----------------------------------------------------------------------------

    async def upload(
        self,
        path: str,
        source: str,
        key: StatKey,
        digest: str,
        *,
        if_match: str | None,
        on_bytes: OnBytes | None = None,
    ) -> RemoteEntry:
        """PUT the local file ``source`` (exactly the version ``key``/``digest``) to ``path``.

        ``if_match=None`` means "create only" (``If-None-Match: *``). Raises FileUnstable when
        the file changes before the body is complete; the request is then aborted, so the
        server never commits those bytes."""
        headers = {
            **self.headers,
            **_precondition(if_match),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(key.size),
        }
        data: bytes | AsyncIterator[bytes]
        if key.size <= INLINE_HASH_LIMIT:
            data = _read_verified(source, key, digest)
        elif key.size <= INLINE_UPLOAD_LIMIT:
            data = await asyncio.to_thread(_read_verified, source, key, digest)
            if on_bytes is not None:
                on_bytes(key.size)
        else:
            data = _stream_verified(source, key, digest, on_bytes)
        body = await self._json_url("PUT", file_url(self.server, path), headers=headers, data=data)
        return _entry(body)

    async def delete(self, path: str, *, if_match: str | None, recursive: bool = True) -> None:
        """Delete ``path``; ``recursive=False`` deletes only an empty directory (the server
        answers 409 ``not_empty`` otherwise). Already gone counts as done."""
        headers = dict(self.headers)
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        url = file_url(self.server, path)
        if not recursive:
            url = url.with_query(recursive="false")
        try:
            await self._json_url("DELETE", url, headers=headers)
        except RemoteError as exc:
            if exc.status != 404:
                raise

    async def mkdir(self, path: str) -> RemoteEntry:
        return _entry(await self._json("POST", "mkdir", json={"path": path}))

    async def move(self, source: str, target: str) -> RemoteEntry:
        return _entry(await self._json("POST", "move", json={"from": source, "to": target}))

    # --- plumbing ----------------------------------------------------------------------------

    async def _json(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", self.headers)
        return await self._json_url(
            method, api_url(self.server, endpoint), headers=headers, **kwargs
        )

    async def _json_url(self, method: str, url: Any, **kwargs: Any) -> Any:
        try:
            async with await self._send(method, url, **kwargs) as resp:
                if resp.status >= 300:
                    await self._raise_for(resp)
                if resp.status == 204:
                    return {}
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise BadServer(
                        f"{self.server} answered {method} {url.path} with non-JSON"
                    ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            unstable = _cause(exc, FileUnstable)
            if unstable is not None:  # our body generator aborted the request on purpose
                raise unstable from None
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc

    async def _send(self, method: str, url: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        """A kept-alive connection the server closed just before the request went out fails at
        once with ServerDisconnectedError: such a request is sent once more, on a fresh
        connection, when its body can be replayed. (Safe for writes too: they carry
        preconditions, so one that had in fact been applied answers 412.)"""
        try:
            return await self.session.request(method, url, **kwargs)
        except aiohttp.ServerDisconnectedError:
            if isinstance(kwargs.get("data"), AsyncIterator):
                raise
            return await self.session.request(method, url, **kwargs)

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        code, message = "http_error", resp.reason or ""
        details: dict[str, Any] = {}
        try:
            body = await resp.json(content_type=None)
            if isinstance(body, dict):
                code = str(body.get("code", code))
                message = str(body.get("error", message))
                details = body
        except (ValueError, aiohttp.ClientError):
            pass
        if resp.status == 401:
            raise AuthFailed(f"{self.server} refused the token: {message}")
        if resp.status == 412:
            raise PreconditionFailed(resp.status, code, message)
        if resp.status == 404 and code == "http_error":
            raise BadServer(
                f"{self.server}{resp.url.path} is not a file_sync endpoint (404 without an "
                f"API error body)"
            )
        raise RemoteError(resp.status, code, message, details)


async def _receive(
    resp: aiohttp.ClientResponse, sink: TempDownload, on_bytes: OnBytes | None
) -> None:
    """Copy the body into ``sink`` as it arrives, without extra copies.

    A small body is written and hashed inline. A larger one is written by the loop chunk by
    chunk while one worker thread, started once for the whole download, hashes the same chunks
    (hashing releases the GIL): the SHA-256 costs no wall time beyond the transfer."""
    length = resp.content_length
    if length is not None and length <= INLINE_HASH_LIMIT:
        data = await resp.content.read()
        sink.write(data)
        if on_bytes is not None:
            on_bytes(len(data))
        return
    hasher = BackgroundHasher(sink.hasher)
    try:
        async for chunk in resp.content.iter_any():
            sink.write(chunk, hashed=False)
            hasher.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
            while hasher.backlog > HASH_BACKLOG:
                await asyncio.sleep(0.002)
    finally:
        await hasher.close()


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` in ``exc``'s cause/context chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _in_memory(data: bytes, content_type: str) -> aiohttp.BytesPayload:
    """A body held in memory, sendable again when a kept-alive connection turns out closed.
    aiohttp warns about bodies over 1 MiB ("might lock the event loop"); a chunk batch is
    handed to the transport in one write, which only copies it, so the warning is muted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        return aiohttp.BytesPayload(data, content_type=content_type)


def _precondition(if_match: str | None) -> dict[str, str]:
    """``If-Match`` the version the client saw, or ``If-None-Match: *``: create only."""
    return {"If-None-Match": "*"} if if_match is None else {"If-Match": f'"{if_match}"'}


def _entry(body: Any) -> RemoteEntry:
    return RemoteEntry.of(FileMetadata.from_json(body))


def _read_verified(source: str, key: StatKey, digest: str) -> bytes:
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if StatKey.of(os.fstat(fd)) != key:
            raise FileUnstable(source)
        data = os.read(fd, key.size + 1) if key.size else b""
        while len(data) < key.size + 1:
            more = os.read(fd, key.size + 1 - len(data))
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    if len(data) != key.size or hashlib.sha256(data).hexdigest() != digest:
        raise FileUnstable(source)
    return data


async def _stream_verified(
    source: str, key: StatKey, digest: str, on_bytes: OnBytes | None
) -> AsyncIterator[bytes]:
    """Yield the file's bytes, holding the last chunk back until the whole content is verified:
    if it changed, the generator raises and the request is aborted before it is complete."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if StatKey.of(os.fstat(fd)) != key:
            raise FileUnstable(source)
        hasher = hashlib.sha256()
        remaining = key.size
        pending: bytes | None = None
        while remaining > 0:
            chunk = await asyncio.to_thread(_read_hashed, fd, min(CHUNK, remaining), hasher)
            if not chunk:
                raise FileUnstable(source)
            remaining -= len(chunk)
            if pending is not None:
                yield pending
                if on_bytes is not None:
                    on_bytes(len(pending))
            pending = chunk
        if hasher.hexdigest() != digest or StatKey.of(os.fstat(fd)) != key:
            raise FileUnstable(source)
        if pending is not None:
            yield pending
            if on_bytes is not None:
                on_bytes(len(pending))
    finally:
        os.close(fd)


def _read_hashed(fd: int, size: int, hasher: Any) -> bytes:
    chunk = os.read(fd, size)
    hasher.update(chunk)
    return chunk
