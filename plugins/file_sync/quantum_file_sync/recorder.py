"""Journaling the changes this node makes, with their metrics, and following other nodes' changes.

Both writers — the HTTP API (origin ``api``) and the disk watcher (origin ``disk``) — commit through
:meth:`Recorder.record` once the change is durable and the index updated. Events committed by
*other* nodes (Redis broker, shared root) are folded into the local index so that this node's
watcher does not broadcast them a second time.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from quantum.metrics import get_or_create
from quantum_file_sync.changelog import ChangeLog, ChangeLogUnavailable
from quantum_file_sync.index import Entry, Index
from quantum_file_sync.metadata import file_metadata
from quantum_file_sync.operations import (
    ChangeEvent,
    Create,
    Delete,
    Move,
    Operation,
    Purge,
    Update,
    operation_paths,
)
from quantum_file_sync.paths import SafeRoot

if TYPE_CHECKING:
    from quantum_file_sync.history import History

Origin = Literal["api", "disk"]
_OWN_EVENTS_REMEMBERED = 4096


@dataclass(frozen=True)
class FileMetrics:
    operations: Counter
    bytes_uploaded: Counter
    bytes_downloaded: Counter
    chunks_uploaded: Counter
    chunks_downloaded: Counter
    journal_seq: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> FileMetrics:
        return cls(
            operations=get_or_create(
                registry,
                Counter,
                "quantum_file_operations",
                "File operations committed to the journal, by operation and origin (api|disk)",
                ["op", "origin"],
            ),
            bytes_uploaded=get_or_create(
                registry, Counter, "quantum_file_bytes_uploaded", "Bytes received by file uploads"
            ),
            bytes_downloaded=get_or_create(
                registry, Counter, "quantum_file_bytes_downloaded", "Bytes sent by file downloads"
            ),
            chunks_uploaded=get_or_create(
                registry,
                Counter,
                "quantum_file_chunks_uploaded",
                "Chunks received by block uploads (POST /api/chunks), verified and stored",
            ),
            chunks_downloaded=get_or_create(
                registry,
                Counter,
                "quantum_file_chunks_downloaded",
                "Chunks sent by block downloads (POST /api/chunks/get)",
            ),
            journal_seq=get_or_create(
                registry, Gauge, "quantum_journal_seq", "Seq of the newest journaled change"
            ),
        )


class Recorder:
    def __init__(
        self,
        changelog: ChangeLog,
        index: Index,
        root: SafeRoot,
        metrics: FileMetrics,
        logger: structlog.stdlib.BoundLogger,
    ) -> None:
        self.changelog = changelog
        self.logger = logger
        self.index = index
        self.root = root
        self.metrics = metrics
        self._own: set[str] = set()
        self._own_order: deque[str] = deque()
        self._in_flight: list[Operation] = []
        self._unlisten: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.history: History | None = None
        """Told of every change this node journals (set once history is open)."""

    async def start(self) -> None:
        self.metrics.journal_seq.set(await self.changelog.head())
        self._unlisten = self.changelog.listen(self._on_event)

    async def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def record(
        self, operation: Operation, source_client: str | None, origin: Origin
    ) -> ChangeEvent | None:
        """Journal and broadcast a change that is already durable on disk and in the index.

        ``None`` when the journal is unavailable: the change stands, and the change log marks
        the gap so catching-up clients are told to reconcile."""
        if self.history is not None and origin == "disk" and isinstance(operation, Update | Delete):
            try:
                await self.history.before_disk_change(operation)
            except Exception:  # history is best effort here: the change happened already
                self.logger.exception("could not keep the version a disk change replaced")
        # Listeners may see the event before commit returns: recognise it by its operation.
        self._in_flight.append(operation)
        try:
            event = await self.changelog.commit(operation, source_client)
        except ChangeLogUnavailable as error:
            self.logger.warning(
                "change not journaled", path=operation_paths(operation), error=str(error)
            )
            return None
        finally:
            self._in_flight.remove(operation)
        self._remember_own(event.op_id)
        if self.history is not None and isinstance(operation, Move):
            await self.history.follow_move(operation.from_path, operation.metadata.path)
        elif self.history is not None and isinstance(operation, Delete):
            await self.history.follow_delete(operation.path)
        self.metrics.operations.labels(op=operation.kind.lower(), origin=origin).inc()
        self.metrics.journal_seq.set(event.seq)
        return event

    async def ensure_directories(
        self,
        directories: Iterable[str],
        source_client: str | None,
        origin: Origin,
        *,
        publish: bool = True,
    ) -> None:
        """Index and announce each directory of ``directories`` (outermost first) that the
        index does not know as a directory yet. The caller holds the lock of a path below."""
        for directory in directories:
            known = self.index.get(directory)
            if known is not None and known.is_dir:
                continue
            try:
                st = await asyncio.to_thread(os.lstat, self.root.join(directory))
            except OSError:
                return
            if not stat.S_ISDIR(st.st_mode):
                return
            if known is not None:
                self.index.remove_tree(directory)
                if publish:
                    await self.record(Delete(directory, False), source_client, origin)
            self.index.put(directory, Entry.of(st, None))
            if publish:
                metadata = file_metadata(directory, st, None)
                await self.record(Create(metadata), source_client, origin)

    def _remember_own(self, op_id: str) -> None:
        self._own.add(op_id)
        self._own_order.append(op_id)
        if len(self._own_order) > _OWN_EVENTS_REMEMBERED:
            self._own.discard(self._own_order.popleft())

    def _on_event(self, event: ChangeEvent) -> None:
        self.metrics.journal_seq.set(event.seq)
        if event.op_id in self._own or event.operation in self._in_flight:
            return
        task = asyncio.get_running_loop().create_task(self.follow(event.operation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def follow(self, operation: Operation) -> None:
        """Fold another node's change into the index, as far as the disk agrees with it."""
        if isinstance(operation, Purge):
            return
        if isinstance(operation, Delete):
            if await self._lstat(operation.path) is None:
                self.index.remove_tree(operation.path)
            return
        metadata = operation.metadata
        st = await self._lstat(metadata.path)
        if st is None:
            return
        if (
            isinstance(operation, Move)
            and self.index.get(operation.from_path) is not None
            and self.index.get(metadata.path) is None
            and await self._lstat(operation.from_path) is None
        ):
            self.index.move_tree(operation.from_path, metadata.path)
        known = self.index.get(metadata.path)
        if known is not None and known.same_version(st):
            return
        if metadata.is_directory == stat.S_ISDIR(st.st_mode) and (
            metadata.is_directory or st.st_size == metadata.size
        ):
            self.index.put(metadata.path, Entry.of(st, metadata.hash))

    async def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return await asyncio.to_thread(os.lstat, self.root.join(rel))
        except OSError:
            return None
