"""Unfinished resumable uploads on disk: ``ROOT/.quantum/uploads/<id>/{record.json,data}``.

The data file holds the bytes received so far; ``record.json`` what the upload is for (target,
length, preconditions, client, expected hash) and its *durable* offset. The offset is only
written after the data up to it is fsync'd, so after a crash the record is the truth: opening
the store truncates every data file to its record's offset. Records are replaced atomically
(write, fsync, rename, fsync the directory).

One request at a time works on an upload (:meth:`UploadStore.exclusive`): an asyncio lock in
this process and ``flock`` on the upload's directory against other processes sharing the root.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantum_file_sync import errors
from quantum_file_sync.paths import SafeRoot

UPLOADS_DIR = (".quantum", "uploads")
RECORD = "record.json"
DATA = "data"
_PENDING_SUFFIX = ".new"
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(slots=True)
class UploadRecord:
    id: str
    target: str
    protocol: str
    """``"tus"`` or ``"ietf"``: the protocol of the creating request."""
    length: int | None
    offset: int = 0
    complete: bool = False
    """Received and committed; the record stays (without data) until it expires."""
    if_match: list[str] | None = None
    if_none_match: list[str] | None = None
    source_client: str | None = None
    sha256: str | None = None
    """The whole upload's expected SHA-256 (hex), checked before the commit."""
    metadata: str | None = None
    """tus ``Upload-Metadata`` as received (echoed by ``HEAD``)."""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    result: dict[str, Any] | None = None
    """The committed file's metadata ``M``, once complete."""
    result_status: int | None = None
    """The completing response's status (201 created, 200 replaced)."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UploadRecord:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an upload record")
        record = cls(**data)
        if not isinstance(record.offset, int) or record.offset < 0:
            raise ValueError("bad offset")
        return record


@dataclass(slots=True)
class OpenUpload:
    """An upload held exclusively: its directory (fd) and its record as on disk."""

    directory_fd: int
    record: UploadRecord


def new_upload_id() -> str:
    return secrets.token_urlsafe(24)


class UploadStore:
    def __init__(self, root: SafeRoot, expire: float) -> None:
        self.base: Path = root.path.joinpath(*UPLOADS_DIR)
        self.expire = expire
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._appending: dict[str, asyncio.Task[Any]] = {}

    # -- lifecycle (blocking) ------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and bring every upload back to its durable state."""
        self.base.mkdir(parents=True, exist_ok=True)
        for entry in os.scandir(self.base):
            if entry.name.endswith(_PENDING_SUFFIX) or not entry.is_dir(follow_symlinks=False):
                _remove_if_free(entry.path)
                continue
            self._recover(entry.path)

    def _recover(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another live server on this root is receiving it
            try:
                record = _read_record(fd)
            except (OSError, ValueError, TypeError):
                shutil.rmtree(path, ignore_errors=True)
                return
            if record.complete:
                return
            try:
                size = os.stat(DATA, dir_fd=fd).st_size
            except FileNotFoundError:
                size = -1
            if size < record.offset:
                shutil.rmtree(path, ignore_errors=True)  # durable bytes lost: unusable
            elif size > record.offset:
                data = os.open(DATA, os.O_RDWR | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.ftruncate(data, record.offset)
                    os.fsync(data)
                finally:
                    os.close(data)
        finally:
            os.close(fd)

    # -- uploads -------------------------------------------------------------------------------

    def create(self, record: UploadRecord) -> None:
        """Make the upload's directory with an empty data file and its record (blocking).
        Built under a temporary name and renamed, so a crash never leaves half an upload."""
        pending = self.base / (record.id + _PENDING_SUFFIX)
        pending.mkdir(mode=0o700)
        fd = os.open(pending, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            data = os.open(
                DATA, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=fd
            )
            os.close(data)
            save_record(fd, record)
        finally:
            os.close(fd)
        os.rename(pending, self.base / record.id)
        base = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(base)
        finally:
            os.close(base)

    @asynccontextmanager
    async def exclusive(self, upload_id: str) -> AsyncIterator[OpenUpload]:
        """Sole access to an upload (404 when there is none). An append still running in this
        process is stopped first, as the draft recommends: its client has given up on it,
        and what it received is kept."""
        if not _ID.fullmatch(upload_id):
            raise _unknown(upload_id)
        running = self._appending.get(upload_id)
        if running is not None:
            running.cancel()
        lock = self._locks.setdefault(upload_id, asyncio.Lock())
        self._users[upload_id] = self._users.get(upload_id, 0) + 1
        try:
            async with lock:
                fd, record = await self._locked(upload_id)
                try:
                    yield OpenUpload(fd, record)
                finally:
                    os.close(fd)  # releases the flock
        finally:
            self._users[upload_id] -= 1
            if not self._users[upload_id]:  # nobody holds or awaits the lock
                del self._users[upload_id]
                del self._locks[upload_id]

    async def _locked(self, upload_id: str) -> tuple[int, UploadRecord]:
        # Waited for even when cancelled: a descriptor opened by the thread after we stopped
        # waiting would keep the flock, and the upload busy, for the life of the process.
        opening = asyncio.ensure_future(asyncio.to_thread(self._lock_and_load, upload_id))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                os.close(opening.result()[0])
            raise

    def _lock_and_load(self, upload_id: str) -> tuple[int, UploadRecord]:
        try:
            fd = os.open(self.base / upload_id, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _unknown(upload_id) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise errors.ApiError(
                    423, "upload_busy", "another server is receiving this upload; retry later"
                ) from None
            try:
                return fd, _read_record(fd)
            except FileNotFoundError:
                raise _unknown(upload_id) from None  # removed while we waited
            except (ValueError, TypeError):
                raise errors.ApiError(
                    500, "io_error", "the upload's record is unreadable"
                ) from None
        except BaseException:
            os.close(fd)
            raise

    def track_append(self, upload_id: str, task: asyncio.Task[Any]) -> None:
        """``task`` is appending to ``upload_id`` (cancelled when another request comes)."""
        self._appending[upload_id] = task

    def untrack_append(self, upload_id: str, task: asyncio.Task[Any]) -> None:
        if self._appending.get(upload_id) is task:
            del self._appending[upload_id]

    def remove(self, upload_id: str) -> None:
        """Delete an upload's directory (blocking; the caller holds it exclusively)."""
        shutil.rmtree(self.base / upload_id, ignore_errors=True)

    def expires_at(self, record: UploadRecord) -> float:
        return record.updated + self.expire

    async def reap(self) -> list[str]:
        """Remove the uploads not written to for ``expire`` (completed ones included)."""
        now = time.time()
        removed: list[str] = []
        names = await asyncio.to_thread(lambda: [e.name for e in os.scandir(self.base)])
        for name in names:
            if not _ID.fullmatch(name) or name in self._appending:
                continue
            if name in self._users:
                continue  # a request is using it
            try:
                async with self.exclusive(name) as upload:
                    if self.expires_at(upload.record) <= now:
                        await asyncio.to_thread(self.remove, name)
                        removed.append(name)
            except errors.ApiError:
                continue  # gone meanwhile, or busy on another server
        return removed


def save_record(directory_fd: int, record: UploadRecord) -> None:
    """Replace the record atomically and durably (blocking)."""
    temp = RECORD + ".tmp"
    fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600, dir_fd=directory_fd
    )
    try:
        payload = memoryview(record.to_json())
        while payload:
            payload = payload[os.write(fd, payload) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, RECORD, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    os.fsync(directory_fd)


def _read_record(directory_fd: int) -> UploadRecord:
    fd = os.open(RECORD, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory_fd)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return UploadRecord.from_json(b"".join(chunks))


def _remove_if_free(path: str) -> None:
    with suppress(OSError):
        if not os.path.isdir(path) or os.path.islink(path):
            os.unlink(path)
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


def _unknown(upload_id: str) -> errors.ApiError:
    return errors.not_found("no such upload (finished long ago, cancelled or expired)")
