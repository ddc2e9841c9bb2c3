"""RealtimeSyncClient: the folder, the server and the merge base, kept in agreement.

One run:

1. claim the folder (``.quantum-sync/``: lock, state database, temp area), check the server;
2. realtime only: start the folder watcher *before* looking at anything, then subscribe to
   ``/ws`` with the saved cursor;
3. a full pass: remote side from a listing (first contact, ``--initial-sync``, or when the journal
   cannot replay: ``recovered: false``) or from the merge base plus replayed operations; local
   side from a scan; every path is settled (:mod:`settle`) by a bounded pool of workers, after the
   mass-delete guard approved the plan — except the small files the plan downloads, which come
   in bundles (:mod:`prefetch`) and are installed as they arrive or then settled;
4. realtime only: from then on, watcher batches and server operations only name paths to settle
   again; a reconnection that cannot replay triggers another full listing merge.

The resume cursor is saved only up to the oldest operation whose path is not settled yet, and
never during a listing-based pass, so a crash at any point replays (or re-lists) what matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from quantum_file_sync.client.blocks import BlockTransfers
from quantum_file_sync.client.chunk_index import ChunkIndex
from quantum_file_sync.client.exit_codes import (
    ClientExit,
    ExitCode,
    InvalidLocalPath,
    ServerUnreachable,
)
from quantum_file_sync.client.guard import MassDeleteGuard
from quantum_file_sync.client.ignore import IgnoreRules
from quantum_file_sync.client.local import (
    LocalTree,
    StatKey,
    TargetChanged,
    UnsafeLocalPath,
    flush_to_disk,
    parse_modified,
)
from quantum_file_sync.client.merge import Action, Version, decide
from quantum_file_sync.client.moves import LocalMove, detect_moves
from quantum_file_sync.client.prefetch import Prefetcher, Wanted
from quantum_file_sync.client.progress import Progress, SyncStats
from quantum_file_sync.client.remote import ConnectionLost, RemoteClient, RemoteError
from quantum_file_sync.client.remote_view import RemoteEntry, RemoteView
from quantum_file_sync.client.scheduler import PathScheduler
from quantum_file_sync.client.settle import Settler
from quantum_file_sync.client.state import (
    STATE_DIR,
    BaseEntry,
    Cursor,
    FolderInUse,
    StateDB,
    StateDir,
)
from quantum_file_sync.client.urls import InvalidServerUrl, normalize_server
from quantum_file_sync.client.ws_client import (
    Backoff,
    Connected,
    Disconnected,
    Refused,
    ServerError,
    WsClient,
)
from quantum_file_sync.operations import ChangeEvent, Move

if TYPE_CHECKING:
    import watchfiles

T = TypeVar("T")
FLUSH_INTERVAL = 0.2
WATCH_READY_TIMEOUT = 10.0
_MAX_MOVE_HINTS = 10_000
_ADDED = 1
"""``watchfiles.Change.added`` (an IntEnum), without importing watchfiles for one-shot runs."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    server: str
    local_path: Path
    realtime: bool = False
    initial_sync: bool = False
    client_id: str | None = None
    token: str | None = None
    ignore: tuple[str, ...] = ()
    concurrency: int = 8
    allow_mass_delete: bool = False
    progress: bool = False
    ping_interval: float = 15.0
    delete_grace: float = 0.5
    """Local deletions reach the server only after deletions stayed quiet this long."""
    debounce_ms: int = 50
    step_ms: int = 20


@dataclass
class _Plan:
    paths: int = 0
    transfers: int = 0
    bytes: int = 0
    remote_deletes: int = 0
    local_deletes: int = 0
    downloads: list[Wanted] = dataclasses.field(default_factory=list, repr=False)
    """The files it will download, for the prefetcher."""


class _Stopped(Exception):
    """The user asked the client to stop (SIGINT/SIGTERM)."""


class RealtimeSyncClient:
    def __init__(self, options: ClientOptions, log: Any) -> None:
        self.options = options
        self.log = log
        self.stats = SyncStats()
        self.progress = Progress(options.progress)
        self.interrupted = False
        self.client_id: str | None = None
        self._stop: asyncio.Event | None = None

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> SyncStats:
        """Sync; returns the statistics, raises :class:`ClientExit` with a one-line reason."""
        self._stop = asyncio.Event()
        try:
            server = normalize_server(self.options.server)
        except InvalidServerUrl as exc:
            raise ClientExit(ExitCode.USAGE, str(exc)) from None
        root = prepare_local_path(self.options.local_path)
        state_dir = StateDir(root)
        try:
            state_dir.claim()
        except FolderInUse as exc:
            raise InvalidLocalPath(f"{root} is already being synced by {exc}") from None
        except OSError as exc:
            raise InvalidLocalPath(f"{root}: cannot create {STATE_DIR}/: {exc.strerror}") from None
        try:
            left = state_dir.clean_tmp()
            if left:
                self.log.info("removed leftovers of interrupted downloads", count=left)
            try:
                db = state_dir.open_db()
            except sqlite3.DatabaseError as exc:
                raise InvalidLocalPath(
                    f"the state database {state_dir.path / 'state.sqlite3'} is unreadable "
                    f"({exc}); move {STATE_DIR}/ away to start over (nothing will be deleted)"
                ) from None
            try:
                await self._run(root, state_dir, db, server)
            finally:
                db.close()
        finally:
            state_dir.release()
        return self.stats

    async def _run(self, root: Path, state_dir: StateDir, db: StateDB, server: str) -> None:
        options = self.options
        self.client_id = client_id = _client_id(db, options.client_id)
        try:
            ignore = IgnoreRules.load(root, options.ignore)
        except ValueError as exc:
            raise ClientExit(ExitCode.USAGE, f"invalid ignore pattern: {exc}") from None
        connector = aiohttp.TCPConnector(limit=options.concurrency + 4)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            remote = RemoteClient(session, server, client_id, options.token)
            try:
                await remote.check()
            except ConnectionLost as exc:
                raise ServerUnreachable(f"cannot reach {server}: {exc}") from None
            self._adopt_server(db, server)
            engine = _Engine(
                self,
                root=root,
                state_dir=state_dir,
                db=db,
                server=server,
                session=session,
                remote=remote,
                client_id=client_id,
                ignore=ignore,
            )
            try:
                await engine.run()
            except _Stopped:
                self.interrupted = True

    def _adopt_server(self, db: StateDB, server: str) -> None:
        """A merge base is only valid for the server it was agreed with."""
        known = db.get_meta("server")
        if known is not None and known != server and len(db):
            self.log.warning(
                "the folder was synced with another server: starting over (first contact: "
                "the union of both sides, nothing deleted)",
                previous=known,
            )
            db.clear()
            db.cursor = None
        db.set_meta("server", server)
        db.commit()


def prepare_local_path(path: Path) -> Path:
    """The folder to sync, created if only its last component is missing."""
    path = path.expanduser()
    if not path.exists():
        if path.is_symlink():
            raise InvalidLocalPath(f"{path} is a dangling symbolic link")
        if not path.parent.is_dir():
            raise InvalidLocalPath(f"{path} does not exist, nor does its parent directory")
        try:
            path.mkdir()
        except OSError as exc:
            raise InvalidLocalPath(f"cannot create {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise InvalidLocalPath(f"{path} is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise InvalidLocalPath(f"{path} is not readable and writable")
    return path.resolve()


def _client_id(db: StateDB, requested: str | None) -> str:
    """The folder's client id: given once, or generated on first use, then kept."""
    if requested is not None:
        # Imported here: the protocol module compiles the message schema (slow to import).
        from quantum_file_sync.protocol import CLIENT_ID_PATTERN

        if not CLIENT_ID_PATTERN.fullmatch(requested):
            raise ClientExit(
                ExitCode.USAGE,
                f"invalid client id {requested!r}: 1-128 of A-Z a-z 0-9 . _ : @ + -",
            )
        db.set_meta("client_id", requested)
        return requested
    stored = db.get_meta("client_id")
    if stored is not None:
        return stored
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    generated = f"{host[:32].strip('-') or 'client'}-{secrets.token_hex(4)}"
    db.set_meta("client_id", generated)
    return generated


def _remote_of_base(entry: BaseEntry) -> RemoteEntry:
    return RemoteEntry(entry.path, entry.is_dir, entry.hash, entry.size, "")


def _count_missing(root: str, paths: list[str]) -> int:
    return sum(1 for p in paths if not os.path.lexists(os.path.join(root, p)))


class _Engine:
    """One run's components and event loops (built once the folder and server are known)."""

    def __init__(
        self,
        client: RealtimeSyncClient,
        *,
        root: Path,
        state_dir: StateDir,
        db: StateDB,
        server: str,
        session: aiohttp.ClientSession,
        remote: RemoteClient,
        client_id: str,
        ignore: IgnoreRules,
    ) -> None:
        options = client.options
        assert client._stop is not None
        self.options = options
        self.log = client.log
        self.stats = client.stats
        self.progress = client.progress
        self.stop_event = client._stop
        self.root = root
        self.state_dir = state_dir
        self.db = db
        self.server = server
        self.chunk_index = ChunkIndex(db)
        self.local = LocalTree(root, state_dir.tmp, ignore, on_chunked=self.chunk_index.record)
        self.view = RemoteView()
        cursor = db.cursor
        self.view.reset(
            (_remote_of_base(e) for e in db.entries().values()),
            cursor.epoch if cursor else None,
            cursor.seq if cursor else 0,
        )
        self.remote = remote
        self.prefetch = Prefetcher(remote, state_dir.tmp, self.log)
        self.guard = MassDeleteGuard(enabled=not options.allow_mass_delete)
        self.settler = Settler(
            local=self.local,
            state=db,
            view=self.view,
            remote=self.remote,
            blocks=BlockTransfers(self.remote, self.chunk_index, self.local, self.stats, self.log),
            prefetch=self.prefetch,
            scheduler_ref=lambda: self.scheduler,
            stats=self.stats,
            progress=self.progress,
            log=self.log,
            client_id=client_id,
            check_deletes=self._check_deletes,
            delete_grace=options.delete_grace,
            persistent=options.realtime,
        )
        self.scheduler = PathScheduler(self.settler.settle, concurrency=options.concurrency)
        self.ws = WsClient(
            session,
            server,
            client_id,
            options.token,
            self._since,
            ping_interval=options.ping_interval,
        )
        self._cursor_frozen = False
        self._deletes_checked: float | None = None
        self._deletes_lock = asyncio.Lock()
        self._background: list[asyncio.Task[Any]] = []
        self._resync = asyncio.Event()
        self._first_ack: asyncio.Future[Connected] = asyncio.get_running_loop().create_future()

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        self._spawn(self._stopped(), "stop")
        try:
            if self.options.realtime:
                await self._run_realtime()
            else:
                await self._run_once()
        finally:
            await self._shutdown()

    async def _run_once(self) -> None:
        self.scheduler.start()
        self._spawn(self._scheduler_failure(), "scheduler")
        self._spawn(self._flush_loop(), "flusher")  # the disk works while the pass goes on
        cursor = self.db.cursor
        listing = self.options.initial_sync or cursor is None
        if cursor is not None and not listing:
            try:
                changes = await self._guarded(
                    self._unreachable_is_fatal(self.remote.changes(cursor))
                )
            except RemoteError as exc:
                self.log.warning("the journal is not available: listing", reason=str(exc))
                listing = True
            else:
                if changes.recovered and changes.epoch == cursor.epoch:
                    for seq, reason in changes.refused:
                        self.view.skip(seq)
                        self._refuse(f"operation seq {seq}: {reason}")
                    for event in changes.events:
                        await self._on_remote(event)
                    for seq in changes.ignored:  # unknown kinds: after the events, in order
                        self.view.skip(seq)
                else:
                    listing = True
        started = time.monotonic()
        await self._guarded(self._full_pass(listing=listing))
        self._log_pass(started)

    async def _run_realtime(self) -> None:
        ready = asyncio.Event()
        self._spawn(self._watch(ready), "watcher")
        await self._guarded(self._wait_watching(ready))
        self.scheduler.start()
        self._spawn(self._scheduler_failure(), "scheduler")
        self._spawn(self._flush_loop(), "flusher")
        self._spawn(self._ws_loop(), "websocket")
        connected = await self._guarded(self._first_ack)
        started = time.monotonic()
        await self._guarded(
            self._full_pass(listing=self.options.initial_sync or not connected.recovered)
        )
        self._log_pass(started)
        self._spawn(self._resync_loop(), "resync")
        await self._guarded(self.stop_event.wait())

    async def _shutdown(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        cursor = self._safe_cursor()
        await self.scheduler.close()
        self.progress.close()
        await self._flush(cursor)
        if self.stats.errors:
            self.db.cursor = None  # failed paths: the next run re-lists everything
        self.db.commit()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        self._background.append(asyncio.create_task(coroutine, name=name))

    async def _guarded(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless a background task fails (or the user stops) first."""
        main = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait(
                    {main, *self._background}, return_when=asyncio.FIRST_COMPLETED
                )
                if main in done:
                    return main.result()
                for task in done:
                    self._background.remove(task)
                    if task.cancelled():
                        raise RuntimeError(f"{task.get_name()} task was cancelled")
                    error = task.exception()
                    if error is not None:
                        raise error
                    raise RuntimeError(f"{task.get_name()} task ended unexpectedly")
        finally:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await main

    async def _stopped(self) -> None:
        await self.stop_event.wait()
        raise _Stopped

    async def _scheduler_failure(self) -> None:
        raise await self.scheduler.failed()

    async def _unreachable_is_fatal(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except ConnectionLost as exc:
            raise ServerUnreachable(f"lost the connection to {self.server}: {exc}") from None

    def _log_pass(self, started: float) -> None:
        self.log.info(
            "initial sync complete" if self.options.realtime else "sync pass complete",
            seconds=round(time.monotonic() - started, 3),
            **self.stats.fields(),
        )

    # --- full pass ---------------------------------------------------------------------------

    async def _full_pass(self, *, listing: bool) -> None:
        """Settle every path there is; ``listing``: first replace the remote view by a fresh
        listing (the cursor stays frozen until that pass completed)."""
        self._cursor_frozen = listing
        self.settler.quiet_transfers = True
        try:
            if listing:
                await self._merge_listing()
            scan, skipped = await asyncio.to_thread(self.local.scan)
            for rel, reason in skipped:
                self.settler.warn_once(rel, f"not synced: {reason}")
            candidates = set(self.db.entries()) | scan.keys() | set(self.view.paths())
            paths = sorted(p for p in candidates if not self.local.ignore.ignores(p))
            plan = self._plan(paths, scan)
            tracked = self.db.file_count
            self.guard.check_local_deletes(plan.remote_deletes, tracked, self.root)
            self.guard.check_remote_deletes(plan.local_deletes, tracked, self.server)
            self.log.debug(
                "plan",
                paths=plan.paths,
                transfers=plan.transfers,
                bytes=plan.bytes,
                remote_deletes=plan.remote_deletes,
                local_deletes=plan.local_deletes,
            )
            self.progress.start(plan.transfers, plan.bytes)
            bundled = self.prefetch.start(
                plan.downloads, adopt=self.settler.adopt_download, schedule=self.scheduler.add
            )
            self.scheduler.add_all(p for p in paths if p not in bundled)
            await self.prefetch.finished()  # each bundled path is installed or scheduled
            await self.scheduler.wait_idle()
        finally:
            await self.prefetch.close()
            self.progress.close()
            self.settler.quiet_transfers = False
        self._cursor_frozen = False

    async def _merge_listing(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                listing = await self.remote.list()
                break
            except ConnectionLost as exc:
                if not self.options.realtime:
                    raise ServerUnreachable(
                        f"lost the connection to {self.server}: {exc}"
                    ) from None
                delay = backoff.next()
                self.log.warning("listing failed; retrying", reason=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
        for path, reason in listing.refused:
            self._refuse(f"listing entry {path!r}: {reason}")
        if listing.epoch != self.view.epoch:
            self.view.new_epoch(listing.epoch)
        self.view.apply_listing(listing.entries, listing.seq)

    def _plan(self, paths: Iterable[str], scan: dict[str, StatKey]) -> _Plan:
        """What the pass will roughly do, from stat data only (nothing is hashed here): enough
        for the guard (deletions need no hash) and for the progress bar's totals."""
        plan = _Plan()
        for path in paths:
            plan.paths += 1
            base = self.db.get(path)
            key = scan.get(path)
            remote = self.view.get(path)
            local: Version | None
            if key is None:
                local = None
            elif key.is_dir:
                local = Version.directory()
            elif base is not None and key.matches(base):
                local = base.version
            else:
                local = Version(False, "")  # changed or unknown: hashed when settled
            action = decide(
                None if base is None else base.version,
                local,
                None if remote is None else remote.version,
            )
            if action is Action.DOWNLOAD and remote is not None:
                plan.transfers += 1
                plan.bytes += remote.size
                if remote.hash is not None:
                    plan.downloads.append(
                        Wanted(path, remote.hash, remote.size, parse_modified(remote.modified))
                    )
            elif action is Action.UPLOAD and key is not None:
                plan.transfers += 1
                plan.bytes += key.size
            elif action is Action.CONFLICT and remote is not None and key is not None:
                plan.transfers += 2
                plan.bytes += remote.size + key.size
            elif action is Action.DELETE_REMOTE and base is not None and not base.is_dir:
                plan.remote_deletes += 1
            elif action is Action.DELETE_LOCAL and base is not None and not base.is_dir:
                plan.local_deletes += 1
        return plan

    async def _resync_loop(self) -> None:
        while True:
            await self._resync.wait()
            self._resync.clear()
            self.log.info("the journal cannot replay what was missed: full listing merge")
            await self._full_pass(listing=True)

    # --- mass-delete guard -------------------------------------------------------------------

    async def _check_deletes(self) -> None:
        """Before deleting on the server: how many tracked files are missing locally right now?
        Evaluated once per burst of local deletions."""
        async with self._deletes_lock:
            marker = self.settler.last_local_delete
            if self._deletes_checked == marker:
                return
            tracked = [e.path for e in self.db.entries().values() if not e.is_dir]
            missing = await asyncio.to_thread(_count_missing, str(self.root), tracked)
            self.guard.check_local_deletes(missing, len(tracked), self.root)
            self._deletes_checked = marker

    # --- local events ------------------------------------------------------------------------

    async def _watch(self, ready: asyncio.Event) -> None:
        import watchfiles  # only realtime runs need it (and it is slow to import)

        state_dir = str(self.state_dir.path)
        sentinel = str(self.state_dir.path / "watch-ready")
        prefix = str(self.root) + os.sep

        def accept(_: watchfiles.Change, path: str) -> bool:
            if path == state_dir or path.startswith(state_dir + os.sep):
                if path == sentinel:
                    ready.set()
                return False
            if not path.startswith(prefix):
                return True  # the folder itself
            return not self.local.ignore.ignores(path[len(prefix) :])

        async for changes in watchfiles.awatch(
            self.root,
            watch_filter=accept,
            debounce=self.options.debounce_ms,
            step=self.options.step_ms,
            ignore_permission_denied=True,
        ):
            await self._on_local(changes)

    async def _wait_watching(self, ready: asyncio.Event) -> None:
        """Poke the state directory until the watcher reports it: from then on, no change in
        the folder can go unnoticed."""
        sentinel = self.state_dir.path / "watch-ready"
        deadline = time.monotonic() + WATCH_READY_TIMEOUT
        attempt = 0
        while not ready.is_set() and time.monotonic() < deadline:
            attempt += 1
            sentinel.write_text(str(attempt))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 0.1)
        sentinel.unlink(missing_ok=True)
        if not ready.is_set():
            self.log.warning("the folder watcher did not confirm it is running")

    async def _on_local(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        if not self.root.is_dir():
            self.guard.check_local_deletes(0, self.db.file_count, self.root)
            raise InvalidLocalPath(f"the folder {self.root} disappeared")
        prefix = str(self.root) + os.sep
        touched: set[str] = set()
        for change, path in changes:
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            touched.add(rel)
            key = self.local.stat_key(rel)
            if key is None:
                touched.update(e.path for e in self.db.descendants(rel))
            elif key.is_dir and change == _ADDED:
                # It may have taken the place of a directory renamed away: the watcher names
                # neither the old tracked entries below it nor the new ones.
                touched.update(e.path for e in self.db.descendants(rel))
                touched.update(await asyncio.to_thread(self.local.walk_dir, rel))
        vanished = {
            p: e for p in touched if (e := self.db.get(p)) is not None and not self.local.exists(p)
        }
        if vanished:
            appeared = {
                p: k
                for p in touched
                if self.db.get(p) is None and (k := self.local.stat_key(p)) is not None
            }
            for move in detect_moves(vanished, appeared):
                await self._local_move(move)
            if any(not e.is_dir and self.db.get(p) is not None for p, e in vanished.items()):
                self.settler.last_local_delete = asyncio.get_running_loop().time()
                await self._check_deletes()
        self.scheduler.add_all(sorted(p for p in touched if not self.local.ignore.ignores(p)))

    async def _local_move(self, move: LocalMove) -> None:
        """A tracked path was renamed locally: rename it on the server too (no transfer)."""
        base = self.db.get(move.source)
        remote = self.view.get(move.source)
        if (
            base is None
            or remote is None
            or remote.version != base.version
            or self.view.get(move.target) is not None
            or self.local.ignore.ignores(move.target)
        ):
            return  # settled as a deletion plus a creation instead
        stamp = self.view.stamp(move.source)
        async with self.scheduler.exclusive():
            try:
                entry = await self.remote.move(move.source, move.target)
            except (RemoteError, ConnectionLost) as exc:
                self.log.debug("server-side move failed", path=move.source, reason=str(exc))
                return
            self._rebase(move.source, move.target)
            self.view.move_tree_if_unchanged(move.source, entry, stamp)
        self.stats.moved += 1
        self.log.info("moved on the server", path=move.source, to=move.target)

    def _rebase(self, source: str, target: str) -> list[str]:
        """Carry the merge base of ``source`` (and everything below it) over to ``target``;
        returns the paths involved, old and new."""
        top = self.db.get(source)
        moved = ([top] if top is not None else []) + self.db.descendants(source)
        for entry in moved:
            self.db.remove(entry.path)
        paths = []
        for entry in moved:
            path = target + entry.path[len(source) :]
            self.db.put(dataclasses.replace(entry, path=path))
            if not entry.is_dir:
                self.chunk_index.move(entry.path, path)
            paths += [entry.path, path]
        return paths

    # --- remote events -----------------------------------------------------------------------

    async def _ws_loop(self) -> None:
        events = self.ws.events()
        try:
            async for event in events:
                if isinstance(event, Connected):
                    self._on_connected(event)
                elif isinstance(event, Disconnected):
                    self.log.warning(
                        "connection to the server lost; reconnecting",
                        reason=event.reason,
                        retry_in=round(event.retry_in, 2),
                    )
                elif isinstance(event, Refused):
                    if event.epoch == self.view.epoch:
                        self.view.skip(event.seq)
                    if event.known:
                        self._refuse(f"operation seq {event.seq}: {event.reason}")
                elif isinstance(event, ServerError):
                    if event.code == "resync_required":
                        self._resync.set()
                    else:
                        self.log.warning("server error", code=event.code, message=event.message)
                else:
                    await self._on_remote(event)
        finally:
            await events.aclose()

    def _on_connected(self, event: Connected) -> None:
        if event.epoch != self.view.epoch:
            self.view.new_epoch(event.epoch)
        if not self._first_ack.done():
            self._first_ack.set_result(event)
            self.log.info("subscribed", server=self.server, recovered=event.recovered)
            return
        self.log.info("reconnected", recovered=event.recovered, seq=event.seq)
        waiting, self.settler.waiting_for_server = self.settler.waiting_for_server, set()
        self.scheduler.add_all(waiting)
        if not event.recovered:
            self._resync.set()

    async def _on_remote(self, event: ChangeEvent) -> None:
        if self.view.epoch is not None and event.epoch != self.view.epoch:
            return
        operation = event.operation  # a Purge (history) touches nothing: view.apply skips it
        if isinstance(operation, Move):
            if operation.metadata.is_directory:
                await self._remote_directory_move(operation, event.seq)
                return
            if len(self.settler.move_hints) > _MAX_MOVE_HINTS:
                self.settler.move_hints.clear()
            self.settler.move_hints[operation.metadata.path] = operation.from_path
        touched = self.view.apply(operation, event.seq)
        if touched:
            self.scheduler.add_all(touched, event.seq)

    async def _remote_directory_move(self, operation: Move, seq: int) -> None:
        """Rename the local directory too (instead of re-downloading its whole content)."""
        if seq <= self.view.last_seq:
            return
        source, target = operation.from_path, operation.metadata.path
        ignores = self.local.ignore.ignores
        rebased: list[str] = []
        async with self.scheduler.exclusive():
            base = self.db.get(source)
            key = self.local.stat_key(source)
            if (
                base is not None
                and base.is_dir
                and key is not None
                and key.is_dir
                and not self.local.exists(target)
                and not ignores(source)
                and not ignores(target)
            ):
                try:
                    self.local.move(source, target, None)
                except (TargetChanged, UnsafeLocalPath, OSError) as exc:
                    self.log.debug("local rename failed", path=source, reason=str(exc))
                else:
                    rebased = self._rebase(source, target)
                    self.stats.moved += 1
                    self.log.info("moved locally", path=source, to=target)
            touched = self.view.apply(operation, seq)
        if touched:
            # The view may leave some paths at the source (see RemoteView._move): their old
            # and new local places are settled too.
            self.scheduler.add_all([*touched, *rebased], seq)

    def _refuse(self, what: str) -> None:
        self.stats.refused += 1
        self.log.warning("refused to apply what the server sent: unsafe path", detail=what)

    def _since(self) -> Cursor | None:
        if self.view.epoch is None:
            return None
        return Cursor(self.view.epoch, self.view.last_seq)

    # --- persistence -------------------------------------------------------------------------

    def _safe_cursor(self) -> Cursor | None:
        """The newest seq up to which every operation is settled (frozen during listings)."""
        if self._cursor_frozen or self.view.epoch is None:
            return None
        floor = self.scheduler.pending_seq_floor()
        seq = self.view.last_seq if floor is None else min(self.view.last_seq, floor - 1)
        return Cursor(self.view.epoch, max(seq, 0))

    async def _flush(self, cursor: Cursor | None) -> None:
        """Make downloaded files durable, then record their bases and the cursor."""
        written = self.db.take_unsynced()
        if written:
            try:
                await asyncio.to_thread(flush_to_disk, self.root, [e.path for e in written])
            except BaseException:
                self.db.untake_unsynced(written)  # flushed (and recorded) by a later flush
                raise
            self.db.write_synced(written)
        if cursor is not None:
            self.db.cursor = cursor
        self.db.commit()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush(self._safe_cursor())
