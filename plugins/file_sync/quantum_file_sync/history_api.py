"""The history endpoints: versions, restores, the trash, purges and usage (docs/history.md)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web

from quantum_file_sync import errors, paths
from quantum_file_sync.chunkstore import Source, read_source
from quantum_file_sync.download import etag_of
from quantum_file_sync.errors import ApiError
from quantum_file_sync.history import History, incomplete_version
from quantum_file_sync.history_store import CursorError, TrashItem
from quantum_file_sync.metadata import HashCache, StatKey, file_metadata
from quantum_file_sync.paths import SafeRoot
from quantum_file_sync.recorder import FileMetrics
from quantum_file_sync.request_parsing import field, integer, json_object, source_client

VERSIONS = "/versions/"
MAX_PAGE = 100
MAX_ID = 2**63 - 1
"""SQLite's largest integer: ids beyond it name nothing (and must not reach the database)."""
MAX_BULK = 100_000
"""Trash items one ``since`` restore (or purge) handles."""
_SEND_AHEAD = 8


class HistoryApi:
    def __init__(
        self,
        history: History | None,
        root: SafeRoot,
        hashes: HashCache,
        metrics: FileMetrics,
        enable_upload: bool,
    ) -> None:
        self._history = history
        self.root = root
        self.hashes = hashes
        self.metrics = metrics
        self.enable_upload = enable_upload

    @property
    def history(self) -> History:
        if self._history is None:
            raise ApiError(404, "history_disabled", "history is disabled on this server")
        return self._history

    def _require_upload(self) -> None:
        if not self.enable_upload:
            raise errors.forbidden("this server is read-only (enable_upload is false)")

    # -- versions ------------------------------------------------------------------------------

    async def versions(self, request: web.Request, rel: str) -> web.StreamResponse:
        """``GET /api/versions/{path}``: the list, or with ``?version=`` its bytes."""
        version_id = _version_id(request.query)
        if version_id is not None:
            return await self._download(request, rel, version_id)
        store = self.history.store
        limit = integer(request.query, "limit", minimum=1, maximum=MAX_PAGE) or MAX_PAGE
        query = f"versions:{rel}"
        before = _cursor(store.parse_cursor, query, request.query.get("cursor"))

        def page() -> tuple[list[tuple[str, int]], dict[str, Any] | None]:
            return store.versions_json(rel, before, limit + 1), self._current(rel)

        # The version objects come as JSON from SQLite: a page of 100 costs ~0.4 ms there,
        # against ~2 ms building and encoding them in Python (bench/history.py).
        found, current = await asyncio.to_thread(page)
        shown = found[:limit]
        cursor = store.cursor(query, shown[-1][1]) if len(found) > limit else None
        body = (
            f'{{"path":{json.dumps(rel)},"current":{json.dumps(current)},'
            f'"versions":[{",".join(text for text, _ in shown)}],"next":{json.dumps(cursor)}}}'
        )
        return web.Response(text=body, content_type="application/json")

    def _current(self, rel: str) -> dict[str, Any] | None:
        try:
            st = os.stat(self.root.resolve_for_read(rel), follow_symlinks=False)
        except (OSError, paths.PathError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return file_metadata(rel, st, self.hashes.get(StatKey.of(st))).to_json()

    async def purge_version(self, request: web.Request, rel: str) -> web.StreamResponse:
        """``DELETE /api/versions/{path}?version=ID``."""
        self._require_upload()
        version_id = _version_id(request.query)
        if version_id is None:
            raise errors.bad_request("version is required")
        await self.history.version_of(rel, version_id)
        purged = await self.history.purge_versions([version_id])
        return web.json_response({"purged": purged.versions})

    async def _download(
        self, request: web.Request, rel: str, version_id: int
    ) -> web.StreamResponse:
        history = self.history
        version = await history.version_of(rel, version_id)
        manifest = version.manifest
        if manifest is None:
            raise incomplete_version(version_id, [])
        with history.reading():
            sources = await history.chunks.sources(c.hash for c in manifest.chunks)
            missing = [c.hash for c in manifest.chunks if c.hash not in sources]
            if missing:
                raise incomplete_version(version_id, missing)
            headers = {
                hdrs.ETAG: etag_of(manifest.hash),
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_DISPOSITION: f'attachment; filename="{_ascii(paths.name(rel))}"',
                hdrs.CACHE_CONTROL: "no-cache",
                hdrs.CONTENT_SECURITY_POLICY: "sandbox",
                "X-Content-Type-Options": "nosniff",
            }
            response = web.StreamResponse(headers=headers)
            response.content_length = manifest.size
            await response.prepare(request)
            if request.method == hdrs.METH_HEAD:
                return response
            # Read a few chunks ahead on threads; each is checked against its hash, so a
            # source changed or purged meanwhile ends the response short instead of lying.
            reads = [_fetch(history, sources, c.hash) for c in manifest.chunks]
            pending = [asyncio.ensure_future(r) for r in reads[:_SEND_AHEAD]]
            queued = _SEND_AHEAD
            try:
                while pending:
                    data = await pending.pop(0)
                    if queued < len(reads):
                        pending.append(asyncio.ensure_future(reads[queued]))
                        queued += 1
                    if data is None:
                        raise ConnectionResetError("a chunk of the version changed while sent")
                    await response.write(data)
                    self.metrics.bytes_downloaded.inc(len(data))
            finally:
                for future in pending:
                    future.cancel()
                for leftover in reads[queued:]:
                    leftover.close()
            await response.write_eof()
            return response

    async def restore(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/restore {"path", "version", "to"?}``."""
        self._require_upload()
        body = await json_object(request)
        rel = paths.validate(field(body, "path"))
        version_id = body.get("version")
        if not isinstance(version_id, int) or not _is_id(version_id):
            raise errors.bad_request("'version' must be a positive integer")
        to = paths.validate(field(body, "to")) if body.get("to") is not None else None
        result = await self.history.restore_version(rel, version_id, to, source_client(request))
        return web.json_response(
            {"metadata": result.metadata.to_json(), "restored_from": version_id},
            headers={hdrs.ETAG: etag_of(result.metadata.hash or "")},
        )

    # -- trash ---------------------------------------------------------------------------------

    async def trash(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/trash``."""
        store = self.history.store
        query = request.query
        prefix = _prefix(query.get("prefix"))
        since = parse_time(query["since"]) if "since" in query else None
        client = query.get("source_client")
        limit = integer(query, "limit", minimum=1, maximum=MAX_PAGE) or MAX_PAGE
        key = f"trash:{prefix}:{since}:{client}"
        before = _cursor(store.parse_cursor, key, query.get("cursor"))

        def page() -> tuple[list[TrashItem], dict[int, bool]]:
            items = store.trash_items(prefix, since, client, before, limit + 1)
            return items, {item.id: store.trash_complete(item.id) for item in items[:limit]}

        items, complete = await asyncio.to_thread(page)
        shown = items[:limit]
        body = {
            "items": [trash_json(item, complete[item.id]) for item in shown],
            "next": store.cursor(key, shown[-1].id) if len(items) > limit else None,
        }
        return web.json_response(body)

    async def restore_trash(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/trash/restore``."""
        self._require_upload()
        body = await json_object(request)
        items = await self._selected(body, require=True)
        to = paths.validate(field(body, "to")) if body.get("to") is not None else None
        if to is not None and len(items) != 1:
            raise errors.bad_request("'to' needs exactly one trash item")
        outcome = await self.history.restore_trash(items, to, source_client(request))
        return web.json_response(
            {
                "restored": [{"id": i, "path": p} for i, p in outcome.restored],
                "conflicts": [conflict.to_json() for conflict in outcome.conflicts],
            }
        )

    async def empty_trash(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /api/trash`` (optionally only some items)."""
        self._require_upload()
        body = await json_object(request) if request.body_exists else {}
        items = await self._selected(body, require=False)
        purged = await self.history.purge_trash([item.id for item in items])
        return web.json_response({"purged": purged.trash})

    async def _selected(self, body: Mapping[str, Any], *, require: bool) -> list[TrashItem]:
        store = self.history.store
        if "ids" in body:
            ids = body["ids"]
            if (
                not isinstance(ids, list)
                or not ids
                or len(ids) > MAX_BULK
                or not all(_is_id(i) for i in ids)
            ):
                raise errors.bad_request(f"'ids' must be a list of 1-{MAX_BULK} positive integers")
            found = await asyncio.to_thread(lambda: [store.trash_item(i) for i in ids])
            unknown = [i for i, item in zip(ids, found, strict=True) if item is None]
            if unknown:
                raise ApiError(
                    404,
                    "trash_not_found",
                    f"no trash item {unknown[0]}",
                    details={"unknown": unknown},
                )
            return [item for item in found if item is not None]
        if require and "since" not in body:
            raise errors.bad_request("give 'ids', or 'since' (with optional 'prefix')")
        since = parse_time(body["since"]) if "since" in body else None
        prefix_value = body.get("prefix")
        if prefix_value is not None and not isinstance(prefix_value, str):
            raise errors.bad_request("'prefix' must be a string")
        prefix = _prefix(prefix_value)
        client = body.get("source_client")
        if client is not None and not isinstance(client, str):
            raise errors.bad_request("'source_client' must be a string")
        return await asyncio.to_thread(store.trash_items, prefix, since, client, None, MAX_BULK)

    # -- usage ---------------------------------------------------------------------------------

    async def usage(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/history``."""
        history = self.history
        usage = await asyncio.to_thread(history.store.usage)
        cap = await asyncio.to_thread(history.cap_bytes)
        return web.json_response(
            {
                "versions": {"count": usage.versions, "bytes": usage.version_bytes},
                "trash": {"count": usage.trash, "bytes": usage.trash_bytes},
                "stored_bytes": usage.stored_bytes,
                "cap_bytes": cap,
                "pending": usage.pending,
            }
        )


async def _fetch(history: History, sources: Mapping[str, Source], digest: str) -> bytes | None:
    """A chunk of a version being sent; where it was read from may have moved meanwhile (the
    compactor made a pinned version's chunks blobs and dropped the pin): look once more."""
    data = await asyncio.to_thread(read_source, sources[digest])
    if data is None:
        fresh = await history.chunks.sources([digest])
        if digest in fresh:
            data = await asyncio.to_thread(read_source, fresh[digest])
    return data


def trash_json(item: TrashItem, complete: bool) -> dict[str, Any]:
    return {
        "id": item.id,
        "path": item.path,
        "is_directory": item.is_dir,
        "files": item.files,
        "size": item.size,
        "hash": item.hash,
        "deleted": precise_time(item.deleted),
        "source_client": item.source_client,
        "origin": item.origin,
        "complete": complete,
    }


def precise_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> float:
    """RFC 3339 or Unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return seconds
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    raise errors.bad_request("'since' must be an RFC 3339 time or Unix seconds")


def _version_id(query: Mapping[str, str]) -> int | None:
    return integer(query, "version", minimum=1, maximum=MAX_ID)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def _prefix(value: str | None) -> str | None:
    if value is None or value in ("", "/"):
        return None
    return paths.validate(value.strip("/"))


def _cursor(parse: Any, query: str, token: str | None) -> int | None:
    if token is None:
        return None
    try:
        return int(parse(query, token))
    except (CursorError, ValueError):
        raise errors.bad_request("invalid cursor", "bad_cursor") from None


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
