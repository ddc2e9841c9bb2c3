"""The block-transfer endpoints: manifests, "which chunks do you lack", chunk upload and download.

A client sends a file by asking which of its chunks the server lacks
(``POST /api/chunks/missing``), uploading only those (``POST /api/chunks``), then committing
the manifest (``PUT /api/files/{path}`` with the manifest media type, see
:meth:`~quantum_file_sync.storage.Storage.put_manifest`). It receives one by fetching the
manifest (``GET /api/files/{path}?manifest=true``) and only the chunks it has nowhere locally
(``POST /api/chunks/get``). Contract: docs/chunks.md.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong

from quantum_file_sync import errors
from quantum_file_sync.chunks import (
    HASH_PATTERN,
    MANIFEST_MEDIA_TYPE,
    RECORD_HEADER_MAX,
    RECORDS_MEDIA_TYPE,
    Manifest,
    ManifestError,
    parse_record_header,
    record_header,
)
from quantum_file_sync.chunkstore import ChunkStore, read_source
from quantum_file_sync.download import etag_of, parse_etags
from quantum_file_sync.errors import ApiError
from quantum_file_sync.recorder import FileMetrics

MAX_HASHES = 10_000
MAX_FETCH_BYTES = 256 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""A ``missing``/``get`` request: 10,000 hashes are about 700 KB of JSON."""
MAX_MANIFEST_BYTES = 160 * 1024 * 1024
"""A manifest of a million chunks is about 130 MB of JSON."""


def wants_manifest(request: web.Request) -> bool:
    flag = request.query.get("manifest", "").lower()
    if flag in ("true", "1"):
        return True
    return MANIFEST_MEDIA_TYPE in request.headers.get(hdrs.ACCEPT, "")


def is_manifest_upload(request: web.Request) -> bool:
    return request.content_type == MANIFEST_MEDIA_TYPE


class BlockApi:
    def __init__(self, chunks: ChunkStore, metrics: FileMetrics) -> None:
        self.chunks = chunks
        self.metrics = metrics

    async def manifest(self, request: web.Request, rel: str) -> web.StreamResponse:
        """The manifest of the live file at ``rel`` (``ETag`` = its whole-file hash)."""
        found = await self.chunks.manifest(rel)
        if found is None:
            raise errors.not_found(f"{rel!r} is not a file")
        _, manifest = found
        headers = {hdrs.ETAG: etag_of(manifest.hash), hdrs.CACHE_CONTROL: "no-cache"}
        tags = parse_etags(request.headers.get(hdrs.IF_NONE_MATCH))
        if tags is not None and ("*" in tags or manifest.hash in tags):
            return web.Response(status=304, headers=headers)
        return web.json_response(
            manifest.to_json(rel), content_type=MANIFEST_MEDIA_TYPE, headers=headers
        )

    async def missing(self, hashes: list[str], path_hint: str | None) -> web.StreamResponse:
        if path_hint is not None:
            await self.chunks.manifest(path_hint)
        return web.json_response({"missing": await self.chunks.missing(hashes)})

    async def upload(self, request: web.Request) -> web.StreamResponse:
        """Store each chunk record of the body whose bytes match its hash."""
        if request.content_type != RECORDS_MEDIA_TYPE:
            raise ApiError(415, "unsupported_media_type", f"chunk uploads are {RECORDS_MEDIA_TYPE}")
        stored: list[str] = []
        content = request.content
        while True:
            try:
                line = await content.readline()
            except (LineTooLong, ValueError):  # no newline within aiohttp's line limit
                raise errors.bad_request("chunk record header too long", "bad_record") from None
            if not line:
                break
            if len(line) > RECORD_HEADER_MAX:
                raise errors.bad_request("chunk record header too long", "bad_record")
            try:
                digest, size = parse_record_header(line)
            except ManifestError as error:
                raise errors.bad_request(str(error), "bad_record") from None
            try:
                data = await content.readexactly(size)
            except asyncio.IncompleteReadError:
                raise errors.bad_request(
                    f"the body ended inside chunk {digest}", "bad_record"
                ) from None
            self.metrics.bytes_uploaded.inc(size)
            actual = await asyncio.to_thread(_sha256, data)
            if actual != digest:
                raise ApiError(
                    422,
                    "chunk_mismatch",
                    f"the bytes sent for chunk {digest} hash to {actual}",
                    details={"hash": digest, "stored": stored},
                )
            await self.chunks.store_blob(digest, data)
            self.metrics.chunks_uploaded.inc()
            stored.append(digest)
        return web.json_response({"stored": stored})

    async def fetch(self, request: web.Request, hashes: list[str]) -> web.StreamResponse:
        """The chunk records of the requested hashes the server has (missing ones are left
        out: the client sees which records came)."""
        sources = await self.chunks.sources(hashes)
        total = sum(source.size for source in sources.values())
        if total > MAX_FETCH_BYTES:
            raise ApiError(
                413, "too_large", f"ask for at most {MAX_FETCH_BYTES} bytes of chunks at once"
            )
        response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: RECORDS_MEDIA_TYPE})
        await response.prepare(request)
        for digest in dict.fromkeys(hashes):
            source = sources.get(digest)
            if source is None:
                continue
            data = await asyncio.to_thread(read_source, source)
            if data is None:
                await self.chunks.forget_sources([source])
                continue
            await response.write(record_header(digest, len(data)) + data)
            self.metrics.bytes_downloaded.inc(len(data))
            self.metrics.chunks_downloaded.inc()
        await response.write_eof()
        return response


def parse_manifest(body: object, max_size: int) -> Manifest:
    try:
        return Manifest.from_json(body, max_size=max_size)
    except ManifestError as error:
        if "over the limit" in str(error):
            raise ApiError(413, "too_large", str(error)) from None
        raise errors.bad_request(str(error), "bad_manifest") from None


def parse_hashes(body: Mapping[str, Any]) -> list[str]:
    """The ``chunks`` list of a ``missing`` or ``get`` request."""
    hashes = body.get("chunks")
    if not isinstance(hashes, list):
        raise errors.bad_request("'chunks' must be a list of chunk hashes")
    if len(hashes) > MAX_HASHES:
        raise errors.bad_request(f"ask about at most {MAX_HASHES} chunks at once")
    for number, digest in enumerate(hashes):
        if not isinstance(digest, str) or HASH_PATTERN.fullmatch(digest) is None:
            raise errors.bad_request(
                f"chunks[{number}] must be 64 lowercase hex digits (a SHA-256)", "bad_hash"
            )
    return hashes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
