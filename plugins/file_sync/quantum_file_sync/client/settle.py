"""Settling one path: probe the folder, read the base and the remote view, decide, act.

This is the only place that changes files (locally or on the server) and the only place that
records a new base, always in that order: first the change, then the agreement. Every action is
guarded: local writes re-check the target (:mod:`local`), server writes carry a precondition
(:mod:`remote`), and when a guard fires the path is simply settled again from scratch — a new
decision on fresh facts, never a retry of a stale one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

from quantum_file_sync.client.blocks import BlockTransfers, Transferred
from quantum_file_sync.client.conflicts import free_conflict_name
from quantum_file_sync.client.local import (
    FileUnstable,
    LocalState,
    LocalTree,
    StatKey,
    TargetChanged,
    TempDownload,
    UnsafeLocalPath,
    Unsupported,
    parse_modified,
)
from quantum_file_sync.client.merge import Action, Version, decide
from quantum_file_sync.client.prefetch import Prefetcher
from quantum_file_sync.client.progress import Progress, SyncStats
from quantum_file_sync.client.remote import (
    ConnectionLost,
    HashMismatch,
    PreconditionFailed,
    RemoteClient,
    RemoteError,
    unsafe_reason,
)
from quantum_file_sync.client.remote_view import RemoteEntry, RemoteView
from quantum_file_sync.client.scheduler import PathScheduler
from quantum_file_sync.client.state import BaseEntry, StateDB

MAX_ATTEMPTS = 8
"""Retries of one path (after preconditions, hash mismatches, errors) before giving up."""


class ParentNotDirectory(UnsafeLocalPath):
    """A file stands where a parent directory is needed (it is being settled too): retry."""


class Deferred(Exception):
    """Settle this path again later. With a ``reason`` it counts as a failed attempt."""

    def __init__(self, delay: float, reason: str | None = None) -> None:
        super().__init__(reason or "deferred")
        self.delay = delay
        self.reason = reason


def _version(side: BaseEntry | LocalState | RemoteEntry | None) -> Version | None:
    return None if side is None else side.version


def base_of(path: str, key: StatKey, digest: str | None, seq: int) -> BaseEntry:
    if key.is_dir:
        return BaseEntry(path, True, None, 0, key.mtime_ns, key.inode, seq)
    return BaseEntry(path, False, digest, key.size, key.mtime_ns, key.inode, seq)


class Settler:
    def __init__(
        self,
        *,
        local: LocalTree,
        state: StateDB,
        view: RemoteView,
        remote: RemoteClient,
        blocks: BlockTransfers,
        prefetch: Prefetcher,
        scheduler_ref: Callable[[], PathScheduler],
        stats: SyncStats,
        progress: Progress,
        log: Any,
        client_id: str,
        check_deletes: Callable[[], Awaitable[None]],
        delete_grace: float,
        persistent: bool,
    ) -> None:
        self.local = local
        self.state = state
        self.view = view
        self.remote = remote
        self.blocks = blocks
        self.prefetch = prefetch
        self._scheduler = scheduler_ref
        self.stats = stats
        self.progress = progress
        self.log = log
        self.client_id = client_id
        self.check_deletes = check_deletes
        self.delete_grace = delete_grace
        self.persistent = persistent
        """Realtime: retry connection problems forever; one-shot: give up after a few tries."""
        self.move_hints: dict[str, str] = {}
        """Remote file moves: target → source, so a local rename can replace a download."""
        self.last_local_delete = -math.inf
        """Loop time at which local deletions were last seen (deletions wait for quiet)."""
        self.quiet_transfers = False
        """During a full pass transfers are logged at debug level (the bar shows progress)."""
        self.waiting_for_server: set[str] = set()
        """Paths whose last attempt could not reach the server: retried at once on reconnect."""
        self._attempts: dict[str, int] = {}
        self._warned: set[str] = set()

    @property
    def scheduler(self) -> PathScheduler:
        return self._scheduler()

    # --- entry point -------------------------------------------------------------------------

    async def settle(self, path: str) -> None:
        """Bring ``path`` to agreement; failures are retried, logged or escalated here."""
        reason = unsafe_reason(path)
        if reason is not None:  # whatever its source, such a path never reaches the disk
            if path not in self._warned:
                self.stats.refused += 1
            self.warn_once(path, f"refused an unsafe path: {reason}")
            return
        try:
            await self._settle(path)
        except Deferred as deferred:
            if deferred.reason is None:
                self.scheduler.add_later(path, deferred.delay)
            else:
                self._retry(path, deferred.reason, delay=deferred.delay)
        except FileUnstable:
            self._retry(path, "still being written", give_up=False)
        except TargetChanged:
            self._retry(path, "changed while being synced", give_up=False, delay=0.02)
        except PreconditionFailed:
            await self._refresh(path)
            self._retry(path, "changed on the server meanwhile", delay=0.0)
        except HashMismatch as exc:
            await self._refresh(path)
            self._retry(path, str(exc), delay=0.05, limit=3)
        except ConnectionLost as exc:
            self.waiting_for_server.add(path)
            if not self._retry(path, f"server unreachable ({exc})", give_up=not self.persistent):
                self.stats.unreachable += 1
        except ParentNotDirectory as exc:
            self._retry(path, str(exc), delay=0.1)
        except UnsafeLocalPath as exc:
            self._fail(path, f"refused: {exc}")
        except RemoteError as exc:
            if exc.status == 409:  # a file/directory clash being resolved by another path
                await self._refresh(path)
                self._retry(path, exc.message, delay=0.1)
            else:
                self._fail(path, f"server refused: {exc.status} {exc.code}: {exc.message}")
        except OSError as exc:
            self._retry(path, f"{type(exc).__name__}: {exc.strerror or exc}", delay=0.5)
        else:
            self._attempts.pop(path, None)

    def _retry(
        self,
        path: str,
        why: str,
        *,
        give_up: bool = True,
        delay: float = 0.1,
        limit: int = MAX_ATTEMPTS,
    ) -> bool:
        """Settle ``path`` again after a growing delay; ``False`` once it gave up."""
        attempt = self._attempts.get(path, 0) + 1
        self._attempts[path] = attempt
        if give_up and attempt > limit:
            self._fail(path, f"gave up after {limit} attempts: {why}")
            return False
        self.log.debug("retrying", path=path, reason=why, attempt=attempt)
        self.scheduler.add_later(path, min(delay * 2 ** min(attempt - 1, 10), 5.0))
        return True

    def _fail(self, path: str, why: str) -> None:
        self._attempts.pop(path, None)
        self.stats.errors += 1
        self.stats.failed_paths.add(path)
        self.log.error("not synced", path=path, reason=why)

    def warn_once(self, path: str, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            self.log.warning(message, path=path)

    async def _refresh(self, path: str) -> None:
        """Ask the server what ``path`` is now (after a 412 or a hash mismatch)."""
        stamp = self.view.stamp(path)
        try:
            entry, _ = await self.remote.entry(path)
        except (ConnectionLost, RemoteError):
            return
        self.view.set_if_unchanged(path, entry, stamp)

    def _transfer_log(self, event: str, **fields: Any) -> None:
        if self.quiet_transfers:
            self.log.debug(event, **fields)
        else:
            self.log.info(event, **fields)

    # --- decide ------------------------------------------------------------------------------

    async def _settle(self, path: str) -> None:
        if self.local.ignore.ignores(path):
            return
        for _ in range(4):
            base = self.state.get(path)
            probe = await self.local.probe(path, base)
            if isinstance(probe, Unsupported):
                self.warn_once(path, f"not synced: {probe.kind}s are not supported")
                return
            remote = self.view.get(path)
            stamp = self.view.stamp(path)
            action = decide(_version(base), _version(probe), _version(remote))
            if not await self._act(action, path, base, probe, remote, stamp):
                return
        raise TargetChanged(path)

    async def _act(
        self,
        action: Action,
        path: str,
        base: BaseEntry | None,
        probe: LocalState | None,
        remote: RemoteEntry | None,
        stamp: int,
    ) -> bool:
        """Carry out ``action``; ``True`` means "decide again" (the situation changed)."""
        seq = self.view.last_seq
        if action is Action.NOTHING:
            touched = probe is not None and base is not None and not probe.key.matches(base)
            if touched and probe is not None and base is not None and not probe.key.is_dir:
                # Same content, new stat identity (touched, or rewritten identically).
                self.state.put(base_of(path, probe.key, probe.hash, base.seq))
            return False
        if action is Action.ADOPT:
            assert probe is not None
            self.state.put(base_of(path, probe.key, probe.hash, seq))
            self.stats.adopted += 1
            return False
        if action is Action.FORGET:
            self.state.remove(path)
            return False
        if action is Action.DOWNLOAD:
            assert remote is not None
            return await self._download(path, probe, remote)
        if action is Action.MKDIR_LOCAL:
            if probe is not None:  # an unchanged file gives way to the server's directory
                self.local.remove_file(path, probe.key)
            key = self._make_local_dir(path)
            self.state.put(base_of(path, key, None, seq))
            self.stats.dirs_created += 1
            self._transfer_log("created directory", path=path)
            return False
        if action is Action.DELETE_LOCAL:
            assert probe is not None
            return await self._delete_local(path, probe, remote, stamp)
        if action is Action.UPLOAD:
            assert probe is not None
            return await self._upload(path, probe, remote, stamp)
        if action is Action.MKDIR_REMOTE:
            assert probe is not None
            return await self._mkdir_remote(path, probe, remote, stamp)
        if action is Action.DELETE_REMOTE:
            assert base is not None and remote is not None
            return await self._delete_remote(path, base, remote, stamp)
        assert action is Action.CONFLICT and probe is not None
        self._keep_conflict_copy(path, probe)
        return True

    # --- local side --------------------------------------------------------------------------

    def _make_local_dir(self, path: str) -> StatKey:
        try:
            return self.local.make_dir(path)
        except UnsafeLocalPath as exc:
            if "is not a directory" in str(exc):
                raise ParentNotDirectory(str(exc)) from None
            raise

    async def _download(self, path: str, probe: LocalState | None, remote: RemoteEntry) -> bool:
        assert remote.hash is not None
        if probe is not None and probe.key.is_dir:
            # The server replaced a directory by a file.
            if not self.local.remove_dir(path):
                if self.scheduler.busy_below(path):
                    raise Deferred(0.05)
                self._keep_conflict_copy(path, probe)  # it holds what the server lacks
            return True
        if probe is None and self._rename_instead(path, remote):
            return False
        prefetched = await self.prefetch.take(path, remote.hash)
        moved: Transferred | None = None
        with prefetched or TempDownload(self.local.tmp_dir) as temp:
            if prefetched is None:
                current = None if probe is None else probe.key
                moved = await self.blocks.download(
                    path, remote, temp, current, self.progress.add_bytes
                )
            else:
                self.progress.add_bytes(remote.size)
            try:
                expected = None if probe is None else probe.key
                key = self.local.install(temp, path, expected, parse_modified(remote.modified))
            except UnsafeLocalPath as exc:
                if "is not a directory" in str(exc):
                    raise ParentNotDirectory(str(exc)) from None
                raise
        self.blocks.installed(path, key, moved)
        self._downloaded(path, key, remote, moved)
        return False

    def adopt_download(self, path: str, temp: TempDownload) -> bool:
        """Install a file that arrived in a bundle right away, when that is what settling
        ``path`` would do anyway: nobody is settling it, the server still has this version,
        and the merge says "download" for a path with nothing local (``link()``, which never
        overwrites, checks that last point). ``False``: settle the path the ordinary way."""
        if self.scheduler.busy(path):
            return False
        remote = self.view.get(path)
        if remote is None or remote.is_dir or remote.hash != temp.hexdigest():
            return False
        base = self.state.get(path)
        if decide(_version(base), None, remote.version) is not Action.DOWNLOAD:
            return False
        try:
            key = self.local.install(temp, path, None, parse_modified(remote.modified))
        except (TargetChanged, UnsafeLocalPath, OSError):
            return False
        self._downloaded(path, key, remote)
        self.progress.add_bytes(remote.size)
        return True

    def _downloaded(
        self, path: str, key: StatKey, remote: RemoteEntry, moved: Transferred | None = None
    ) -> None:
        self.state.put(base_of(path, key, remote.hash, self.view.last_seq), needs_sync=True)
        self.stats.downloaded += 1
        self.stats.downloaded_bytes += remote.size
        self.progress.file_done()
        blocks = {} if moved is None else moved.log_fields()
        self._transfer_log("downloaded", path=path, size=remote.size, **blocks)

    def _move_target_pending(self, source: str) -> bool:
        """Whether a server-side move of ``source`` has a target still waiting to settle."""
        return any(
            hinted == source and self.scheduler.busy(target)
            for target, hinted in self.move_hints.items()
        )

    def _rename_instead(self, path: str, remote: RemoteEntry) -> bool:
        """The server moved a file we hold unchanged: rename it locally, transfer nothing."""
        source = self.move_hints.pop(path, None)
        if source is None:
            return False
        base = self.state.get(source)
        key = self.local.stat_key(source)
        if (
            base is None
            or base.is_dir
            or base.hash != remote.hash
            or key is None
            or not key.matches(base)
            or self.view.get(source) is not None
        ):
            return False
        try:
            self.local.move(source, path, key)
        except (TargetChanged, OSError):
            return False
        self.blocks.index.move(source, path)
        self.state.remove(source)
        self.state.put(dataclasses.replace(base, path=path, seq=self.view.last_seq))
        self.stats.moved += 1
        self._transfer_log("moved", path=source, to=path)
        self.scheduler.add(source)
        return True

    async def _delete_local(
        self, path: str, probe: LocalState, remote: RemoteEntry | None, stamp: int
    ) -> bool:
        if not probe.key.is_dir and self._move_target_pending(path):
            # The server moved this file: its target's settle renames it here rather than
            # fetch it again (which, once this copy is gone, would find no chunk to reuse).
            raise Deferred(0.05)
        if not probe.key.is_dir:
            self.local.remove_file(path, probe.key)
            self.blocks.index.forget(path)
        elif not self.local.remove_dir(path):
            if self.scheduler.busy_below(path):
                raise Deferred(0.05)
            # Something below survived (changed locally, ignored...): the directory stays.
            self.log.info("kept directory deleted on the server: it is not empty", path=path)
            return await self._mkdir_remote(path, probe, remote, stamp)
        self.state.remove(path)
        self.stats.deleted_local += 1
        self._transfer_log("deleted locally", path=path)
        return False

    def _keep_conflict_copy(self, path: str, probe: LocalState) -> None:
        """Move the local version aside; the caller then takes the server's version."""

        def taken(candidate: str) -> bool:
            return (
                self.local.exists(candidate)
                or self.view.get(candidate) is not None
                or self.state.get(candidate) is not None
            )

        target = free_conflict_name(path, self.client_id, taken)
        self.local.move(path, target, probe.key)
        self.blocks.index.move(path, target)  # its chunks may serve the server's version
        self.stats.conflicts += 1
        self.log.warning("conflict: both sides changed", path=path, local_version_kept_as=target)
        self.scheduler.add(target)

    # --- server side -------------------------------------------------------------------------

    async def _upload(
        self, path: str, probe: LocalState, remote: RemoteEntry | None, stamp: int
    ) -> bool:
        assert probe.hash is not None
        if remote is not None and remote.is_dir:
            # The local side replaced a directory by a file: empty the server's first.
            if self._changed_on_server_below(path):
                # Deleting them would lose what the server changed (delete never beats
                # modify), and they cannot be downloaded below a file: the file steps aside.
                self._keep_conflict_copy(path, probe)
                return True
            self._require_remote_dir_emptied(path)
            if not await self._delete_remote_dir(path):
                raise RemoteError(409, "not_empty", f"{path} holds entries that are not synced")
            self.view.set_if_unchanged(path, None, stamp)
            return True
        entry, moved = await self.blocks.upload(
            path,
            probe.key,
            probe.hash,
            if_match=None if remote is None else remote.hash,
            on_bytes=self.progress.add_bytes,
        )
        self.state.put(base_of(path, probe.key, probe.hash, self.view.last_seq))
        self.view.set_if_unchanged(path, entry, stamp)
        self.stats.uploaded += 1
        self.stats.uploaded_bytes += probe.key.size
        self.progress.file_done()
        blocks = {} if moved is None else moved.log_fields()
        self._transfer_log("uploaded", path=path, size=probe.key.size, **blocks)
        return False

    async def _mkdir_remote(
        self, path: str, probe: LocalState, remote: RemoteEntry | None, stamp: int
    ) -> bool:
        if remote is not None and not remote.is_dir:
            # The local side replaced a file by a directory (the file is unchanged there).
            await self.remote.delete(path, if_match=remote.hash)
            self.view.set_if_unchanged(path, None, stamp)
            return True
        entry = await self.remote.mkdir(path)
        self.state.put(base_of(path, probe.key, None, self.view.last_seq))
        self.view.set_if_unchanged(path, entry, stamp)
        self.stats.dirs_created += 1
        self._transfer_log("created directory on the server", path=path)
        return False

    async def _delete_remote(
        self, path: str, base: BaseEntry, remote: RemoteEntry, stamp: int
    ) -> bool:
        wait = self.delete_grace - (asyncio.get_running_loop().time() - self.last_local_delete)
        if wait > 0:  # deletions are still coming in: let the guard see all of them first
            raise Deferred(wait)
        await self.check_deletes()
        if remote.is_dir:
            self._require_remote_dir_emptied(path)
            if not await self._delete_remote_dir(path):
                # It holds entries that are not synced (links, special files...): keep it.
                self.log.info("kept directory deleted locally: not empty on the server", path=path)
                key = self._make_local_dir(path)
                self.state.put(base_of(path, key, None, self.view.last_seq))
                return False
        else:
            await self.remote.delete(path, if_match=remote.hash)
            self.blocks.index.forget(path)
        self.state.remove(path)
        self.view.set_if_unchanged(path, None, stamp)
        self.stats.deleted_remote += 1
        self._transfer_log("deleted on the server", path=path, was_directory=base.is_dir)
        return False

    async def _delete_remote_dir(self, path: str) -> bool:
        """Delete the server's directory only if it is empty (``recursive=false``): a file
        created there meanwhile, which this client has not heard of yet, is never deleted with
        it. On the server's 409 ``not_empty`` the client re-lists the directory: what it did not
        know is settled and the directory decided again (:class:`Deferred`). ``False``: the
        listing showed nothing new, so what keeps it from being empty is not synced at all."""
        try:
            await self.remote.delete(path, if_match=None, recursive=False)
        except RemoteError as exc:
            if exc.code != "not_empty":
                raise
            if not await self._relist(path):
                return False
            raise Deferred(0.05, "it is not empty on the server") from None
        return True

    async def _relist(self, directory: str) -> bool:
        """Merge a fresh listing of ``directory``'s subtree into the view and settle what it
        changed; ``False`` when it changed nothing."""
        stamp = self.view.stamp(directory)
        try:
            listing = await self.remote.list(directory)
        except RemoteError as exc:
            if exc.status in (404, 409):  # gone (or a file) meanwhile: its own settle decides
                return True
            raise
        if self.view.stamp(directory) != stamp:
            return True  # the directory itself changed meanwhile: its operation re-settles it
        changed = self.view.merge_subtree(directory, listing.entries, listing.seq)
        self.scheduler.add_all(sorted(changed))
        return bool(changed)

    def _changed_on_server_below(self, directory: str) -> bool:
        """Whether the server holds, below ``directory``, something our base does not."""
        for path in self.view.descendants(directory):
            base, remote = self.state.get(path), self.view.get(path)
            if base is None or remote is None or base.version != remote.version:
                return True
        return False

    def _require_remote_dir_emptied(self, path: str) -> None:
        """Only delete a directory whose content has been settled path by path. Otherwise
        settle the children first and come back."""
        below = self.view.descendants(path)
        if not below:
            return
        if self.scheduler.busy_below(path):
            raise Deferred(0.05)
        self.scheduler.add_all(below)
        raise Deferred(0.05, "its content is still on the server")
