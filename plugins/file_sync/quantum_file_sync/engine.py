"""The per-folder sync engine: journal, index, storage, WebSocket manager and disk watcher.

One engine exists per served folder, shared through the core's usage pool by every
``file_sync`` handler serving that folder (two servers on one root, or the old and the new
handler during a reload). So a folder is watched and journaled exactly once, and open
WebSockets survive a reload that changes only per-handler options (auth, uploads, metrics path).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from quantum_file_sync.changelog import ChangeLog
from quantum_file_sync.chunks import Manifest
from quantum_file_sync.chunkstore import DB_NAME, ChunkStore
from quantum_file_sync.history import History
from quantum_file_sync.history_store import HistoryStore
from quantum_file_sync.index import Entry, Index, scan
from quantum_file_sync.metadata import HashCache, StatKey
from quantum_file_sync.operations import ChangeEvent
from quantum_file_sync.options import (
    BrokerSettings,
    HeartbeatSettings,
    HistorySettings,
    JournalSettings,
    LimitSettings,
    Settings,
    UploadSettings,
)
from quantum_file_sync.paths import SafeRoot
from quantum_file_sync.recorder import FileMetrics, Recorder
from quantum_file_sync.storage import Storage, TempArea, TreeLocks
from quantum_file_sync.upload_store import UploadStore
from quantum_file_sync.watcher import RESTART_DELAY, DiskWatcher
from quantum_file_sync.ws import WsManager, WsSettings

if TYPE_CHECKING:
    from quantum_file_sync.changelog_redis import RedisChangeLog

SNAPSHOT_NAME = "index.json"
SNAPSHOT_EVERY = 30.0

Cleanup = Callable[[], Awaitable[None]]
Prepare = Callable[[bool], Awaitable[None]]
"""Called before the lease holder's watcher starts; ``True`` the first time, at start-up."""
Authenticate = Callable[[str | None], bool]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """The options that shape the shared engine; the rest are per handler."""

    root: Path
    limits: LimitSettings
    heartbeat: HeartbeatSettings
    journal: JournalSettings
    broker: BrokerSettings
    watch: bool
    compression: bool
    uploads: UploadSettings
    history: HistorySettings

    @classmethod
    def of(cls, settings: Settings) -> EngineSettings:
        return cls(
            root=Path(os.path.realpath(settings.root)),
            limits=settings.limits,
            heartbeat=settings.heartbeat,
            journal=settings.journal,
            broker=settings.broker,
            watch=settings.watch,
            compression=settings.compression,
            uploads=settings.uploads,
            history=settings.history,
        )

    def pool_key(self) -> tuple[str, str]:
        return ("file_sync", str(self.root))


class SyncEngine:
    def __init__(self, settings: EngineSettings, logger: Any) -> None:
        self.settings = settings
        self.logger = logger
        self.node_id = uuid.uuid4().hex
        self.metrics: FileMetrics
        self.root: SafeRoot
        self.hashes = HashCache()
        self.changelog: ChangeLog
        self.index: Index
        self.storage: Storage
        self.chunks: ChunkStore
        self.uploads: UploadStore
        self.history: History | None = None
        self.ws: WsManager
        self._authenticators: list[Authenticate] = []
        self._cleanups: list[Cleanup] = []

    @classmethod
    async def start(
        cls, settings: EngineSettings, registry: CollectorRegistry, logger: Any
    ) -> SyncEngine:
        engine = cls(settings, logger)
        try:
            await engine._start(registry)
        except BaseException:
            await engine.close()
            raise
        return engine

    async def _start(self, registry: CollectorRegistry) -> None:
        settings = self.settings
        await asyncio.to_thread(settings.root.mkdir, parents=True, exist_ok=True)
        self.root = root = SafeRoot(settings.root)

        temp = TempArea(root)
        await asyncio.to_thread(temp.open)
        self._on_close(lambda: asyncio.to_thread(temp.close))

        changelog = self._changelog(registry)
        await changelog.open()
        self.changelog = changelog
        self._on_close(changelog.close)

        # A snapshot of the index lets the watcher find what changed on disk while Quantum was
        # stopped. Only with one node per root: nodes sharing a root would race on it; with
        # Redis the journaled state plays its part (JournaledIndex).
        snapshot = root.path / ".quantum" / SNAPSHOT_NAME
        shared = settings.broker.type == "redis"
        use_snapshot = settings.watch and not shared
        loaded = await asyncio.to_thread(Index.load, snapshot) if use_snapshot else None
        if loaded is not None:
            index = loaded
            await _catch_up(index, changelog)
        elif shared:
            index = Index()  # filled by JournaledIndex.load_at_start below
        else:
            index = await asyncio.to_thread(scan, root, self.hashes)
            if use_snapshot:
                # A baseline at once: after a crash before the first periodic save, the next
                # start must still find (and journal) what changed on disk since this one.
                await _save(index, snapshot, changelog)
        self.index = index
        self.metrics = FileMetrics.create(registry)
        recorder = Recorder(changelog, index, root, self.metrics, self.logger)
        await recorder.start()
        self._on_close(recorder.close)
        locks = TreeLocks()
        journaled: JournaledIndex | None = None
        if shared:
            from quantum_file_sync.changelog_redis import RedisChangeLog

            assert isinstance(changelog, RedisChangeLog)
            root_dev = (await asyncio.to_thread(os.stat, root.path)).st_dev
            journaled = JournaledIndex(
                changelog, index, recorder, locks, self.logger, root_dev=root_dev
            )
            await journaled.load_at_start(
                lambda: scan(root, self.hashes).entries(), from_state=settings.watch
            )
        db_name = (
            f"index-{socket.gethostname()}.sqlite3" if settings.broker.type == "redis" else DB_NAME
        )
        self.chunks = chunks = ChunkStore(
            root, self._learn_hash, db_name=db_name, blob_expiry=settings.uploads.expire
        )
        await chunks.open()
        self._on_close(chunks.close)
        unfollow = changelog.listen(lambda event: chunks.follow(event.operation))
        self._on_close(lambda: _call(unfollow))
        history_store: HistoryStore | None = None
        if settings.history.enabled:
            history_store = HistoryStore(root.path)
            others_alive = await asyncio.to_thread(temp.others_alive)
            await asyncio.to_thread(history_store.open, others_alive=others_alive)
            self._on_close(lambda: asyncio.to_thread(history_store.close))
            chunks.more_sources = history_store.sources
            self.history = History(
                root, settings.history, history_store, chunks, index, self.hashes, recorder
            )
        history = self.history
        self.storage = Storage(
            root,
            index,
            self.hashes,
            locks,
            temp,
            recorder,
            chunks,
            history_store,
            history.wake if history is not None else None,
        )
        if history is not None:
            await history.start(self.storage)
            self._on_close(history.close)
            recorder.history = history
            self._on_close(lambda: _forget_history(recorder))
        self.uploads = uploads = UploadStore(root, settings.uploads.expire)
        await asyncio.to_thread(uploads.open)
        reaping = asyncio.get_running_loop().create_task(_reap_uploads(uploads, self.logger))
        self._on_close(lambda: _cancel(reaping))

        self.ws = self._ws_manager(changelog, registry)
        await self.ws.start()
        self._on_close(self.ws.close)

        # Every file is cut once in the background (a file cut in an earlier run only looked
        # up): first listings need no hashing, renames can be matched by content, and a block
        # upload of an edit finds the old version's chunks without waiting for a cut.
        chunks.schedule(rel for rel in index.paths() if not _is_dir(index.get(rel)))

        if settings.watch:

            def new_watcher() -> DiskWatcher:
                return DiskWatcher(
                    root, index, self.hashes, locks, recorder, changelog, self.logger
                )

            if journaled is not None:
                await self._watch_while_leased(new_watcher, journaled.before_watching)
            else:
                watcher = new_watcher()
                if use_snapshot:
                    saving = asyncio.get_running_loop().create_task(
                        _keep_saved(index, snapshot, changelog)
                    )
                    self._on_close(lambda: _save_after(saving, index, snapshot, changelog))
                self._on_close(watcher.close)
                await watcher.start(rescan=loaded is not None)
        self.logger.info(
            "file_sync engine ready",
            files=len(index),
            epoch=changelog.epoch,
            broker=settings.broker.type,
        )

    def _learn_hash(self, rel: str, st: os.stat_result, manifest: Manifest) -> None:
        if self.history is not None:
            self.history.saw_live(rel, manifest)
        key = StatKey.of(st)
        self.hashes.put(key, manifest.hash)
        entry = self.index.get(rel)
        if entry is not None and entry.key == key and entry.hash is None:
            self.index.put(rel, Entry(False, key, manifest.hash))

    async def close(self) -> None:
        """Undo ``start`` in reverse order; tolerates a partial start."""
        while self._cleanups:
            step = self._cleanups.pop()
            try:
                await step()
            except Exception:
                self.logger.exception("file_sync engine cleanup step failed")

    def _on_close(self, step: Cleanup) -> None:
        self._cleanups.append(step)

    async def _watch_while_leased(
        self, new_watcher: Callable[[], DiskWatcher], prepare: Prepare
    ) -> None:
        """Watch the disk only while this node holds the disk-watch lease: the others would
        only repeat its work, and follow the journal instead (see :class:`Recorder`)."""
        from quantum_file_sync.changelog_redis import RedisChangeLog

        changelog = self.changelog
        assert isinstance(changelog, RedisChangeLog)
        switch = LeasedWatch(new_watcher, self.logger, prepare)
        # Listen before asking: the lease may have been taken while the change log opened.
        unlisten = changelog.on_disk_watch_change(switch.set_owned)
        self._on_close(switch.close)
        self._on_close(lambda: _call(unlisten))
        await switch.start(owned=changelog.owns_disk_watch())

    # -- authentication of WebSocket subscribers: the newest handler's rules apply -------------

    def push_authenticator(self, authenticate: Authenticate) -> None:
        self._authenticators.append(authenticate)

    def remove_authenticator(self, authenticate: Authenticate) -> None:
        if authenticate in self._authenticators:
            self._authenticators.remove(authenticate)

    def authenticate(self, token: str | None) -> bool:
        return bool(self._authenticators) and self._authenticators[-1](token)

    # -- construction --------------------------------------------------------------------------

    def _changelog(self, registry: CollectorRegistry) -> ChangeLog:
        journal, broker = self.settings.journal, self.settings.broker
        if broker.type == "redis":
            from quantum_file_sync.changelog_redis import RedisChangeLog

            assert broker.url is not None  # required by the schema
            return RedisChangeLog(
                broker.url,
                key_prefix=broker.key_prefix,
                stream_maxlen=broker.stream_maxlen,
                max_age=journal.max_age,
                node_id=self.node_id,
                registry=registry,
                logger=self.logger,
            )
        from quantum_file_sync.changelog_sqlite import SqliteChangeLog

        journal.path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteChangeLog(journal.path, max_events=journal.max_events, max_age=journal.max_age)

    def _ws_manager(self, changelog: ChangeLog, registry: CollectorRegistry) -> WsManager:
        settings = self.settings
        limits, heartbeat = settings.limits, settings.heartbeat
        ws_settings = WsSettings(
            max_connections=limits.max_connections,
            messages_per_second=limits.messages_per_second,
            message_burst=limits.message_burst,
            send_buffer=limits.send_buffer,
            max_message_size=limits.max_message_size,
            heartbeat_interval=heartbeat.interval,
            heartbeat_timeout=heartbeat.timeout,
            cleanup_interval=heartbeat.cleanup_interval,
            compression=settings.compression,
        )
        return WsManager(changelog, ws_settings, registry, self.logger, self.authenticate)


class JournaledIndex:
    """With the Redis broker, the index starts as the journaled state, and becomes it again
    whenever this node gains the disk-watch lease (:mod:`.journaled_state`).

    So the watcher's rescan compares the disk with what the journal has announced — not with
    this node's own start-up scan — and journals exactly what changed while no node watched,
    also while every node was stopped. A node that gains the lease after another one's rescan
    loads a state that already holds those changes, so they are not announced twice."""

    def __init__(
        self,
        changelog: RedisChangeLog,
        index: Index,
        recorder: Recorder,
        locks: TreeLocks,
        logger: Any,
        *,
        root_dev: int,
    ) -> None:
        self._root_dev = root_dev
        self._changelog = changelog
        self._index = index
        self._recorder = recorder
        self._locks = locks
        self._logger = logger
        self._loaded_at_start = False

    async def load_at_start(
        self, scan_disk: Callable[[], list[tuple[str, Entry]]], *, from_state: bool
    ) -> None:
        """Fill the index from the journaled state (``from_state``) or, when there is none
        yet, from ``scan_disk``; from now on every commit keeps the state."""
        self._changelog.track_state(self._index.get, root_dev=self._root_dev)
        if from_state:
            self._loaded_at_start = await self._load_quietly()
        if not self._loaded_at_start:
            self._index.replace(await asyncio.to_thread(scan_disk))

    async def before_watching(self, initial: bool) -> None:
        """The lease was gained: make the index the journaled state (seed the state from the
        index when it has none) before the watcher's rescan."""
        if initial and self._loaded_at_start:
            return  # loaded moments ago, before any request could change anything
        try:
            # Hold every path: an API change of this node between its index update and its
            # commit would be undone by the load and then announced again by the rescan.
            async with self._locks.hold(""):
                loaded = await self._load()
            if not loaded:
                seeded = await self._changelog.journaled_state.seed(self._index.entries())
                self._logger.info("journaled state seeded", files=len(self._index), done=seeded)
        except (RedisError, OSError) as error:
            self._logger.warning(
                "journaled state unavailable; rescanning against this node's index",
                error=str(error),
            )

    async def _load_quietly(self) -> bool:
        try:
            return await self._load()
        except (RedisError, OSError) as error:
            self._logger.warning("journaled state unavailable at start", error=str(error))
            return False

    async def _load(self) -> bool:
        # The state is read in pages while other nodes may commit: what they commit meanwhile is
        # folded in again once the state is in place (folding is idempotent).
        meanwhile: list[ChangeEvent] = []
        unlisten = self._changelog.listen(meanwhile.append)
        try:
            entries = await self._changelog.journaled_state.load()
        finally:
            unlisten()
        if entries is None:
            return False
        self._index.replace(entries)
        for event in meanwhile:
            await self._recorder.follow(event.operation)
        self._logger.info("index loaded from the journaled state", files=len(self._index))
        return True


class LeasedWatch:
    """Runs a fresh :class:`DiskWatcher` while the lease is held and stops it when lost.

    Each start rescans the disk against the index, which ``prepare`` first makes the
    journaled state: what changed while no node watched (the previous holder died, Redis was
    down, every node was stopped) is announced then. Lease changes arrive as plain callbacks;
    one task applies them in order, so a watcher is never started twice."""

    def __init__(
        self, new_watcher: Callable[[], DiskWatcher], logger: Any, prepare: Prepare | None = None
    ) -> None:
        self._new_watcher = new_watcher
        self._logger = logger
        self._prepare = prepare
        self._owned = False
        self._changed = asyncio.Event()
        self._watcher: DiskWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def watching(self) -> bool:
        return self._watcher is not None

    async def start(self, *, owned: bool) -> None:
        """Apply ``owned`` now (a failure to watch is raised), then follow lease changes."""
        self._owned = owned
        await self._apply(initial=True)
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name="quantum-fs-leased-watch"
        )

    def set_owned(self, owned: bool) -> None:
        self._owned = owned
        self._changed.set()

    async def close(self) -> None:
        if self._task is not None:
            await _cancel(self._task)
            self._task = None
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            await watcher.close()

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._apply()
            except Exception:
                self._logger.exception("disk watcher could not start; retrying")
                await asyncio.sleep(RESTART_DELAY)
                self._changed.set()

    async def _apply(self, *, initial: bool = False) -> None:
        if self._owned and self._watcher is None:
            if self._prepare is not None:
                await self._prepare(initial)
            watcher = self._new_watcher()
            try:
                await watcher.start(rescan=True)
            except BaseException:
                await watcher.close()  # cancelled (or failed) mid-start: leave no watch behind
                raise
            self._watcher = watcher
            self._logger.info("disk watcher started: this node holds the disk-watch lease")
        elif not self._owned and self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            await watcher.close()
            self._logger.info("disk watcher stopped: the disk-watch lease is held elsewhere")


async def _forget_history(recorder: Recorder) -> None:
    recorder.history = None


def _is_dir(entry: Entry | None) -> bool:
    return entry is None or entry.is_dir


async def _call(step: Callable[[], None]) -> None:
    step()


async def _reap_uploads(uploads: UploadStore, logger: Any) -> None:
    """Remove expired resumable uploads, checking a few times per ``expire`` (at most every
    5 min, at least every 0.5 s)."""
    interval = min(max(uploads.expire / 4, 0.5), 300.0)
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await uploads.reap()
        except OSError:
            logger.exception("could not reap expired uploads")
            continue
        if removed:
            logger.info("expired uploads removed", count=len(removed))


async def _keep_saved(index: Index, path: Path, changelog: ChangeLog) -> None:
    saved = index.version
    while True:
        await asyncio.sleep(SNAPSHOT_EVERY)
        if index.version != saved:
            saved = index.version
            await _save(index, path, changelog)


async def _save_after(
    task: asyncio.Task[None], index: Index, path: Path, changelog: ChangeLog
) -> None:
    await _cancel(task)
    await _save(index, path, changelog)


async def _save(index: Index, path: Path, changelog: ChangeLog) -> None:
    # The head is read first: every change journaled up to it is in the index already (the
    # index is updated before the journal), later ones are replayed onto it at the next start.
    position = (changelog.epoch, await changelog.head())
    await asyncio.to_thread(index.save, path, position)


async def _catch_up(index: Index, changelog: ChangeLog) -> None:
    """Apply to a loaded snapshot what the journal holds beyond it, so the start's rescan
    compares the disk with what clients were told: after a crash it journals exactly what was
    not journaled, nothing twice."""
    if index.journal is None or index.journal[0] != changelog.epoch:
        return  # an older snapshot, or a new journal (whose clients re-list anyway)
    events = await changelog.replay(*index.journal)
    for event in events or ():
        index.apply(event.operation)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
