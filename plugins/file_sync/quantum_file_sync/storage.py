"""Changes to root through the API: atomic streamed uploads, delete, mkdir and move.

An upload is streamed into a temp file under ``ROOT/.quantum/tmp/<instance>/`` (same
filesystem, reserved so neither listings nor the watcher see it), hashed while streaming and
fsync'd. Only then the commit runs, under a :class:`TreeLocks` lock of the path: preconditions
are checked against the file as it is *now*, the temp file is renamed into place and the
directory fsync'd, the index updated, and finally the change journaled. The commit is shielded
from cancellation: once a body is fully received, the change completes.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import os
import shutil
import sqlite3
import stat
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from quantum_file_sync import errors
from quantum_file_sync.assembly import SourcesChanged, WrongHash, assemble
from quantum_file_sync.chunks import Manifest
from quantum_file_sync.chunkstore import ChunkStore, Source, read_source
from quantum_file_sync.history_store import HistoryStore, Known
from quantum_file_sync.index import Entry, Index, syncable, walk
from quantum_file_sync.metadata import HashCache, StatKey, file_metadata
from quantum_file_sync.operations import Create, Delete, FileMetadata, Move, Update
from quantum_file_sync.paths import PathError, SafeRoot, ancestors, is_within, name, parent
from quantum_file_sync.reads import open_for_reading
from quantum_file_sync.recorder import Recorder

T = TypeVar("T")
TEMP_DIR = (".quantum", "tmp")


class TreeLocks:
    """Locks on paths where a path conflicts with itself, its ancestors and its descendants.

    So two changes to one file are serialised, and so is a change to a file with the deletion
    or move of a directory containing it; unrelated paths proceed in parallel. Release never
    awaits, so a cancelled holder cannot leave a lock behind."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()
        self._waiters: list[asyncio.Future[None]] = []

    def _free(self, paths: Iterable[str]) -> bool:
        return not any(
            is_within(path, held) or is_within(held, path) for path in paths for held in self._held
        )

    @asynccontextmanager
    async def hold(self, *paths: str) -> AsyncIterator[None]:
        while not self._free(paths):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with suppress(ValueError):
                    self._waiters.remove(waiter)
        self._held.update(paths)
        try:
            yield
        finally:
            self._held.subtract(paths)
            self._held += Counter()  # drop zero counts
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class TempArea:
    """This instance's directory for partial uploads, locked with ``flock`` while it lives.

    Opening removes the directories of instances that are gone (their lock is free), so a
    crash or ``kill -9`` leaves nothing behind after the next start, while another live
    instance on the same root (a reload, a second node) keeps its uploads."""

    def __init__(self, root: SafeRoot) -> None:
        self.base = root.path.joinpath(*TEMP_DIR)
        self._fd: int | None = None
        self._name = uuid.uuid4().hex

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("temp area is not open")
        return self._fd

    def open(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.base):
            if entry.is_dir(follow_symlinks=False):
                self._remove_if_abandoned(entry.path)
            else:
                with suppress(OSError):
                    os.unlink(entry.path)
        own = self.base / self._name
        own.mkdir()
        self._fd = os.open(own, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @staticmethod
    def _remove_if_abandoned(path: str) -> None:
        if _held(path) is False:  # not a live instance's
            shutil.rmtree(path, ignore_errors=True)

    def others_alive(self) -> bool:
        """Whether another running instance has its temp area here (on a shared root)."""
        own = self.base / self._name
        return any(
            entry.path != str(own) and _held(entry.path)
            for entry in os.scandir(self.base)
            if entry.is_dir(follow_symlinks=False)
        )

    def close(self) -> None:
        if self._fd is None:
            return
        shutil.rmtree(self.base / self._name, ignore_errors=True)
        os.close(self._fd)
        self._fd = None

    def create(self) -> tuple[int, str]:
        temp = uuid.uuid4().hex + ".part"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # read back to check its hash
        return os.open(temp, flags, 0o666, dir_fd=self.fd), temp

    def discard(self, temp: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=self.fd)


@dataclass(frozen=True, slots=True)
class Preconditions:
    """``If-Match`` / ``If-None-Match`` as sets of SHA-256 hex digests or ``"*"``."""

    if_match: frozenset[str] | None = None
    if_none_match: frozenset[str] | None = None

    @property
    def need_hash(self) -> bool:
        return any(tags and "*" not in tags for tags in (self.if_match, self.if_none_match))

    def check(self, current: Current | None) -> None:
        is_file = current is not None and not current.is_dir
        digest = current.digest if current is not None else None
        if self.if_match is not None and (
            not is_file or ("*" not in self.if_match and digest not in self.if_match)
        ):
            raise errors.precondition_failed("If-Match does not match the current file")
        if self.if_none_match is not None and current is not None:
            if "*" in self.if_none_match:
                raise errors.precondition_failed("the file already exists (If-None-Match: *)")
            if is_file and digest in self.if_none_match:
                raise errors.precondition_failed("If-None-Match matches the current file")


@dataclass(frozen=True, slots=True)
class Current:
    """What is at a path right now (``digest`` only when asked for)."""

    is_dir: bool
    digest: str | None


@dataclass(frozen=True, slots=True)
class Result:
    created: bool
    metadata: FileMetadata


@dataclass(frozen=True, slots=True)
class Upload:
    temp: str
    digest: str
    size: int
    directory_fd: int | None = None
    """Where ``temp`` is (``None``: the temp area)."""


@dataclass(frozen=True, slots=True)
class Download:
    fd: int
    st: os.stat_result
    digest: str


class Storage:
    def __init__(
        self,
        root: SafeRoot,
        index: Index,
        hashes: HashCache,
        locks: TreeLocks,
        temp: TempArea,
        recorder: Recorder,
        chunks: ChunkStore,
        history: HistoryStore | None = None,
        on_kept: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.index = index
        self.hashes = hashes
        self.locks = locks
        self.temp = temp
        self.recorder = recorder
        self.chunks = chunks
        self.history = history
        """Where replaced and deleted files are kept (``None``: history is off)."""
        self._on_kept = on_kept

    # -- reads ---------------------------------------------------------------------------------

    def open_for_read(self, rel: str) -> Download:
        """Open a file for download (links are followed only inside root). Blocking; the
        caller owns ``Download.fd``."""
        real = self.root.resolve_for_read(rel)
        try:
            fd = open_for_reading(real)
        except FileNotFoundError:
            raise errors.not_found(f"{rel!r} does not exist") from None
        except OSError as error:
            raise PathError("path changed while being opened") from error
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise errors.conflict(f"{rel!r} is a directory", "is_directory")
            if not stat.S_ISREG(st.st_mode):
                raise errors.not_found(f"{rel!r} is not a regular file")
            st, digest = self.hashes.hash_fd(fd)
            return Download(fd, st, digest)
        except BaseException:
            os.close(fd)
            raise

    # -- upload --------------------------------------------------------------------------------

    async def put(
        self,
        rel: str,
        body: AsyncIterator[bytes],
        preconditions: Preconditions,
        source_client: str | None,
        max_size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Result:
        upload = await self._receive(body, max_size, on_bytes)
        try:
            return await _shielded(self._commit_upload(rel, upload, preconditions, source_client))
        finally:
            self.temp.discard(upload.temp)

    async def put_manifest(
        self,
        rel: str,
        manifest: Manifest,
        preconditions: Preconditions,
        source_client: str | None,
    ) -> Result:
        """Commit a file built from chunks the server has (uploaded, or in any live file),
        with the same preconditions, atomicity and journaling as :meth:`put`."""
        await self._check_target(rel, preconditions)  # before any work; again under the lock
        try:
            upload = await self._assemble(rel, manifest)
        except errors.ApiError as error:
            if error.code == "missing_chunks":  # a commit meanwhile may have replaced the file
                await self._check_target(rel, preconditions)
            raise
        recorded = False

        async def record(installed: StatKey) -> None:
            # Before the change is journaled: whoever hears of it (the background cutter, the
            # history compactor, a client asking for the manifest) finds it known and does not
            # cut the new file again. Recorded under the identity of the file built here (a
            # rename keeps it), and only while that file is still at rel.
            nonlocal recorded
            recorded = await self.chunks.record_live(rel, installed, manifest)

        try:
            result = await _shielded(
                self._commit_upload(rel, upload, preconditions, source_client, record)
            )
        finally:
            self.temp.discard(upload.temp)
        if recorded:
            await self.chunks.drop_blobs(ref.hash for ref in manifest.chunks)
        return result

    async def commit_received(
        self,
        rel: str,
        directory_fd: int,
        name: str,
        digest: str,
        size: int,
        preconditions: Preconditions,
        source_client: str | None,
    ) -> Result:
        """Commit a file received elsewhere on root's filesystem (``name`` in the directory
        ``directory_fd``, fsync'd, whose SHA-256 is ``digest``) exactly like :meth:`put`: it is
        renamed into place, so on success it is gone from ``directory_fd``."""
        upload = Upload(name, digest, size, directory_fd)
        return await _shielded(self._commit_upload(rel, upload, preconditions, source_client))

    async def _check_target(self, rel: str, preconditions: Preconditions) -> None:
        """412 / 409 ``is_directory`` for a commit that cannot apply to what is at ``rel``."""
        current = await asyncio.to_thread(self._current, rel, preconditions.need_hash)
        preconditions.check(current)
        if current is not None and current.is_dir:
            raise errors.conflict(f"{rel!r} is a directory", "is_directory")

    async def _assemble(self, rel: str, manifest: Manifest) -> Upload:
        try:
            return await self._assemble_from_sources(rel, manifest)
        except SourcesChanged as changed:
            # A blob a concurrent commit used and dropped is in that commit's file now; a chunk
            # of a changed live file may be elsewhere too: when all are found again, retry once.
            if await self.chunks.missing(changed.hashes):
                raise missing_chunks(changed.hashes) from None
        try:
            return await self._assemble_from_sources(rel, manifest)
        except SourcesChanged as changed:
            raise missing_chunks(changed.hashes) from None

    async def _assemble_from_sources(self, rel: str, manifest: Manifest) -> Upload:
        sources = await self._sources_of(rel, manifest)
        fd, temp = self.temp.create()
        try:
            assembled = await asyncio.to_thread(assemble, manifest, sources, fd)
        except BaseException as error:
            self.temp.discard(temp)
            if isinstance(error, SourcesChanged):
                await self.chunks.forget_sources([sources[h] for h in error.hashes])
                raise
            if isinstance(error, WrongHash):
                raise errors.ApiError(
                    422,
                    "hash_mismatch",
                    f"the chunks make a file whose SHA-256 is {error.actual}, "
                    f"not the manifest's {manifest.hash}",
                ) from None
            if isinstance(error, OSError):
                raise _storage_error(error) from error
            raise
        finally:
            os.close(fd)
        return Upload(temp, assembled.digest, assembled.size)

    async def _sources_of(self, rel: str, manifest: Manifest) -> dict[str, Source]:
        hashes = [ref.hash for ref in manifest.chunks]
        sources = await self.chunks.sources(hashes)
        if len(sources) < len(set(hashes)):
            await self.chunks.manifest(rel)  # the file there now may not have been cut yet
            sources = await self.chunks.sources(hashes)
        missing = [digest for digest in hashes if digest not in sources]
        if missing:
            raise missing_chunks(missing)
        for ref in manifest.chunks:  # a SHA-256 names one size: the manifest is wrong, or a blob
            source = sources[ref.hash]
            if source.size == ref.size:
                continue
            if source.live is None and await asyncio.to_thread(read_source, source) is None:
                await self.chunks.forget_sources([source])  # damaged: it is missing after all
                raise missing_chunks([ref.hash])
            raise errors.bad_request(
                f"chunk {ref.hash} is {source.size} bytes, not {ref.size}", "bad_manifest"
            )
        return sources

    async def _receive(
        self, body: AsyncIterator[bytes], max_size: int, on_bytes: Callable[[int], None] | None
    ) -> Upload:
        fd, temp = self.temp.create()
        complete = False
        try:
            digest = hashlib.sha256()
            size = 0
            async for chunk in body:
                size += len(chunk)
                if size > max_size:
                    raise _too_large(max_size)
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                if on_bytes is not None:
                    on_bytes(len(chunk))
            await asyncio.to_thread(os.fsync, fd)
            complete = True
            return Upload(temp, digest.hexdigest(), size)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _storage_error(error) from error  # 507, not a 500
            raise
        finally:
            os.close(fd)
            if not complete:
                self.temp.discard(temp)

    async def _commit_upload(
        self,
        rel: str,
        upload: Upload,
        preconditions: Preconditions,
        source_client: str | None,
        installed: Callable[[StatKey], Awaitable[None]] | None = None,
    ) -> Result:
        async with self.locks.hold(rel):
            current = await asyncio.to_thread(self._current, rel, preconditions.need_hash)
            preconditions.check(current)
            if current is not None and current.is_dir:
                raise errors.conflict(f"{rel!r} is a directory", "is_directory")
            source_fd = self.temp.fd if upload.directory_fd is None else upload.directory_fd
            manifests = await self._known(rel) if current is not None else {}
            st, existed = await asyncio.to_thread(
                self._install, rel, upload.temp, source_fd, manifests, source_client
            )
            if installed is not None:
                await installed(StatKey.of(st))
            self._kept(existed)
            self.hashes.put(StatKey.of(st), upload.digest)
            await self.recorder.ensure_directories(ancestors(rel), source_client, "api")
            known = self.index.get(rel)
            self.index.put(rel, Entry.of(st, upload.digest))
            metadata = file_metadata(rel, st, upload.digest)
            is_update = known is not None and not known.is_dir
            operation = Update(metadata) if is_update else Create(metadata)
            await self.recorder.record(operation, source_client, "api")
            return Result(created=not existed, metadata=metadata)

    def _install(
        self, rel: str, temp: str, source_fd: int, known: Known, source_client: str | None
    ) -> tuple[os.stat_result, bool]:
        with (
            _write_errors(rel),
            _history_errors(),
            self.root.open_directory(parent(rel), create=True) as directory,
        ):
            target = name(rel)
            try:
                before = os.stat(target, dir_fd=directory.fd, follow_symlinks=False)
            except FileNotFoundError:
                existed = False
            else:
                if stat.S_ISDIR(before.st_mode):
                    raise errors.conflict(f"{rel!r} is a directory", "is_directory")
                existed = stat.S_ISREG(before.st_mode)
            # The identity (dev, inode, size, mtime) survives the rename; a stat of the target
            # afterwards could see another node's file renamed in meanwhile.
            installed = os.stat(temp, dir_fd=source_fd, follow_symlinks=False)
            kept = None
            if existed and self.history is not None:
                # The old version is kept before it is replaced; if it cannot be, nothing is.
                entry = self.index.get(rel)
                digest = entry.hash if entry is not None and entry.same_version(before) else None
                found = known.get(rel)
                manifest = found[1] if found and found[0] == StatKey.of(before) else None
                kept = self.history.pin_replaced(
                    directory.fd, target, rel, before, digest, manifest, source_client, "api"
                )
            try:
                os.rename(temp, target, src_dir_fd=source_fd, dst_dir_fd=directory.fd)
            except BaseException:
                if kept is not None:
                    self.history.unpin(kept)  # type: ignore[union-attr]
                raise
            os.fsync(directory.fd)
            return installed, existed

    async def _known(self, rel: str) -> Known:
        """What the chunk store knows of ``rel`` (and below): kept with a replaced version, so
        it need not be cut again."""
        if self.history is None:
            return {}
        return await self.chunks.known(rel)

    def _kept(self, anything: bool) -> None:
        if anything and self.history is not None and self._on_kept is not None:
            self._on_kept()

    # -- delete, mkdir, move -------------------------------------------------------------------

    async def delete(
        self,
        rel: str,
        if_match: frozenset[str] | None,
        source_client: str | None,
        *,
        recursive: bool = True,
    ) -> None:
        """Delete a file, or a directory with its contents; with ``recursive=False`` only an
        empty directory (409 ``not_empty`` otherwise: nothing the caller has not seen is lost)."""
        preconditions = Preconditions(if_match=if_match)

        async def commit() -> None:
            async with self.locks.hold(rel):
                current = await asyncio.to_thread(self._current, rel, preconditions.need_hash)
                if current is None:
                    raise errors.not_found(f"{rel!r} does not exist")
                preconditions.check(current)
                known = await self._known(rel)
                hashes = {
                    path: entry.hash
                    for path in self.index.subtree(rel)
                    if (entry := self.index.get(path)) is not None
                }
                await asyncio.to_thread(self._remove, rel, recursive, known, hashes, source_client)
                self._kept(True)
                self.index.remove_tree(rel)
                await self.recorder.record(Delete(rel, current.is_dir), source_client, "api")

        await _shielded(commit())

    def _remove(
        self,
        rel: str,
        recursive: bool,
        known: Known,
        hashes: dict[str, str | None],
        source_client: str | None,
    ) -> None:
        with (
            _write_errors(rel),
            _history_errors(),
            self.root.open_directory(parent(rel)) as directory,
        ):
            target = name(rel)
            st = os.stat(target, dir_fd=directory.fd, follow_symlinks=False)
            if self.history is not None:
                if (
                    stat.S_ISDIR(st.st_mode)
                    and not recursive
                    and _has_entries(directory.fd, target)
                ):
                    raise errors.conflict(f"{rel!r} is not empty", "not_empty")
                self.history.trash(
                    directory.fd, target, rel, st, known, hashes, source_client, "api"
                )
            elif stat.S_ISDIR(st.st_mode) and not recursive:
                try:
                    os.rmdir(target, dir_fd=directory.fd)
                except OSError as error:
                    if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise errors.conflict(f"{rel!r} is not empty", "not_empty") from None
            elif stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target, dir_fd=directory.fd)
            else:
                os.unlink(target, dir_fd=directory.fd)
            os.fsync(directory.fd)

    async def mkdir(self, rel: str, source_client: str | None) -> Result:
        async def commit() -> Result:
            async with self.locks.hold(rel):
                st, created = await asyncio.to_thread(self._make_directory, rel)
                await self.recorder.ensure_directories([*ancestors(rel), rel], source_client, "api")
                return Result(created=created, metadata=file_metadata(rel, st, None))

        return await _shielded(commit())

    def _make_directory(self, rel: str) -> tuple[os.stat_result, bool]:
        with _write_errors(rel), self.root.open_directory(rel, create=True) as directory:
            return os.fstat(directory.fd), rel in directory.created

    async def move(self, source: str, target: str, source_client: str | None) -> FileMetadata:
        if source == target:
            raise errors.bad_request("source and target are the same path")
        if is_within(target, source):
            raise errors.conflict("cannot move a directory into itself")

        async def commit() -> FileMetadata:
            async with self.locks.hold(source, target):
                st = await asyncio.to_thread(self._rename, source, target)
                await self.recorder.ensure_directories(ancestors(target), source_client, "api")
                known = self.index.get(source)
                digest = None
                if not stat.S_ISDIR(st.st_mode):
                    digest = self.hashes.get(StatKey.of(st))
                    if digest is None:
                        _, digest = await asyncio.to_thread(
                            self.hashes.hash_file, self.root.join(target)
                        )
                metadata = file_metadata(target, st, digest)
                if known is None:  # never announced: announce what arrived instead
                    await self._announce_tree(target, st, digest, source_client)
                    return metadata
                self.index.move_tree(source, target)
                self.index.put(target, Entry.of(st, digest))
                await self.recorder.record(Move(source, metadata), source_client, "api")
                return metadata

        return await _shielded(commit())

    def _rename(self, source: str, target: str) -> os.stat_result:
        try:
            with self.root.open_directory(parent(source)) as source_dir:
                st = os.stat(name(source), dir_fd=source_dir.fd, follow_symlinks=False)
                if not syncable(st):
                    raise FileNotFoundError(source)
                with (
                    _write_errors(target),
                    self.root.open_directory(parent(target), create=True) as target_dir,
                ):
                    with suppress(FileNotFoundError):
                        os.stat(name(target), dir_fd=target_dir.fd, follow_symlinks=False)
                        raise errors.conflict(f"{target!r} already exists", "exists")
                    os.rename(
                        name(source),
                        name(target),
                        src_dir_fd=source_dir.fd,
                        dst_dir_fd=target_dir.fd,
                    )
                    os.fsync(target_dir.fd)
                    if parent(source) != parent(target):
                        os.fsync(source_dir.fd)
                    return os.stat(name(target), dir_fd=target_dir.fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise errors.not_found(f"{source!r} does not exist") from None

    # -- shared ---------------------------------------------------------------------------------

    def _current(self, rel: str, with_hash: bool) -> Current | None:
        """What is at ``rel`` now, without following links. Blocking."""
        try:
            with self.root.open_directory(parent(rel)) as directory:
                st = os.stat(name(rel), dir_fd=directory.fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    return Current(is_dir=True, digest=None)
                if not stat.S_ISREG(st.st_mode):
                    return None
                if not with_hash:
                    return Current(is_dir=False, digest=None)
                fd = open_for_reading(name(rel), dir_fd=directory.fd)
                try:
                    return Current(is_dir=False, digest=self.hashes.hash_fd(fd)[1])
                finally:
                    os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def _announce_tree(
        self, rel: str, st: os.stat_result, digest: str | None, source: str | None
    ) -> None:
        self.index.put(rel, Entry.of(st, digest))
        await self.recorder.record(Create(file_metadata(rel, st, digest)), source, "api")
        if not stat.S_ISDIR(st.st_mode):
            return
        below = await asyncio.to_thread(lambda: list(walk(self.root, rel)))
        for child, child_st in below:
            child_digest = None
            if stat.S_ISREG(child_st.st_mode):
                try:
                    child_st, child_digest = await asyncio.to_thread(
                        self.hashes.hash_file, self.root.join(child)
                    )
                except OSError:
                    continue
            self.index.put(child, Entry.of(child_st, child_digest))
            metadata = file_metadata(child, child_st, child_digest)
            await self.recorder.record(Create(metadata), source, "api")


class _write_errors:
    """Map filesystem errors of a write to API errors (a context manager usable in threads)."""

    def __init__(self, rel: str) -> None:
        self.rel = rel

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if isinstance(error, NotADirectoryError):
            raise errors.conflict(
                f"a parent of {self.rel!r} is not a directory", "not_a_directory"
            ) from error
        if isinstance(error, FileNotFoundError):
            raise errors.not_found(f"{self.rel!r} does not exist") from error
        if isinstance(error, IsADirectoryError):
            raise errors.conflict(f"{self.rel!r} is a directory", "is_directory") from error


def _held(directory: str) -> bool | None:
    """Whether a live instance holds the ``flock`` of its temp area ``directory`` (``None``:
    it cannot be opened). A lock taken here to find out is released at once."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class _history_errors:
    """A version that cannot be kept (a full disk) fails the change with 507: nothing is lost."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
            raise errors.ApiError(
                507, "insufficient_storage", "the server's disk is full (history)"
            ) from error
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _storage_error(error) from error


def _has_entries(directory_fd: int, name: str) -> bool:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory_fd)
    try:
        with os.scandir(fd) as entries:
            return any(True for _ in entries)
    finally:
        os.close(fd)


def missing_chunks(hashes: list[str]) -> errors.ApiError:
    unique = list(dict.fromkeys(hashes))
    return errors.ApiError(
        409,
        "missing_chunks",
        f"the server has {len(unique)} of the manifest's chunks nowhere: upload them first",
        details={"missing": unique},
    )


def _storage_error(error: OSError) -> errors.ApiError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.ApiError(507, "insufficient_storage", "the server's disk is full")
    return errors.ApiError(500, "io_error", f"could not write the file: {error.strerror}")


def _too_large(limit: int) -> errors.ApiError:
    return errors.ApiError(413, "too_large", f"uploads are limited to {limit} bytes")


async def _shielded(operation: Awaitable[T]) -> T:
    """Finish ``operation`` even if the request is cancelled (a client gone mid-commit)."""
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller is gone, the outcome is journaled or not
        raise
