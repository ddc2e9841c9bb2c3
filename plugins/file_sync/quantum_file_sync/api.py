"""The HTTP API under ``/api`` (contract: DESIGN.md, reference: docs/api.md).

Paths inside URLs are taken from the *raw* request path and percent-decoded here, strictly
(aiohttp's decoded ``request.path`` keeps invalid UTF-8 escaped), then validated by
:mod:`quantum_file_sync.paths`. Every error is JSON ``{"error", "code"}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import stat
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from quantum_file_sync import block_api, bundle, errors, paths
from quantum_file_sync.block_api import BlockApi
from quantum_file_sync.changelog import ChangeLog
from quantum_file_sync.download import BundleResponse, etag_of, file_response, parse_etags
from quantum_file_sync.errors import ApiError, error_response
from quantum_file_sync.history import History
from quantum_file_sync.history_api import VERSIONS, HistoryApi
from quantum_file_sync.index import walk
from quantum_file_sync.metadata import HashCache, StatKey, file_metadata
from quantum_file_sync.operations import FileMetadata
from quantum_file_sync.paths import PathError, SafeRoot
from quantum_file_sync.recorder import FileMetrics
from quantum_file_sync.request_parsing import (
    boolean,
    field,
    integer,
    json_body,
    json_object,
    source_client,
)
from quantum_file_sync.resumable import ResumableUploads
from quantum_file_sync.storage import Preconditions, Storage
from quantum_file_sync.upload_store import UploadStore

PREFIX = "/api"
FILES = "/files/"
MAX_LIST_LIMIT = 100_000

Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
FileEndpoint = Callable[[web.Request, str], Awaitable[web.StreamResponse]]

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
}


class FileApi:
    def __init__(
        self,
        *,
        root: SafeRoot,
        storage: Storage,
        changelog: ChangeLog,
        hashes: HashCache,
        metrics: FileMetrics,
        enable_upload: bool,
        max_upload_size: int,
        openapi: Mapping[str, Any],
        uploads: UploadStore | None = None,
        history: History | None = None,
    ) -> None:
        self.root = root
        self.storage = storage
        self.changelog = changelog
        self.hashes = hashes
        self.metrics = metrics
        self.enable_upload = enable_upload
        self.max_upload_size = max_upload_size
        self.blocks = BlockApi(storage.chunks, metrics)
        self.uploads: ResumableUploads | None = None
        if uploads is not None:
            self.uploads = ResumableUploads(
                store=uploads,
                storage=storage,
                enable_upload=enable_upload,
                max_upload_size=max_upload_size,
                on_received=metrics.bytes_uploaded.inc,
            )
        self.history = HistoryApi(history, root, hashes, metrics, enable_upload)
        self._openapi = json.dumps(openapi, separators=(",", ":")).encode()
        self._routes: dict[str, dict[str, Endpoint]] = {
            "/list": {hdrs.METH_GET: self.list_files, hdrs.METH_HEAD: self.list_files},
            "/changes": {hdrs.METH_GET: self.changes, hdrs.METH_HEAD: self.changes},
            "/mkdir": {hdrs.METH_POST: self.mkdir},
            "/move": {hdrs.METH_POST: self.move},
            "/bundle": {hdrs.METH_POST: self.bundle},
            "/chunks": {hdrs.METH_POST: self.upload_chunks},
            "/chunks/missing": {hdrs.METH_POST: self.missing_chunks},
            "/chunks/get": {hdrs.METH_POST: self.fetch_chunks},
            "/openapi.json": {hdrs.METH_GET: self.openapi, hdrs.METH_HEAD: self.openapi},
            "/restore": {hdrs.METH_POST: self.history.restore},
            "/trash": {
                hdrs.METH_GET: self.history.trash,
                hdrs.METH_DELETE: self.history.empty_trash,
            },
            "/trash/restore": {hdrs.METH_POST: self.history.restore_trash},
            "/history": {hdrs.METH_GET: self.history.usage},
        }
        self._version_routes: dict[str, FileEndpoint] = {
            hdrs.METH_GET: self.history.versions,
            hdrs.METH_HEAD: self.history.versions,
            hdrs.METH_DELETE: self.history.purge_version,
        }
        self._file_routes: dict[str, FileEndpoint] = {
            hdrs.METH_GET: self.get_file,
            hdrs.METH_HEAD: self.get_file,
            hdrs.METH_PUT: self.put_file,
            hdrs.METH_DELETE: self.delete_file,
        }

    @staticmethod
    def is_public(request: web.Request) -> bool:
        """Endpoints answered without a token (the API description holds no data)."""
        return request.rel_url.raw_path == PREFIX + "/openapi.json"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as error:
            return error.response()
        except PathError as error:
            return error_response(error.status, error.code, error.message)
        except web.HTTPException as error:  # e.g. a body over aiohttp's client_max_size
            code = _STATUS_CODES.get(error.status, "error")
            return error_response(error.status, code, error.reason)

    def describe_options(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add what ``OPTIONS`` of an endpoint announces (tus discovery on ``/api/uploads``)."""
        if self.uploads is not None and self.uploads.owns(request) and response.status == 204:
            self.uploads.describe(response)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.uploads is not None and self.uploads.owns(request):
            return await self.uploads.handle(request, source_client(request))
        route = request.rel_url.raw_path[len(PREFIX) :]
        method = request.method
        for prefix, routes in ((FILES, self._file_routes), (VERSIONS, self._version_routes)):
            if route.startswith(prefix):
                rel = paths.validate(paths.decode_url_path(route[len(prefix) :]))
                file_endpoint = routes.get(method)
                if file_endpoint is None:
                    raise _method_not_allowed(routes)
                return await file_endpoint(request, rel)
        methods = self._routes.get(route)
        if methods is None:
            raise errors.not_found(f"no API endpoint {route or '/'}")
        endpoint = methods.get(method)
        if endpoint is None:
            raise _method_not_allowed(methods)
        return await endpoint(request)

    # -- reads ---------------------------------------------------------------------------------

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        rel = paths.validate(query.get("path", ""), allow_root=True)
        recursive = boolean(query, "recursive", default=True)
        limit = integer(query, "limit", minimum=1, maximum=MAX_LIST_LIMIT)
        after = _decode_cursor(query["cursor"], rel) if "cursor" in query else None
        epoch = self.changelog.epoch
        seq = await self.changelog.head()  # before the walk: replay from here misses nothing
        files, last = await asyncio.to_thread(self._list_page, rel, recursive, after, limit)
        body: dict[str, Any] = {
            "epoch": epoch,
            "seq": seq,
            "files": [metadata.to_json() for metadata in files],
        }
        if last is not None:
            body["next"] = _encode_cursor(last)
        return web.json_response(body)

    def _list_page(
        self, rel: str, recursive: bool, after: tuple[str, ...] | None, limit: int | None
    ) -> tuple[list[FileMetadata], str | None]:
        try:
            with self.root.open_directory(rel):
                pass  # exists, is a directory, reached without links
        except FileNotFoundError:
            raise errors.not_found(f"directory {rel!r} does not exist") from None
        except NotADirectoryError:
            raise errors.conflict(f"{rel!r} is not a directory", "not_a_directory") from None
        files: list[FileMetadata] = []
        for child, st in walk(self.root, rel, recursive=recursive, after=after):
            if limit is not None and len(files) == limit:
                return files, files[-1].path
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = self.hashes.get(StatKey.of(st))
                if digest is None:
                    try:
                        st, digest = self.hashes.hash_file(self.root.join(child))
                    except OSError:
                        continue  # gone or replaced while listing
            files.append(file_metadata(child, st, digest))
        return files, None

    async def get_file(self, request: web.Request, rel: str) -> web.StreamResponse:
        if block_api.wants_manifest(request):
            return await self.blocks.manifest(request, rel)
        download = await asyncio.to_thread(self.storage.open_for_read, rel)
        return file_response(request, rel, download, self.metrics.bytes_downloaded.inc)

    async def bundle(self, request: web.Request) -> web.StreamResponse:
        """Many files in one streamed response (format: :mod:`quantum_file_sync.bundle`)."""
        body = await json_object(request, limit=bundle.MAX_REQUEST_BYTES)
        requested = body.get("paths")
        if not isinstance(requested, list):
            raise errors.bad_request("'paths' must be a list of paths")
        if len(requested) > bundle.MAX_PATHS:
            raise errors.bad_request(f"a bundle holds at most {bundle.MAX_PATHS} paths")
        rels = list(dict.fromkeys(paths.validate(rel) for rel in requested))
        reader = bundle.BundleReader(self.root, self.hashes, rels)
        return BundleResponse(reader, self.metrics.bytes_downloaded.inc)

    async def changes(self, request: web.Request) -> web.StreamResponse:
        since = integer(request.query, "since", minimum=0) or 0
        epoch = request.query.get("epoch")
        events = await self.changelog.replay(epoch, since) if epoch else None
        current = self.changelog.epoch
        head = await self.changelog.head()
        if events:
            head = max(head, events[-1].seq)
        operations = ",".join(event.frame for event in events or ())
        body = (
            f'{{"epoch":{json.dumps(current)},"seq":{head},'
            f'"recovered":{"true" if events is not None else "false"},'
            f'"operations":[{operations}]}}'
        )
        return web.Response(text=body, content_type="application/json")

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._openapi, content_type="application/json")

    # -- writes --------------------------------------------------------------------------------

    def _require_upload(self) -> None:
        if not self.enable_upload:
            raise errors.forbidden("this server is read-only (enable_upload is false)")

    async def put_file(self, request: web.Request, rel: str) -> web.StreamResponse:
        self._require_upload()
        preconditions = Preconditions(
            if_match=parse_etags(request.headers.get(hdrs.IF_MATCH)),
            if_none_match=parse_etags(request.headers.get(hdrs.IF_NONE_MATCH)),
        )
        if block_api.is_manifest_upload(request):
            body = await json_body(request, limit=block_api.MAX_MANIFEST_BYTES)
            manifest = block_api.parse_manifest(body, self.max_upload_size)
            result = await self.storage.put_manifest(
                rel, manifest, preconditions, source_client(request)
            )
        else:
            if request.content_length is not None and request.content_length > self.max_upload_size:
                raise ApiError(
                    413, "too_large", f"uploads are limited to {self.max_upload_size} bytes"
                )
            result = await self.storage.put(
                rel,
                request.content.iter_any(),
                preconditions,
                source_client(request),
                self.max_upload_size,
                self.metrics.bytes_uploaded.inc,
            )
        metadata = result.metadata
        return web.json_response(
            metadata.to_json(),
            status=201 if result.created else 200,
            headers={hdrs.ETAG: etag_of(metadata.hash or "")},
        )

    async def missing_chunks(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request, limit=block_api.MAX_REQUEST_BYTES)
        hint = body.get("path")
        rel = None if hint is None else paths.validate(field(body, "path"))
        return await self.blocks.missing(block_api.parse_hashes(body), rel)

    async def upload_chunks(self, request: web.Request) -> web.StreamResponse:
        self._require_upload()
        return await self.blocks.upload(request)

    async def fetch_chunks(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request, limit=block_api.MAX_REQUEST_BYTES)
        return await self.blocks.fetch(request, block_api.parse_hashes(body))

    async def delete_file(self, request: web.Request, rel: str) -> web.StreamResponse:
        self._require_upload()
        if_match = parse_etags(request.headers.get(hdrs.IF_MATCH))
        recursive = boolean(request.query, "recursive", default=True)
        await self.storage.delete(rel, if_match, source_client(request), recursive=recursive)
        return web.Response(status=204)

    async def mkdir(self, request: web.Request) -> web.StreamResponse:
        self._require_upload()
        body = await json_object(request)
        rel = paths.validate(field(body, "path"))
        result = await self.storage.mkdir(rel, source_client(request))
        return web.json_response(result.metadata.to_json(), status=201 if result.created else 200)

    async def move(self, request: web.Request) -> web.StreamResponse:
        self._require_upload()
        body = await json_object(request)
        source = paths.validate(field(body, "from"))
        target = paths.validate(field(body, "to"))
        metadata = await self.storage.move(source, target, source_client(request))
        return web.json_response(metadata.to_json())


# -- request parsing ---------------------------------------------------------------------------


def _method_not_allowed(methods: Mapping[str, object]) -> ApiError:
    allowed = ", ".join(sorted(methods))
    return ApiError(405, "method_not_allowed", f"allowed methods: {allowed}", {hdrs.ALLOW: allowed})


def _encode_cursor(rel: str) -> str:
    return base64.urlsafe_b64encode(rel.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, directory: str) -> tuple[str, ...]:
    try:
        rel = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        paths.validate(rel)
    except (ValueError, binascii.Error, UnicodeDecodeError, PathError):
        raise errors.bad_request("invalid cursor", "bad_cursor") from None
    if not paths.is_within(rel, directory) or rel == directory:
        raise errors.bad_request("cursor does not belong to this listing", "bad_cursor")
    return tuple(rel.split("/"))
