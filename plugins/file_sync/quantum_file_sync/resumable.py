"""Resumable uploads on ``/api/uploads``: the IETF draft and tus 1.0 on one upload store.

- IETF HTTP WG *Resumable Uploads for HTTP* (draft-ietf-httpbis-resumable-upload, interop
  version 9): ``POST`` with ``Upload-Complete`` creates an upload (``104`` with the ``Location``
  first when the request names interop version 9), ``HEAD`` (or ``GET``) reports ``Upload-Offset`` /
  ``Upload-Complete`` / ``Upload-Length`` / ``Upload-Limit``, ``PATCH`` with
  ``application/partial-upload`` appends, ``DELETE`` cancels; errors of the draft's problem
  types are ``application/problem+json`` that also carry ``error`` and ``code``.
- tus 1.0 core + creation + creation-with-upload + checksum + termination + expiration: the
  same routes with ``Tus-Resumable: 1.0.0``, ``application/offset+octet-stream`` and
  ``OPTIONS`` discovery.

An upload names its target path at creation and is committed through
:meth:`Storage.commit_received` once complete and its SHA-256 checks, exactly like a ``PUT``:
nothing is visible at the target or journaled before. See docs/api.md for the choices made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import functools
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from aiohttp import hdrs, web

from quantum_file_sync import errors, paths
from quantum_file_sync.download import etag_of, parse_etags
from quantum_file_sync.errors import ApiError
from quantum_file_sync.storage import Preconditions, Storage
from quantum_file_sync.upload_store import (
    DATA,
    OpenUpload,
    UploadRecord,
    UploadStore,
    new_upload_id,
    save_record,
)

ROUTE = "/api/uploads"
INTEROP_VERSION = "9"
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHECKSUMS: Mapping[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
PARTIAL_UPLOAD = "application/partial-upload"
TUS_CONTENT = "application/offset+octet-stream"
DURABLE_EVERY = 1024 * 1024
"""The offset is made durable (data fsync'd, then the record) at least this often."""

_PROBLEMS = "https://iana.org/assignments/http-problem-types#"
_SF_INTEGER = re.compile(r"[0-9]{1,15}")

UPLOAD_COMPLETE = "Upload-Complete"
UPLOAD_OFFSET = "Upload-Offset"
UPLOAD_LENGTH = "Upload-Length"
UPLOAD_LIMIT = "Upload-Limit"
INTEROP = "Upload-Draft-Interop-Version"
TUS_RESUMABLE = "Tus-Resumable"


class Problem(ApiError):
    """An error of one of the draft's problem types (RFC 9457 body plus ``error``/``code``)."""

    def __init__(
        self,
        status: int,
        code: str,
        problem: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, code, message, headers, details)
        self.problem = problem

    def response(self) -> web.Response:
        body = {"type": _PROBLEMS + self.problem, "title": self.message, **self.details}
        body.update(error=self.message, code=self.code)
        return web.json_response(
            body, status=self.status, headers=self.headers, content_type="application/problem+json"
        )


@dataclass(frozen=True, slots=True)
class Checksum:
    """tus ``Upload-Checksum: ALGORITHM BASE64`` of one request's body."""

    algorithm: str
    expected: bytes


class ResumableUploads:
    """The ``/api/uploads`` endpoints of one handler (its ``enable_upload`` and size limit)."""

    def __init__(
        self,
        *,
        store: UploadStore,
        storage: Storage,
        enable_upload: bool,
        max_upload_size: int,
        on_received: Callable[[int], None],
    ) -> None:
        self.store = store
        self.storage = storage
        self.enable_upload = enable_upload
        self.max_upload_size = max_upload_size
        self.on_received = on_received
        self._hashers: dict[str, tuple[int, Any]] = {}
        """A running SHA-256 per upload and the offset it covers, so that completing does not
        read the file again (after a restart it is read once)."""

    @staticmethod
    def owns(request: web.Request) -> bool:
        path = request.rel_url.raw_path
        return path == ROUTE or path.startswith(ROUTE + "/")

    async def handle(self, request: web.Request, source_client: str | None) -> web.StreamResponse:
        try:
            response = await self._dispatch(request, source_client)
        except ApiError as error:
            response = error.response()
        except paths.PathError as error:
            response = errors.error_response(error.status, error.code, error.message)
        except ConnectionError:
            raise  # the client went away: nothing to answer
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                response = errors.error_response(
                    507, "insufficient_storage", "the server's disk is full"
                )
            else:
                response = errors.error_response(
                    500, "io_error", f"upload failed: {error.strerror}"
                )
        if response.status >= 400 and request.method in (hdrs.METH_POST, hdrs.METH_PATCH):
            # ?0: an error of the upload protocol (resumable), not the result of processing it
            response.headers.setdefault(UPLOAD_COMPLETE, "?0")
        response.headers[TUS_RESUMABLE] = TUS_VERSION
        response.headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
        return response

    def describe(self, response: web.StreamResponse) -> None:
        """Discovery headers for ``OPTIONS /api/uploads`` (tus; ``Upload-Limit`` for the draft)."""
        response.headers.update(
            {
                TUS_RESUMABLE: TUS_VERSION,
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": TUS_EXTENSIONS,
                "Tus-Max-Size": str(self.max_upload_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
                UPLOAD_LIMIT: self._limits(None),
            }
        )

    async def _dispatch(
        self, request: web.Request, source_client: str | None
    ) -> web.StreamResponse:
        _check_tus_version(request)
        path = request.rel_url.raw_path
        if path == ROUTE:
            if request.method != hdrs.METH_POST:
                raise _not_allowed("OPTIONS, POST")
            return await self.create(request, source_client)
        upload_id = path[len(ROUTE) + 1 :]
        endpoints: dict[str, Callable[[web.Request, str], Awaitable[web.StreamResponse]]] = {
            hdrs.METH_GET: self.status,
            hdrs.METH_HEAD: self.status,
            hdrs.METH_PATCH: self.append,
            hdrs.METH_DELETE: self.cancel,
        }
        endpoint = endpoints.get(request.method)
        if endpoint is None:
            raise _not_allowed("DELETE, GET, HEAD, PATCH")
        return await endpoint(request, upload_id)

    def _require_upload(self) -> None:
        if not self.enable_upload:
            raise errors.forbidden("this server is read-only (enable_upload is false)")

    # -- creation ------------------------------------------------------------------------------

    async def create(self, request: web.Request, source_client: str | None) -> web.StreamResponse:
        self._require_upload()
        tus = TUS_RESUMABLE in request.headers
        complete_flag = _sf_boolean(request.headers.get(UPLOAD_COMPLETE))
        if not tus and complete_flag is None:
            raise errors.bad_request(
                "creating an upload needs Upload-Complete: ?0 or ?1 (IETF draft) or "
                "Tus-Resumable: 1.0.0 (tus)"
            )
        metadata = _parse_metadata(request.headers.get("Upload-Metadata"))
        target = request.query.get("path") or metadata.get("path") or metadata.get("filename")
        if not target:
            raise errors.bad_request("the upload's target is missing: ?path=P (or tus metadata)")
        rel = paths.validate(target)
        length = _length(request, complete_flag)
        if tus and length is None:
            raise errors.bad_request("tus uploads need Upload-Length (deferred length: no)")
        if length is not None and length > self.max_upload_size:
            raise self._too_large(None)
        record = UploadRecord(
            id=new_upload_id(),
            target=rel,
            protocol="tus" if tus else "ietf",
            length=length,
            if_match=_tags(request.headers.get(hdrs.IF_MATCH)),
            if_none_match=_tags(request.headers.get(hdrs.IF_NONE_MATCH)),
            source_client=source_client,
            sha256=_expected_sha256(metadata.get("sha256"), request.headers.get("Repr-Digest")),
            metadata=request.headers.get("Upload-Metadata"),
        )
        checksum = _checksum(request)
        await asyncio.to_thread(self.store.create, record)
        location = f"{ROUTE}/{record.id}"
        if not tus and request.headers.get(INTEROP) == INTEROP_VERSION:
            await self._informational(
                request, {hdrs.LOCATION: location, **self._limit_header(record)}
            )
        try:
            async with self.store.exclusive(record.id) as upload:
                if _has_body(request):
                    await self._receive(request, upload, checksum)
                record = upload.record
                if complete_flag or (tus and record.offset == record.length):
                    response = await self._complete(upload, upload.record.offset)
                    if tus:
                        response.set_status(201)
                else:
                    response = web.Response(status=201, headers=self._state_headers(record))
        except ApiError as error:
            if error.headers.get(UPLOAD_COMPLETE) != "?1":  # still there: it can be resumed
                error.headers[hdrs.LOCATION] = location
            raise
        response.headers[hdrs.LOCATION] = location
        return response

    # -- offset retrieval, append, cancellation ------------------------------------------------

    async def status(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        async with self.store.exclusive(upload_id) as upload:
            record = upload.record
        headers = self._state_headers(record)
        if record.metadata:
            headers["Upload-Metadata"] = record.metadata
        if record.complete and record.result is not None:
            headers[hdrs.ETAG] = etag_of(str(record.result.get("hash") or ""))
        return web.Response(status=204, headers=headers)

    async def append(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        self._require_upload()
        content_type = request.headers.get(hdrs.CONTENT_TYPE, "").split(";")[0].strip().lower()
        if content_type not in (PARTIAL_UPLOAD, TUS_CONTENT):
            raise ApiError(
                415,
                "unsupported_media_type",
                f"PATCH bodies are {PARTIAL_UPLOAD} (IETF draft) or {TUS_CONTENT} (tus)",
            )
        tus = TUS_RESUMABLE in request.headers
        offset = _sf_integer(request.headers.get(UPLOAD_OFFSET))
        if offset is None:
            raise errors.bad_request("Upload-Offset (a non-negative integer) is required")
        complete_flag = _sf_boolean(request.headers.get(UPLOAD_COMPLETE))
        if not tus and complete_flag is None:
            raise errors.bad_request("Upload-Complete (?0 or ?1) is required")
        checksum = _checksum(request)
        async with self.store.exclusive(upload_id) as upload:
            record = upload.record
            if record.complete and offset == record.offset and not _has_body(request):
                return self._replay(record)  # the client may have missed the final answer
            if record.complete and _has_body(request):
                raise _inconsistent_length("the upload is already complete")
            if offset != record.offset:
                raise Problem(
                    409,
                    "offset_mismatch",
                    "mismatching-upload-offset",
                    f"the upload is at offset {record.offset}, not {offset}",
                    {UPLOAD_OFFSET: str(record.offset), UPLOAD_COMPLETE: "?0"},
                    {"expected-offset": record.offset, "provided-offset": offset},
                )
            length = _length(request, complete_flag, start=offset)
            if length is not None:
                if record.length is not None and length != record.length:
                    raise _inconsistent_length(f"the upload's length is {record.length}")
                if record.length is None:
                    record.length = length
                    await asyncio.to_thread(save_record, upload.directory_fd, record)
            await self._receive(request, upload, checksum)
            record = upload.record
            if complete_flag or (complete_flag is None and record.offset == record.length):
                return await self._complete(upload, record.offset)
            return web.Response(status=204, headers=self._state_headers(record))

    async def cancel(self, request: web.Request, upload_id: str) -> web.StreamResponse:
        self._require_upload()
        async with self.store.exclusive(upload_id):
            await asyncio.to_thread(self.store.remove, upload_id)
        self._hashers.pop(upload_id, None)
        return web.Response(status=204)

    # -- receiving -----------------------------------------------------------------------------

    async def _receive(
        self, request: web.Request, upload: OpenUpload, checksum: Checksum | None
    ) -> None:
        """Append the request body at the record's offset; what was received stays even when
        the client goes away (or another request for this upload stops this one)."""
        record = upload.record
        limit = self.max_upload_size if record.length is None else record.length
        content_length = request.content_length
        if content_length is not None and record.offset + content_length > limit:
            if record.length is not None and record.offset + content_length > record.length:
                raise _inconsistent_length(f"the body goes past the upload's length {limit}")
            raise self._too_large(record)
        task = asyncio.ensure_future(self._append_body(request, upload, checksum, limit))
        self.store.track_append(record.id, task)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise ApiError(
                409,
                "upload_superseded",
                "another request for this upload came in; this one was stopped",
                {UPLOAD_OFFSET: str(upload.record.offset)},
            ) from None
        finally:
            self.store.untrack_append(record.id, task)

    async def _append_body(
        self, request: web.Request, upload: OpenUpload, checksum: Checksum | None, limit: int
    ) -> None:
        record = upload.record
        fd = os.open(DATA, os.O_RDWR | os.O_CLOEXEC, dir_fd=upload.directory_fd)
        start = written = durable = record.offset
        known = self._hashers.get(record.id)
        hasher = known[1].copy() if known and known[0] == start else None
        if hasher is None and start == 0:
            hasher = hashlib.sha256()
        body_hash = CHECKSUMS[checksum.algorithm]() if checksum else None
        ended = overflow = False
        try:
            async for chunk in request.content.iter_any():
                if written + len(chunk) > limit:
                    overflow = True
                    break
                view = memoryview(chunk)
                position = written
                while view:
                    count = os.pwrite(fd, view, position)
                    view, position = view[count:], position + count
                written += len(chunk)
                self.on_received(len(chunk))
                if hasher is not None:
                    hasher.update(chunk)
                if body_hash is not None:
                    body_hash.update(chunk)
                elif written - durable >= DURABLE_EVERY:
                    await _uninterrupted(functools.partial(_make_durable, fd, upload, written))
                    durable = written
                    self._remember_hash(record.id, written, hasher)
                    await self._informational(request, {UPLOAD_OFFSET: str(written)})
            ended = not overflow
        finally:
            accepted = checksum is None or (
                ended and body_hash is not None and body_hash.digest() == checksum.expected
            )
            if accepted and written > durable:
                # Blocking on purpose: this also runs when the task is being cancelled, and
                # the next request for this upload must find the offset settled.
                _make_durable(fd, upload, written)
                self._remember_hash(record.id, written, hasher)
            os.close(fd)
        if overflow and record.length is not None:
            # The draft: an upload sent past its length is invalid for good.
            await asyncio.to_thread(self.store.remove, record.id)
            raise _inconsistent_length(f"the body goes past the upload's length {limit}")
        if overflow:
            raise self._too_large(record)
        if not accepted:
            raise ApiError(
                460,
                "checksum_mismatch",
                f"the body's {checksum.algorithm if checksum else ''} checksum does not match "
                "Upload-Checksum; nothing of it was kept",
                {UPLOAD_OFFSET: str(record.offset)},
            )

    def _remember_hash(self, upload_id: str, offset: int, hasher: Any) -> None:
        if hasher is not None:
            self._hashers[upload_id] = (offset, hasher.copy())

    # -- completion ----------------------------------------------------------------------------

    async def _complete(self, upload: OpenUpload, size: int) -> web.StreamResponse:
        """Check the hash and commit like a PUT. Any failure discards the upload: resuming
        could not change the outcome."""
        record = upload.record
        done = {UPLOAD_COMPLETE: "?1", UPLOAD_OFFSET: str(size)}
        if record.length is not None and size != record.length:
            raise _inconsistent_length(
                f"completed at {size} bytes, but the upload's length is {record.length}"
            )
        known = self._hashers.pop(record.id, None)
        try:
            if known is not None and known[0] == size:
                digest: str = known[1].hexdigest()
            else:
                digest = await asyncio.to_thread(_hash_data, upload.directory_fd, size)
            if record.sha256 is not None and digest != record.sha256:
                raise ApiError(
                    422,
                    "hash_mismatch",
                    f"the upload's SHA-256 is {digest}, not the {record.sha256} announced; "
                    "it was discarded",
                    done,
                )
            preconditions = Preconditions(
                if_match=None if record.if_match is None else frozenset(record.if_match),
                if_none_match=None
                if record.if_none_match is None
                else frozenset(record.if_none_match),
            )
            result = await self.storage.commit_received(
                record.target,
                upload.directory_fd,
                DATA,
                digest,
                size,
                preconditions,
                record.source_client,
            )
        except ApiError as error:
            await asyncio.to_thread(self.store.remove, record.id)
            error.headers.update(done)
            raise
        except BaseException:
            await asyncio.to_thread(self.store.remove, record.id)
            raise
        record.complete = True
        record.offset = size
        record.length = size
        record.updated = time.time()
        record.result = result.metadata.to_json()
        record.result_status = 201 if result.created else 200
        await asyncio.to_thread(save_record, upload.directory_fd, record)
        return self._replay(record)

    @staticmethod
    def _replay(record: UploadRecord) -> web.StreamResponse:
        """The final response of a completed upload (again, for a client that missed it)."""
        result = record.result or {}
        headers = {
            UPLOAD_COMPLETE: "?1",
            UPLOAD_OFFSET: str(record.offset),
            hdrs.ETAG: etag_of(str(result.get("hash") or "")),
        }
        if record.protocol == "tus":
            return web.Response(status=204, headers=headers)
        return web.json_response(result, status=record.result_status or 200, headers=headers)

    # -- headers -------------------------------------------------------------------------------

    def _state_headers(self, record: UploadRecord) -> dict[str, str]:
        headers = {
            UPLOAD_OFFSET: str(record.offset),
            UPLOAD_COMPLETE: "?1" if record.complete else "?0",
            **self._limit_header(record),
        }
        if record.length is not None:
            headers[UPLOAD_LENGTH] = str(record.length)
        if not record.complete:
            headers["Upload-Expires"] = formatdate(self.store.expires_at(record), usegmt=True)
        return headers

    def _limits(self, record: UploadRecord | None) -> str:
        limits = f"max-size={self.max_upload_size}"
        if record is None:
            return f"{limits}, max-age={int(self.store.expire)}"
        remaining = max(0, int(self.store.expires_at(record) - time.time()))
        return f"{limits}, max-age={remaining}"

    def _limit_header(self, record: UploadRecord | None) -> dict[str, str]:
        return {UPLOAD_LIMIT: self._limits(record)}

    def _too_large(self, record: UploadRecord | None) -> ApiError:
        return ApiError(
            413,
            "too_large",
            f"uploads are limited to {self.max_upload_size} bytes",
            self._limit_header(record),
        )

    @staticmethod
    async def _informational(request: web.Request, headers: Mapping[str, str]) -> None:
        """A ``104 (Upload Resumption Supported)`` interim response, only to clients that
        announced this interop version (the draft forbids it otherwise) over HTTP/1.1."""
        if request.headers.get(INTEROP) != INTEROP_VERSION or request.version < (1, 1):
            return
        writer = request.writer
        if writer is None or (request.transport is None or request.transport.is_closing()):
            return
        lines = [f"HTTP/1.1 104 Upload Resumption Supported\r\n{INTEROP}: {INTEROP_VERSION}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        await writer.write(("".join(lines) + "\r\n").encode("latin-1"))


# -- helpers (blocking ones run in threads) ----------------------------------------------------


async def _uninterrupted(call: Callable[[], None]) -> None:
    """Run ``call`` in a thread and wait for it even when cancelled meanwhile: the next
    request for the upload must not race a record still being written."""
    running = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


def _make_durable(fd: int, upload: OpenUpload, offset: int) -> None:
    os.fsync(fd)
    record = upload.record
    record.offset = offset
    record.updated = time.time()
    save_record(upload.directory_fd, record)


def _hash_data(directory_fd: int, size: int) -> str:
    fd = os.open(DATA, os.O_RDWR | os.O_CLOEXEC, dir_fd=directory_fd)
    try:
        os.ftruncate(fd, size)  # bytes past the offset (an unaccepted body) are not part of it
        os.fsync(fd)
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1024 * 1024):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def _check_tus_version(request: web.Request) -> None:
    version = request.headers.get(TUS_RESUMABLE)
    if version is not None and version.strip() != TUS_VERSION:
        raise ApiError(
            412,
            "unsupported_version",
            f"this server speaks tus {TUS_VERSION}",
            {"Tus-Version": TUS_VERSION},
        )


def _not_allowed(allowed: str) -> ApiError:
    return ApiError(405, "method_not_allowed", f"allowed methods: {allowed}", {hdrs.ALLOW: allowed})


def _inconsistent_length(message: str, headers: Mapping[str, str] | None = None) -> Problem:
    return Problem(400, "inconsistent_length", "inconsistent-upload-length", message, headers)


def _has_body(request: web.Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower()


def _sf_integer(value: str | None) -> int | None:
    """A Structured Field Integer ≥ 0; anything else is ignored (``None``), as the draft says."""
    if value is None or not _SF_INTEGER.fullmatch(value.strip()):
        return None
    return int(value.strip())


def _sf_boolean(value: str | None) -> bool | None:
    stripped = None if value is None else value.strip()
    return {"?1": True, "?0": False}.get(stripped or "")


def _length(request: web.Request, complete: bool | None, *, start: int = 0) -> int | None:
    """The upload's length from ``Upload-Length`` and/or ``Upload-Complete: ?1`` with
    ``Content-Length``; both given must agree."""
    declared = _sf_integer(request.headers.get(UPLOAD_LENGTH))
    if UPLOAD_LENGTH in request.headers and declared is None and TUS_RESUMABLE in request.headers:
        raise errors.bad_request("Upload-Length must be a non-negative integer")
    implied = None
    if complete and request.content_length is not None:
        implied = start + request.content_length
    if declared is not None and implied is not None and declared != implied:
        raise _inconsistent_length(
            f"Upload-Length {declared} does not match the body's end at {implied}"
        )
    return declared if declared is not None else implied


def _tags(header: str | None) -> list[str] | None:
    tags = parse_etags(header)
    return None if tags is None else sorted(tags)


def _parse_metadata(header: str | None) -> dict[str, str]:
    """tus ``Upload-Metadata``: ``key base64value`` pairs separated by commas."""
    metadata: dict[str, str] = {}
    if not header:
        return metadata
    for pair in header.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key:
            continue
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise errors.bad_request(f"Upload-Metadata {key!r} is not base64 UTF-8") from None
    return metadata


def _expected_sha256(from_metadata: str | None, repr_digest: str | None) -> str | None:
    """The SHA-256 announced in tus metadata (hex or base64) or ``Repr-Digest: sha-256=:…:``."""
    if from_metadata is not None:
        value = from_metadata.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return value.lower()
        return _sha256_base64(value, "Upload-Metadata sha256")
    if repr_digest is not None:
        for member in repr_digest.split(","):
            key, _, value = member.strip().partition("=")
            if key.strip().lower() == "sha-256":
                value = value.strip()
                if not (len(value) >= 2 and value[0] == value[-1] == ":"):
                    raise errors.bad_request("Repr-Digest sha-256 must be a byte sequence :…:")
                return _sha256_base64(value[1:-1], "Repr-Digest sha-256")
    return None


def _sha256_base64(value: str, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise errors.bad_request(f"{what} must be a SHA-256 in hex or base64")
    return raw.hex()


def _checksum(request: web.Request) -> Checksum | None:
    header = request.headers.get("Upload-Checksum")
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUMS:
        raise errors.bad_request(
            f"Upload-Checksum: unsupported algorithm {algorithm!r} (supported: "
            f"{', '.join(CHECKSUMS)})",
            "unsupported_checksum",
        )
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise errors.bad_request("Upload-Checksum must be 'ALGORITHM BASE64'") from None
    return Checksum(algorithm, expected)
