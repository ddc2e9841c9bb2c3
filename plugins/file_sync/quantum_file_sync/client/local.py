"""The local folder: scanning, probing (stat, hash only when needed), safe writes.

Every write goes through here and keeps three promises:

- never outside the folder: paths are canonical relative paths (validated by the caller with the
  server's own rule, :func:`quantum_file_sync.paths.validate`) and no directory on the way may be
  a symbolic link;
- never half a file: downloads land in ``.quantum-sync/tmp/``, are hashed while written, and
  are renamed into place only when the SHA-256 matches (:class:`TempDownload`);
- never over something unseen: :meth:`LocalTree.install`, :meth:`remove_file`, :meth:`move_aside`
  first re-check that the target is still exactly what the decision was based on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import itertools
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from quantum_file_sync.chunks import Manifest, manifest_of_fd
from quantum_file_sync.client.ignore import IgnoreRules
from quantum_file_sync.client.merge import Version
from quantum_file_sync.client.state import BaseEntry
from quantum_file_sync.paths import PathError, validate
from quantum_file_sync.writeback import WRITE_BEHIND, libc_function, start_writeback

CHUNK = 1024 * 1024
INLINE_HASH_LIMIT = 256 * 1024
"""Smaller files are hashed on the event loop: a thread hop would cost more than the hash."""
CHUNKED_HASH_MIN = 1024 * 1024
"""Files this large are hashed by cutting them into chunks (the whole-file hash comes out of
the same pass, and the manifest feeds the chunk index); they are the ones that move by blocks.
Below, cutting costs a few times a plain hash (thread start-up, a second pass)."""
_PID = os.getpid()
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
RACY_WINDOW_NS = 2_000_000_000
"""A file modified this recently may change again within one timestamp tick without its
size or mtime changing ("racy git"): its stat identity is not trusted, it is re-hashed."""


@dataclass(frozen=True, slots=True)
class StatKey:
    """The identity of one version of a local entry: a change of any field means re-hash."""

    is_dir: bool
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        is_dir = stat.S_ISDIR(st.st_mode)
        return cls(is_dir, 0 if is_dir else st.st_size, st.st_mtime_ns, st.st_ino)

    def matches(self, base: BaseEntry) -> bool:
        return (
            self.is_dir == base.is_dir
            and self.size == base.size
            and self.mtime_ns == base.mtime_ns
            and self.inode == base.inode
        )


@dataclass(frozen=True, slots=True)
class LocalState:
    """What the folder holds at a path right now."""

    key: StatKey
    hash: str | None

    @property
    def version(self) -> Version:
        return Version(self.key.is_dir, self.hash)


class Unsupported:
    """A symbolic link, socket, FIFO or device: never synced, never touched."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


class FileUnstable(Exception):
    """The file changed while it was being read: it is still being written."""


class UnsafeLocalPath(Exception):
    """Writing there would leave the folder (a symbolic link on the way) or clobber a
    non-directory standing where a directory is needed."""


class TargetChanged(Exception):
    """The re-check just before a write found the target different from what was decided on."""


Probe = LocalState | Unsupported | None


@functools.lru_cache(maxsize=4096)
def parse_modified(modified: str) -> int | None:
    """RFC 3339 → ns since the epoch (``None`` when unparsable)."""
    try:
        moment = datetime.fromisoformat(modified.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def sha256_file(path: str, expect: StatKey | None = None) -> tuple[str, StatKey]:
    """Hash a regular file without following links; raises :class:`FileUnstable` if it changes
    (or differs from ``expect``) while being read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        before = StatKey.of(os.fstat(fd))
        if expect is not None and before != expect:
            raise FileUnstable(path)
        digest = hashlib.sha256()
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
        after = os.stat(path, follow_symlinks=False)
    finally:
        os.close(fd)
    if StatKey.of(after) != before:
        raise FileUnstable(path)
    return digest.hexdigest(), before


def chunk_file(path: str, expect: StatKey | None = None) -> tuple[Manifest, StatKey]:
    """Cut a regular file into chunks (its manifest, whole-file hash included) without
    following links; raises :class:`FileUnstable` like :func:`sha256_file`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st, manifest = manifest_of_fd(fd)
        before = StatKey.of(st)
        if expect is not None and before != expect:
            raise FileUnstable(path)
        after = os.stat(path, follow_symlinks=False)
    finally:
        os.close(fd)
    if StatKey.of(after) != before or sum(ref.size for ref in manifest.chunks) != before.size:
        raise FileUnstable(path)
    return manifest, before


OnChunked = Callable[[str, StatKey, Manifest], None]
"""Told the manifest of every file the tree cut (the local chunk index)."""


def _ignore_chunked(_path: str, _key: StatKey, _manifest: Manifest) -> None:
    pass


class LocalTree:
    def __init__(
        self,
        root: Path,
        tmp_dir: Path,
        ignore: IgnoreRules,
        on_chunked: OnChunked = _ignore_chunked,
    ) -> None:
        self.root = root
        self.on_chunked = on_chunked
        self._root = str(root)
        self.tmp_dir = tmp_dir
        self.ignore = ignore
        self._hashes: dict[str, tuple[StatKey, str]] = {}
        self._hard_links = True

    def abs(self, rel: str) -> str:
        return f"{self._root}/{rel}"  # ``rel`` is canonical: relative, no ``.`` or ``..``

    def stat_key(self, rel: str) -> StatKey | None:
        try:
            return StatKey.of(os.lstat(self.abs(rel)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.abs(rel))

    # --- reading -----------------------------------------------------------------------------

    async def probe(self, rel: str, base: BaseEntry | None) -> Probe:
        """The current local state of ``rel``; hashes only when the stat identity differs from
        the base (or is too recent to trust)."""
        try:
            st = os.lstat(self.abs(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return LocalState(StatKey.of(st), None)
        if not stat.S_ISREG(st.st_mode):
            return Unsupported("symbolic link" if stat.S_ISLNK(st.st_mode) else "special file")
        key = StatKey.of(st)
        trusted = key.mtime_ns < time.time_ns() - RACY_WINDOW_NS
        if trusted and base is not None and key.matches(base):
            return LocalState(key, base.hash)
        cached = self._hashes.get(rel)
        if trusted and cached is not None and cached[0] == key:
            return LocalState(key, cached[1])
        if key.size <= INLINE_HASH_LIMIT:
            digest, key = sha256_file(self.abs(rel), key)
        elif key.size < CHUNKED_HASH_MIN:
            digest, key = await asyncio.to_thread(sha256_file, self.abs(rel), key)
        else:
            manifest, key = await asyncio.to_thread(chunk_file, self.abs(rel), key)
            digest = manifest.hash
            self.on_chunked(rel, key, manifest)
        self._hashes[rel] = (key, digest)
        return LocalState(key, digest)

    def forget_hash(self, rel: str) -> None:
        self._hashes.pop(rel, None)

    def scan(self) -> tuple[dict[str, StatKey], list[tuple[str, str]]]:
        """Every syncable entry below the root → its stat identity, plus ``(path, reason)`` for
        entries that cannot be synced (links, special files, names the server refuses)."""
        found: dict[str, StatKey] = {}
        skipped: list[tuple[str, str]] = []
        stack = [""]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(self.abs(directory) if directory else self._root))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except PermissionError as exc:
                skipped.append((directory, f"cannot read directory: {exc.strerror}"))
                continue
            for entry in entries:
                rel = f"{directory}/{entry.name}" if directory else entry.name
                if self.ignore.ignores(rel):
                    continue
                problem = name_problem(rel)
                if problem is not None:
                    skipped.append((rel, problem))
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(rel)
                elif not stat.S_ISREG(st.st_mode):
                    kind = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
                    skipped.append((rel, f"{kind}s are not synced"))
                    continue
                found[rel] = StatKey.of(st)
        return found, skipped

    def walk_dir(self, rel: str) -> list[str]:
        """Every syncable path below directory ``rel`` (for a directory that appeared)."""
        found: list[str] = []
        stack = [rel]
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(self.abs(directory)))
            except OSError:
                continue
            for entry in entries:
                child = f"{directory}/{entry.name}"
                if self.ignore.ignores(child) or name_problem(child) is not None:
                    continue
                found.append(child)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(child)
        return found

    # --- writing -----------------------------------------------------------------------------

    def unchanged(self, rel: str, expected: StatKey | None) -> bool:
        """The re-check before a write: is ``rel`` still exactly as decided on?"""
        return self.stat_key(rel) == expected

    def ensure_parents(self, rel: str) -> None:
        """Create the directories leading to ``rel``, refusing to pass through a link."""
        parts = rel.split("/")[:-1]
        current = self._root
        for part in parts:
            current = f"{current}/{part}"
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(current)
                st = os.lstat(current)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeLocalPath(f"{rel}: {current} is a symbolic link")
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeLocalPath(f"{rel}: {current} is not a directory")

    def install(
        self, download: TempDownload, rel: str, expected: StatKey | None, mtime_ns: int | None
    ) -> StatKey:
        """Rename a verified download into place, if ``rel`` is still ``expected``.

        A new file is linked in (``link`` never overwrites: whatever appeared meanwhile wins
        and the decision is made again); an existing one is re-checked, then replaced."""
        self.ensure_parents(rel)
        target = self.abs(rel)
        if mtime_ns is not None and mtime_ns != download.mtime_ns:
            os.utime(download.path, ns=(mtime_ns, mtime_ns))
            download.key = None
        if expected is None and self._hard_links:
            try:
                os.link(download.path, target, follow_symlinks=False)
            except FileExistsError:
                raise TargetChanged(rel) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                self._hard_links = False  # this filesystem cannot: check, then rename
            else:
                os.unlink(download.path)
                download.installed = True
                return self._installed(rel, download)
        if not self.unchanged(rel, expected):
            raise TargetChanged(rel)
        os.replace(download.path, target)
        download.installed = True
        return self._installed(rel, download)

    def _installed(self, rel: str, download: TempDownload) -> StatKey:
        # The temp file's own identity (taken before it was linked in, when nobody else could
        # touch it) rather than a stat of the target: a change made right after the link
        # must not be recorded as the downloaded version.
        key = download.key or StatKey.of(os.lstat(self.abs(rel)))
        self._hashes[rel] = (key, download.hexdigest())
        return key

    def make_dir(self, rel: str) -> StatKey:
        self.ensure_parents(rel)
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.abs(rel))
        key = self.stat_key(rel)
        if key is None or not key.is_dir:
            raise TargetChanged(rel)
        return key

    def remove_file(self, rel: str, expected: StatKey) -> None:
        if not self.unchanged(rel, expected):
            raise TargetChanged(rel)
        os.unlink(self.abs(rel))
        self._hashes.pop(rel, None)

    def remove_dir(self, rel: str) -> bool:
        """Remove an empty directory; ``False`` when it still has entries."""
        try:
            os.rmdir(self.abs(rel))
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        return True

    def move(self, src: str, dst: str, expected: StatKey | None) -> None:
        """Rename ``src`` to ``dst`` (which must not exist), if ``src`` is still ``expected``."""
        self.ensure_parents(dst)
        if expected is not None and not self.unchanged(src, expected):
            raise TargetChanged(src)
        if self.exists(dst):
            raise TargetChanged(dst)
        os.rename(self.abs(src), self.abs(dst))
        cached = self._hashes.pop(src, None)
        if cached is not None:
            self._hashes[dst] = cached


def flush_to_disk(root: Path, paths: Sequence[str]) -> None:
    """Make the files just written at ``paths`` (below ``root``) durable, with their directory
    entries. Blocking.

    A few files are ``fsync``'d one by one, then every directory on their way from ``root``
    (a parent created for them must not vanish either): nothing else is waited for (``syncfs``
    would also flush whatever other programs wrote to the same filesystem). Many are made
    durable by one ``syncfs`` (``sync`` where it is missing) instead of one ``fsync`` each."""
    if len(paths) <= FSYNC_EACH_LIMIT:
        directories = {""}
        for rel in paths:
            parts = rel.split("/")[:-1]
            directories.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
        for rel in paths:
            _fsync(f"{root}/{rel}", os.O_RDONLY | os.O_NOFOLLOW)
        for rel in sorted(directories, key=len, reverse=True):  # deepest first
            _fsync(f"{root}/{rel}" if rel else str(root), os.O_RDONLY | os.O_DIRECTORY)
        return
    syncfs = libc_function("syncfs")
    if syncfs is not None:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            pass
        else:
            try:
                if syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
    os.sync()


FSYNC_EACH_LIMIT = 32


def _fsync(path: str, flags: int) -> None:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError:
        return  # gone or replaced since: whatever is there now has its own flush
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def name_problem(rel: str) -> str | None:
    """Why the server would refuse ``rel`` as a path (``None`` if it is acceptable)."""
    try:
        validate(rel)
    except PathError as exc:
        return exc.message
    return None


class TempDownload:
    """A file being downloaded into ``.quantum-sync/tmp/``, hashed as it is written.

    :meth:`write` may run in a worker thread (one call at a time). A large download may leave
    the hashing of what it writes (``hashed=False``) to a :class:`BackgroundHasher` fed with
    the same chunks and updating :attr:`hasher`."""

    _names = itertools.count()

    def __init__(self, tmp_dir: Path | str) -> None:
        while True:
            self.path = f"{tmp_dir}/download-{_PID}-{next(self._names)}"
            try:
                self._fd = os.open(self.path, _TEMP_FLAGS, 0o644)
                break
            except FileExistsError:
                continue
        self.hasher = hashlib.sha256()
        self.size = 0
        self.installed = False
        self.mtime_ns: int | None = None
        """The mtime already set on the temp file (``None``: whatever writing left)."""
        self.key: StatKey | None = None
        """The temp file's identity once finished, when it was taken (see :meth:`holding`)."""
        self._digest: str | None = None
        self._written_back = 0
        self._closed = False

    @classmethod
    def holding(cls, tmp_dir: Path | str, data: bytes, mtime_ns: int | None = None) -> TempDownload:
        """A finished temp file with ``data`` and, if given, that mtime (blocking)."""
        download = cls(tmp_dir)
        try:
            download.write(data)
            if mtime_ns is not None:
                os.utime(download._fd, ns=(mtime_ns, mtime_ns))
                download.mtime_ns = mtime_ns
            download.key = StatKey.of(os.fstat(download._fd))
            download.finish()
        except BaseException:
            download.discard()
            raise
        return download

    def write(self, chunk: bytes, *, hashed: bool = True) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        if hashed:
            self.hasher.update(chunk)
        self.size += len(chunk)
        if self.size - self._written_back >= WRITE_BEHIND:
            # Start writing a large download to disk while it is still arriving: the flush
            # before its base is recorded then waits only for the tail (not a flush itself).
            start_writeback(self._fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size

    def hexdigest(self) -> str:
        if self._digest is not None:
            return self._digest
        digest = self.hasher.hexdigest()
        if self._closed:  # nothing more can be written: the digest is final
            self._digest = digest
        return digest

    def finish(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)

    def discard(self) -> None:
        self.finish()
        if not self.installed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> TempDownload:
        return self

    def __exit__(self, *_: object) -> None:
        self.discard()


class BackgroundHasher:
    """Hashes chunks in a thread of its own, fed through a queue: the loop never waits for a
    thread hop per chunk (only :meth:`close` waits, once, for the last chunks). Not the loop's
    shared executor: a slow download must not hold one of its threads."""

    def __init__(self, hasher: Any) -> None:
        self._hasher = hasher
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0
        self._hashed = 0  # written by the worker thread only
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=self._run, args=(loop,), name="hash", daemon=True).start()

    @property
    def backlog(self) -> int:
        """Bytes queued but not hashed yet."""
        return self._queued - self._hashed

    def update(self, chunk: bytes) -> None:
        self._queued += len(chunk)
        self._queue.put(chunk)

    async def close(self) -> None:
        """Wait until every queued chunk is hashed."""
        self._queue.put(None)
        await self._done

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._hasher.update(chunk)
                self._hashed += len(chunk)
        finally:
            loop.call_soon_threadsafe(_resolve, self._done)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
