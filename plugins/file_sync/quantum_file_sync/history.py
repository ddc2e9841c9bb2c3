"""File history as a service: restoring, purging, the compactor and retention (docs/history.md).

:class:`~quantum_file_sync.history_store.HistoryStore` keeps the files and the catalogue;
this module puts them to work with the rest of the engine. A restore is an ordinary commit
through :class:`~quantum_file_sync.storage.Storage` — a manifest assembled from wherever the
chunks are, or a trashed file renamed back — so it is journaled and broadcast like any change
and replaces the live version only after keeping it. Purges are journaled as ``Purge``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from quantum_file_sync import errors
from quantum_file_sync.chunks import Manifest
from quantum_file_sync.chunkstore import ChunkStore
from quantum_file_sync.history_store import HistoryStore, Purged, TrashItem, Version
from quantum_file_sync.index import Index
from quantum_file_sync.metadata import HashCache
from quantum_file_sync.operations import Delete, Operation, Purge, Update
from quantum_file_sync.options import HistorySettings
from quantum_file_sync.paths import SafeRoot, is_within
from quantum_file_sync.recorder import Recorder
from quantum_file_sync.retention import RetentionPolicy
from quantum_file_sync.storage import Preconditions, Result, Storage

MAX_PURGE_PATHS = 1000
RESTORE_CONCURRENCY = 8
"""Trash items restored at once (each is a few small disk and journal writes)."""
_ANYTHING = Preconditions(if_none_match=frozenset({"*"}))
"""Restores into the trash item's place never overwrite."""


@dataclass(frozen=True, slots=True)
class Conflict:
    id: int
    path: str
    code: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "code": self.code, "error": self.error}


@dataclass(frozen=True, slots=True)
class TrashRestore:
    restored: list[tuple[int, str]]
    conflicts: list[Conflict]


class History:
    def __init__(
        self,
        root: SafeRoot,
        settings: HistorySettings,
        store: HistoryStore,
        chunks: ChunkStore,
        index: Index,
        hashes: HashCache,
        recorder: Recorder,
    ) -> None:
        self.root = root
        self.settings = settings
        self.store = store
        self.chunks = chunks
        self.index = index
        self.hashes = hashes
        self.recorder = recorder
        self.storage: Storage
        self.policy = RetentionPolicy(settings.keep_at_least, settings.max_age)
        self._logger = structlog.get_logger("quantum.file_sync.history")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reading = 0
        """Version downloads streaming now: blobs are not collected under them."""
        self._copies: dict[str, Manifest] = {}
        """Small live files to keep a copy of (their newest known version)."""

    async def start(self, storage: Storage) -> None:
        self.storage = storage
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._compact_forever(), name="quantum-history-compactor"),
            loop.create_task(self._retain_forever(), name="quantum-history-retention"),
        ]
        self.wake()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def wake(self) -> None:
        """Something was kept: compact it (and check the cap) soon."""
        self._wake.set()

    # -- the compactor ------------------------------------------------------------------------

    async def _compact_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.compact_pending()
                await self.copy_pending()
                if self._reading == 0:
                    await asyncio.to_thread(self.store.collect_garbage)
                await self.enforce_cap()
            except Exception:
                self._logger.exception("history compaction failed; retrying later")
                await asyncio.sleep(5.0)
                self._wake.set()

    async def compact_pending(self) -> None:
        # Every pending pin's manifest is known before any is compacted, so a chunk an older
        # version shares with a newer pin is found there. A version replaced while this pass
        # runs may have been pinned before its manifest was known: start again (a few times,
        # then go on: copying such a chunk is only a waste of space, never a loss).
        for attempt in range(4):
            pending = await self._pending_with_manifests()
            seen = {version.id for version in pending}
            for version in pending:
                await self.chunks.manifest(version.path)  # its successor, where its chunks are
                newer = await asyncio.to_thread(self.store.pending)
                if attempt < 3 and any(other.id not in seen for other in newer):
                    break
                await asyncio.to_thread(
                    self.store.compact, version, self.chunks.live_holding, self.chunks.blob_path
                )
            else:
                break
        for version in await asyncio.to_thread(self.store.unsettled):
            await self.chunks.manifest(version.path)
            await asyncio.to_thread(
                self.store.settle, version, self.chunks.live_holding, self.chunks.blob_path
            )

    async def _pending_with_manifests(self) -> list[Version]:
        pending: list[Version] = []
        for version in await asyncio.to_thread(self.store.pending):
            try:
                pending.append(await asyncio.to_thread(self.store.ensure_manifest, version))
            except FileNotFoundError:
                continue  # restored or purged meanwhile
        return pending

    async def copy_pending(self) -> None:
        while self._copies:
            rel = next(iter(self._copies))
            manifest = self._copies.pop(rel)
            await asyncio.to_thread(self.store.keep_copy, rel, self.root.join(rel), manifest)

    def saw_live(self, rel: str, manifest: Manifest) -> None:
        """The chunk store knows the live file ``rel`` is ``manifest`` now: keep a copy of it
        when it is small enough (``copies_below``)."""
        if 0 < manifest.size <= self.settings.copies_below:
            self._copies[rel] = manifest
            self.wake()

    # -- changes the watcher saw (their old content is gone already) --------------------------

    async def before_disk_change(self, operation: Operation) -> None:
        """Keep what can be kept of what a change made on disk replaced or deleted."""
        if isinstance(operation, Update):
            rel = operation.metadata.path
            known = (await self.chunks.known(rel)).get(rel)
            if known is None or known[1].hash == operation.metadata.hash:
                return  # never cut, or cut after the change already: nothing known to keep
            key, manifest = known
            await asyncio.to_thread(self.store.record_lost, rel, key, manifest, "update", None)
            self.wake()
        elif isinstance(operation, Delete):
            lost = await self.chunks.known(operation.path)
            if lost or operation.is_directory:
                await asyncio.to_thread(
                    self.store.record_lost_trash, operation.path, operation.is_directory, lost
                )
                self.wake()

    async def follow_move(self, source: str, target: str) -> None:
        await asyncio.to_thread(self.store.follow_move, source, target)

    async def follow_delete(self, rel: str) -> None:
        self._copies = {path: m for path, m in self._copies.items() if not is_within(path, rel)}
        await asyncio.to_thread(self.store.drop_copies, rel)

    # -- restoring -----------------------------------------------------------------------------

    async def version_of(self, path: str, version_id: int) -> Version:
        version = await asyncio.to_thread(self.store.version, version_id)
        if version is None or version.path != path:
            raise errors.ApiError(404, "version_not_found", f"{path!r} has no version {version_id}")
        try:
            return await asyncio.to_thread(self.store.ensure_manifest, version)
        except FileNotFoundError:
            raise errors.ApiError(
                404, "version_not_found", f"version {version_id} was purged"
            ) from None

    async def restore_version(
        self, path: str, version_id: int, to: str | None, source_client: str | None
    ) -> Result:
        version = await self.version_of(path, version_id)
        manifest = version.manifest
        if manifest is None:
            raise incomplete_version(version_id, [])
        preconditions = _ANYTHING if to is not None else Preconditions()
        try:
            return await self.storage.put_manifest(
                to or path, manifest, preconditions, source_client
            )
        except errors.ApiError as error:
            if error.code == "missing_chunks":
                raise incomplete_version(
                    version_id, (error.details or {}).get("missing", [])
                ) from None
            if error.code == "precondition_failed":
                raise errors.conflict(f"{to!r} already exists", "exists") from None
            raise

    async def restore_trash(
        self, items: Sequence[TrashItem], to: str | None, source_client: str | None
    ) -> TrashRestore:
        """Restore trash items, several at once (a mass-delete undo is thousands of them).
        Items of one path go one after the other, newest first: the last deletion wins, the
        older ones find the path taken."""
        restored: list[tuple[int, str]] = []
        conflicts: list[Conflict] = []
        by_path: dict[str, list[TrashItem]] = {}
        for item in sorted(items, key=lambda item: -item.id):
            by_path.setdefault(to or item.path, []).append(item)
        queue = list(by_path.values())

        async def work() -> None:
            while queue:
                for item in queue.pop():
                    outcome = await self._restore_item(item, to, source_client)
                    conflicts.extend(outcome.conflicts)
                    restored.extend(outcome.restored)

        await asyncio.gather(*(work() for _ in range(RESTORE_CONCURRENCY)))
        restored.sort()
        conflicts.sort(key=lambda conflict: (conflict.id, conflict.path))
        return TrashRestore(restored, conflicts)

    async def _restore_item(
        self, item: TrashItem, to: str | None, source_client: str | None
    ) -> TrashRestore:
        conflicts: list[Conflict] = []
        destination = to or item.path
        done: list[int] = []
        for version in await asyncio.to_thread(self.store.trash_versions, item.id):
            target = destination + version.recorded_path[len(item.path) :]
            try:
                await self._restore_file(version, target, source_client)
            except errors.ApiError as error:
                code, message = error.code, error.message
                if code == "precondition_failed" and await self._is_directory(target):
                    code, message = "is_directory", f"{target!r} is a directory"
                elif code == "precondition_failed":
                    code, message = "exists", f"{target!r} already exists"
                conflicts.append(Conflict(item.id, target, code, message))
                continue
            done.append(version.id)
        if item.is_dir:
            await self._restore_directories(item, destination, source_client)
        gone = await asyncio.to_thread(self.store.forget_restored, item.id, done)
        return TrashRestore([(item.id, destination)] if gone else [], conflicts)

    async def _is_directory(self, rel: str) -> bool:
        def check() -> bool:
            try:
                return stat.S_ISDIR(os.stat(self.root.join(rel), follow_symlinks=False).st_mode)
            except OSError:
                return False

        return await asyncio.to_thread(check)

    async def _restore_file(self, version: Version, target: str, source_client: str | None) -> None:
        pin = None if version.pin is None else self.store.base / version.pin
        if pin is None or not await asyncio.to_thread(pin.exists):
            if not version.complete or version.manifest is None:
                raise incomplete_version(version.id, [])
            await self.storage.put_manifest(target, version.manifest, _ANYTHING, source_client)
            return
        digest = version.hash
        if digest is None:
            _, digest = await asyncio.to_thread(self.hashes.hash_file, pin)
        assert digest is not None
        directory = await asyncio.to_thread(
            os.open, pin.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        )
        try:  # renamed back: a trashed file of any size is restored at once
            await self.storage.commit_received(
                target, directory, pin.name, digest, version.size, _ANYTHING, source_client
            )
        finally:
            os.close(directory)

    async def _restore_directories(
        self, item: TrashItem, destination: str, source_client: str | None
    ) -> None:
        """The directories of a trashed tree (empty ones too) are created where they were."""
        top = self.store.trash_dir / str(item.id)

        def directories() -> list[str]:
            if not item.pinned:
                return [""]
            found = [""]
            for directory, names, _ in os.walk(top):
                inside = os.path.relpath(directory, top)
                found.extend(os.path.normpath(os.path.join(inside, n)) for n in names)
            return found

        for inside in await asyncio.to_thread(directories):
            target = f"{destination}/{inside}" if inside else destination
            try:
                await self.storage.mkdir(target, source_client)
            except errors.ApiError:
                continue  # a file is there now: its files were reported as conflicts

    # -- reading a version ---------------------------------------------------------------------

    def reading(self) -> _Reading:
        return _Reading(self)

    # -- purging -------------------------------------------------------------------------------

    async def purge_versions(self, ids: Sequence[int]) -> Purged:
        purged = await asyncio.to_thread(
            self.store.purge_versions, ids, self.chunks.live_holding, self._reading == 0
        )
        await self._announce(purged)
        return purged

    async def purge_trash(self, ids: Sequence[int]) -> Purged:
        purged = await asyncio.to_thread(
            self.store.purge_trash, ids, self.chunks.live_holding, self._reading == 0
        )
        await self._announce(purged)
        return purged

    async def _announce(self, purged: Purged) -> None:
        if purged:
            operation = Purge(purged.paths[:MAX_PURGE_PATHS], purged.versions, purged.trash)
            await self.recorder.record(operation, None, "api")

    # -- retention -----------------------------------------------------------------------------

    def cap_bytes(self) -> int:
        if self.settings.cap_bytes is not None:
            return self.settings.cap_bytes
        fraction = self.settings.cap_fraction or 0.5
        free = shutil.disk_usage(self.root.path).free
        return int(fraction * (free + self.store.stored_bytes()))

    def _is_live(self, path: str) -> bool:
        entry = self.index.get(path)
        return entry is not None and not entry.is_dir

    async def _retain_forever(self) -> None:
        while True:
            try:
                await self.retain()
            except Exception:
                self._logger.exception("history retention failed")
            await asyncio.sleep(self.settings.interval)

    async def retain(self) -> Purged:
        """One pass of thinning and age limits (once per interval among nodes), then the cap."""
        now = time.time()
        claimed = await asyncio.to_thread(self.store.claim_retention, now, self.settings.interval)
        purged = Purged((), 0, 0)
        if claimed:
            versions, trash = await asyncio.to_thread(self.store.expired, now, self.policy)
            purged = _merge(purged, await self.purge_trash(trash) if trash else purged)
            purged = _merge(purged, await self.purge_versions(versions) if versions else purged)
        return _merge(purged, await self.enforce_cap())

    async def enforce_cap(self) -> Purged:
        """Purge oldest first until history fits under the cap (never the newest version of a
        live file)."""
        cap = await asyncio.to_thread(self.cap_bytes)
        if await asyncio.to_thread(self.store.stored_bytes) <= cap:
            return Purged((), 0, 0)
        purged = await asyncio.to_thread(self._purge_over_cap, cap)
        await self._announce(purged)
        return purged

    def _purge_over_cap(self, cap: int) -> Purged:
        """Blocking: purge candidates one at a time, checking the size after each, so no more
        goes than the cap needs. Blobs are collected once at the end (not while a download
        streams), so the size checked leaves out blobs no version names any more."""
        total = Purged((), 0, 0)
        for kind, item_id in list(self.store.oldest_first(self._is_live)):
            if self.store.stored_bytes(garbage=False) <= cap:
                break
            if kind == "trash":
                purged = self.store.purge_trash([item_id], self.chunks.live_holding, False)
            else:
                purged = self.store.purge_versions([item_id], self.chunks.live_holding, False)
            total = _merge(total, purged)
        if total and self._reading == 0:
            self.store.collect_garbage()
        return total


class _Reading:
    """While a version is being downloaded, purges leave the blobs it reads in place."""

    def __init__(self, history: History) -> None:
        self.history = history

    def __enter__(self) -> None:
        self.history._reading += 1

    def __exit__(self, *_: object) -> None:
        self.history._reading -= 1
        if self.history._reading == 0:
            self.history.wake()  # collects what purges left meanwhile


def _merge(first: Purged, second: Purged) -> Purged:
    paths = tuple(dict.fromkeys([*first.paths, *second.paths]))
    return Purged(paths, first.versions + second.versions, first.trash + second.trash)


def incomplete_version(version_id: int, missing: list[str]) -> errors.ApiError:
    return errors.ApiError(
        409,
        "version_incomplete",
        f"version {version_id} cannot be rebuilt: {len(missing) or 'some'} of its chunks are "
        "gone (an edit made on disk behind Quantum's back)",
        details={"missing": missing},
    )
