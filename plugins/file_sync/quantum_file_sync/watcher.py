"""The disk watcher: changes made directly in root become journaled operations, exactly once.

watchfiles reports a batch of ``(change, path)`` pairs ~50 ms after the last change. The batch
is only a list of paths to re-check: each path is *settled* by comparing the disk with the
index, under the path's lock, so a change the API made (already in the index) is not announced
again, and a path that changed twice is announced in its final state. Before settling, paths that
disappeared are paired with paths that appeared — same inode, or same size and SHA-256 — into a
``Move``. A new directory is walked, because files created in it before the OS watch was added
have no events of their own.

Only the node that owns the disk watch (``ChangeLog.owns_disk_watch``) journals what it sees.
With the Redis broker the engine runs a watcher only on the lease holder, starting it with a
rescan when the lease is gained (:class:`quantum_file_sync.engine.LeasedWatch`); the other nodes
follow the journal. A watcher that finds it does not own the lease (lost mid-batch, Redis down)
still brings its index in line with the disk, without publishing.

Quantum's own reads (downloads, bundles, hashing) open files with ``O_NOATIME``
(:mod:`quantum_file_sync.reads`): serving files changes no inode, so it can never give the
watcher work (an attribute change would look like a possible rewrite within one mtime tick, and
cost a re-hash). ``batches`` counts the batches processed; each one is logged at debug level.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from watchfiles import Change, awatch

from quantum_file_sync.changelog import ChangeLog
from quantum_file_sync.index import Entry, Index, syncable, walk
from quantum_file_sync.metadata import HashCache, StatKey, file_metadata
from quantum_file_sync.operations import Create, Delete, Move, Operation, Update
from quantum_file_sync.paths import SafeRoot, ancestors, is_reserved, name_problem
from quantum_file_sync.recorder import Recorder
from quantum_file_sync.storage import TreeLocks

RESTART_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Probe:
    """A path as the watcher found it: ``st`` is ``None`` when it is not there (or not synced)."""

    rel: str
    st: os.stat_result | None
    kinds: frozenset[Change]


class DiskWatcher:
    def __init__(
        self,
        root: SafeRoot,
        index: Index,
        hashes: HashCache,
        locks: TreeLocks,
        recorder: Recorder,
        changelog: ChangeLog,
        logger: Any,
        *,
        step_ms: int = 50,
    ) -> None:
        self.root = root
        self.index = index
        self.hashes = hashes
        self.locks = locks
        self.recorder = recorder
        self.changelog = changelog
        self.logger = logger
        self.step_ms = step_ms
        self._stop = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._start_error: Exception | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches of OS events processed (each one is work: stat and maybe hash its paths)."""
        self.journaled = 0
        """Operations this watcher journaled."""

    async def start(self, *, rescan: bool = False) -> None:
        """Start watching; returns once the OS watch is in place. ``rescan`` first settles
        every path (the index came from a snapshot: find what changed while stopped)."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(rescan), name="quantum-fs-watch"
        )
        await self._first_attempt.wait()
        if self._start_error is not None:
            raise RuntimeError(f"cannot watch {self.root.path}: {self._start_error}")

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    async def _run(self, rescan: bool) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await self._watch(rescan)
                except Exception as error:
                    if not self._first_attempt.is_set():
                        self._start_error = error
                        return
                    self.logger.exception(
                        "disk watcher failed; restarting", root=str(self.root.path)
                    )
                    rescan = True  # what happened while not watching is found by a full rescan
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), RESTART_DELAY)
        finally:
            self._first_attempt.set()

    async def _watch(self, rescan: bool) -> None:
        batches = awatch(
            self.root.path,
            watch_filter=self._wanted,
            step=self.step_ms,
            stop_event=self._stop,
            rust_timeout=1000,
        )
        pending = asyncio.ensure_future(anext(batches))
        try:
            await asyncio.sleep(0)  # the pending step sets up the OS watch synchronously
            failure = pending.exception() if pending.done() else None
            if failure is not None:
                raise failure
            self._first_attempt.set()
            if rescan:
                await self.rescan()
            while True:
                try:
                    batch = await pending
                except StopAsyncIteration:
                    return
                await self.process(batch)
                pending = asyncio.ensure_future(anext(batches))
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await batches.aclose()

    def _wanted(self, _change: Change, path: str) -> bool:
        rel = self.root.relative(path)
        if not rel or is_reserved(rel):
            return False
        return all(name_problem(segment) is None for segment in rel.split("/"))

    async def rescan(self) -> None:
        """Settle every path on disk and in the index (after a gap in watching)."""
        on_disk = await asyncio.to_thread(lambda: [rel for rel, _ in walk(self.root)])
        paths = {rel: {Change.added} for rel in [*on_disk, *self.index.paths()]}
        before = self.journaled
        await self._reconcile(paths)
        self.logger.info(
            "disk rescan finished", paths=len(paths), journaled=self.journaled - before
        )

    async def process(self, batch: Iterable[tuple[Change, str]]) -> None:
        paths: dict[str, set[Change]] = {}
        for change, path in batch:
            rel = self.root.relative(path)
            if rel:
                paths.setdefault(rel, set()).add(change)
        self.batches += 1
        self.logger.debug("disk changes", paths=len(paths), batch=self.batches)
        await self._reconcile(paths)

    async def _reconcile(self, paths: dict[str, set[Change]]) -> None:
        probes = await asyncio.to_thread(self._probe_all, paths)
        publish = self.changelog.owns_disk_watch()
        gone = [p for p in probes if p.st is None and self.index.get(p.rel) is not None]
        new = [p for p in probes if p.st is not None and self.index.get(p.rel) is None]
        for source, target in await self._pair_moves(gone, new):
            await self._move(source, target, publish)
        for probe in sorted(probes, key=lambda p: (p.rel.count("/"), p.rel)):
            await self._settle(probe.rel, probe.kinds, publish)

    def _probe_all(self, paths: dict[str, set[Change]]) -> list[Probe]:
        """Stat every path; a directory that is new to the index brings its whole subtree."""
        probes: dict[str, Probe] = {}
        for rel, kinds in paths.items():
            st = self._probe(rel)
            probes[rel] = Probe(rel, st, frozenset(kinds))
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            entry = self.index.get(rel)
            if entry is None:
                for child, child_st in walk(self.root, rel):
                    probes.setdefault(child, Probe(child, child_st, frozenset({Change.added})))
            elif entry.is_dir and (Change.added in kinds or Change.deleted in kinds):
                # Perhaps another directory now (renamed away, made again): the OS names only
                # the directory, so what is known below it is checked again.
                for child in self.index.subtree(rel)[1:]:
                    probes.setdefault(child, Probe(child, self._probe(child), frozenset(kinds)))
                for child, child_st in walk(self.root, rel):
                    probes.setdefault(child, Probe(child, child_st, frozenset({Change.added})))
        return list(probes.values())

    def _probe(self, rel: str) -> os.stat_result | None:
        path = self.root.join(rel)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not syncable(st):
            return None
        # Reached through a linked directory: not part of the synced tree.
        if os.path.realpath(path.parent) != str(path.parent):
            return None
        return st

    async def _pair_moves(self, gone: list[Probe], new: list[Probe]) -> list[tuple[str, str]]:
        """(source, target) pairs: same inode first, else same size and content for files."""
        pairs: list[tuple[str, str]] = []
        # A rename keeps the inode — and, for a file, its size and mtime: an inode number freed
        # by a delete and reused by a new file does not look like a rename.
        by_inode: dict[tuple[int, int, bool, int, int], str] = {}
        for probe in gone:
            entry = self.index.get(probe.rel)
            if entry is not None:
                by_inode[_identity(entry.key, entry.is_dir)] = probe.rel
        unpaired: list[Probe] = []
        for probe in new:
            assert probe.st is not None
            is_dir = stat.S_ISDIR(probe.st.st_mode)
            source = by_inode.pop(_identity(StatKey.of(probe.st), is_dir), None)
            if source is not None:
                pairs.append((source, probe.rel))
            else:
                unpaired.append(probe)
        by_content: dict[tuple[int, str], str] = {}
        for source in by_inode.values():
            entry = self.index.get(source)
            if entry is not None and not entry.is_dir and entry.hash is not None:
                by_content[(entry.key.size, entry.hash)] = source
        sizes = {size for size, _ in by_content}
        for probe in unpaired:
            assert probe.st is not None
            if stat.S_ISDIR(probe.st.st_mode) or probe.st.st_size not in sizes:
                continue
            digest = await self._hash(probe.rel)
            found = by_content.pop((probe.st.st_size, digest), None) if digest else None
            if found is not None:
                pairs.append((found, probe.rel))
        # Directories first (their move carries their contents), outermost first.
        pairs.sort(key=lambda pair: (not self._is_dir_entry(pair[0]), pair[0].count("/")))
        return pairs

    def _same_contents(self, source: str, target: str) -> bool:
        """Whether every known child of ``source`` is now found under ``target``."""
        prefix = len(source)
        return all(
            self._probe(target + child[prefix:]) is not None
            for child in self.index.children(source)
        )

    def _is_dir_entry(self, rel: str) -> bool:
        entry = self.index.get(rel)
        return entry is not None and entry.is_dir

    async def _hash(self, rel: str, *, refresh: bool = False) -> str | None:
        try:
            _, digest = await asyncio.to_thread(
                self.hashes.hash_file, self.root.join(rel), refresh=refresh
            )
        except OSError:
            return None
        return digest

    async def _move(self, source: str, target: str, publish: bool) -> None:
        async with self.locks.hold(source, target):
            entry = self.index.get(source)
            st = await asyncio.to_thread(self._probe, target)
            if (
                entry is None
                or st is None
                or self.index.get(target) is not None
                or entry.is_dir != stat.S_ISDIR(st.st_mode)
                or await asyncio.to_thread(self._probe, source) is not None
            ):
                return  # the situation changed: settling handles it
            if entry.is_dir and not await asyncio.to_thread(self._same_contents, source, target):
                return  # a reused inode, not a rename
            digest = None
            if not entry.is_dir:
                same_version = entry.key == StatKey.of(st) and entry.hash is not None
                digest = entry.hash if same_version else await self._hash(target)
                if digest is None:
                    return
            self.index.move_tree(source, target)
            self.index.put(target, Entry.of(st, digest))
            await self._publish(Move(source, file_metadata(target, st, digest)), publish)

    async def _settle(self, rel: str, kinds: frozenset[Change], publish: bool) -> None:
        """Bring the index in line with the disk for ``rel``, journaling the difference."""
        async with self.locks.hold(rel):
            st = await asyncio.to_thread(self._probe, rel)
            entry = self.index.get(rel)
            if st is None:
                if entry is not None:
                    self.index.remove_tree(rel)
                    await self._publish(Delete(rel, entry.is_dir), publish)
                return
            await self.recorder.ensure_directories(ancestors(rel), None, "disk", publish=publish)
            is_dir = stat.S_ISDIR(st.st_mode)
            if entry is not None and entry.is_dir != is_dir:
                self.index.remove_tree(rel)
                await self._publish(Delete(rel, entry.is_dir), publish)
                entry = None
            if is_dir:
                if entry is None:
                    self.index.put(rel, Entry.of(st, None))
                    await self._publish(Create(file_metadata(rel, st, None)), publish)
                return
            modified = Change.modified in kinds
            if entry is not None and entry.same_version(st) and not modified:
                return
            # A rewrite within one mtime tick keeps the stat key: re-read instead of trusting it.
            refresh = entry is not None and entry.same_version(st)
            try:
                hashed, digest = await asyncio.to_thread(
                    self.hashes.hash_file, self.root.join(rel), refresh=refresh
                )
            except OSError:
                return  # vanished or replaced meanwhile: its own event follows
            self.index.put(rel, Entry.of(hashed, digest))
            if entry is None:
                await self._publish(Create(file_metadata(rel, hashed, digest)), publish)
            elif (entry.hash or self.hashes.get(entry.key)) != digest:
                await self._publish(Update(file_metadata(rel, hashed, digest)), publish)

    async def _publish(self, operation: Operation, publish: bool) -> None:
        if publish:
            await self.recorder.record(operation, None, "disk")
            self.journaled += 1


def _identity(key: StatKey, is_dir: bool) -> tuple[int, int, bool, int, int]:
    """What a rename preserves: the inode, and for files also size and mtime (a directory's
    size and mtime change with its entries)."""
    if is_dir:
        return (key.dev, key.ino, True, 0, 0)
    return (key.dev, key.ino, False, key.size, key.mtime_ns)
