"""The embedded change log: a SQLite journal (WAL) plus in-process fan-out to listeners.

- One database file holds one *epoch* (uuid4 hex in the ``meta`` table, created with the file).
  Restarting on the same file keeps the epoch, so clients resume with ``since``; a deleted or
  corrupt file (moved aside as ``*.corrupt-<time>``) starts a new database and a new epoch.
- ``commit`` is a group commit: concurrent commits queue up while the previous transaction is on
  disk, then go to SQLite together in one transaction (one fsync) on a dedicated thread. seq values
  are assigned in queue order; listeners run on the event loop in seq order after the transaction
  is durable, then each ``commit`` returns its event.
- Durability: ``journal_mode=WAL`` with ``synchronous=FULL`` (the WAL is fsync'd at every commit).
  ``NORMAL`` would survive a process crash but could lose the last transactions on power loss,
  and a seq that clients already saw would then be assigned again to a different change in the
  same epoch; group commit keeps the fsync per batch, not per change, so FULL stays fast.
- Retention, in the transaction of each commit and on open: rows beyond ``max_events`` go by a
  primary-key range delete; rows older than ``max_age`` are found by scanning from the oldest row
  until the first young one (a single row read when nothing is due). ``meta.trimmed_through``
  remembers the newest deleted seq, which decides whether ``replay`` can still answer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from quantum_file_sync.changelog import ChangeLog, Listener
from quantum_file_sync.operations import ChangeEvent, Operation, operation_from_json

_T = TypeVar("_T")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    op_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    source_client TEXT,
    operation TEXT NOT NULL,
    ts REAL NOT NULL
);
"""
_Row = tuple[int, str, str, str | None, str, float]

log = structlog.get_logger(__name__)


def _frame(op_json: str, source_client: str | None, seq: int, epoch: str, op_id: str) -> str:
    """The ``FileOperation`` message, assembled from the stored operation JSON (no re-encoding)."""
    source = "null" if source_client is None else json.dumps(source_client)
    return (
        f'{{"type":"FileOperation","operation":{op_json},"source_client":{source},'
        f'"seq":{seq},"epoch":"{epoch}","op_id":"{op_id}"}}'
    )


class SqliteChangeLog(ChangeLog):
    def __init__(self, path: Path, *, max_events: int = 100_000, max_age: float = 7 * 86400.0):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._path = Path(path)
        self._max_events = max_events
        self._max_age = max_age
        self._epoch = ""
        self._head = 0
        self._listeners: list[Listener] = []
        self._queue: list[tuple[Operation, str | None, asyncio.Future[ChangeEvent]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        # Owned by the journal thread:
        self._db: sqlite3.Connection | None = None
        self._trimmed_through = 0

    # --- ChangeLog ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantum-journal")
        self._epoch, self._head = await self._run(self._open_db)

    async def close(self) -> None:
        if self._closed or self._executor is None:
            self._closed = True
            return
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        await self._run(self._close_db)
        self._executor.shutdown(wait=True)

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def path(self) -> Path:
        return self._path

    async def head(self) -> int:
        return self._head

    async def commit(self, operation: Operation, source_client: str | None) -> ChangeEvent:
        if self._closed or self._executor is None:
            raise RuntimeError("the change log is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ChangeEvent] = loop.create_future()
        self._queue.append((operation, source_client, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="quantum-journal-flush")
        return await future

    async def replay(self, epoch: str, since: int) -> Sequence[ChangeEvent] | None:
        if epoch != self._epoch or since < 0 or since > self._head:
            return None
        return await self._run(self._replay, since)

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # --- group commit (event loop side) ------------------------------------------------------

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write_batch(batch)
        finally:
            self._flusher = None

    async def _write_batch(
        self, batch: list[tuple[Operation, str | None, asyncio.Future[ChangeEvent]]]
    ) -> None:
        epoch, now = self._epoch, time.time()
        rows: list[_Row] = []
        events: list[ChangeEvent] = []
        seq = self._head
        for operation, source_client, _ in batch:
            seq += 1
            op_id = uuid.uuid4().hex
            op_json = json.dumps(operation.to_json(), separators=(",", ":"))
            rows.append((seq, op_id, epoch, source_client, op_json, now))
            frame = _frame(op_json, source_client, seq, epoch, op_id)
            events.append(ChangeEvent(operation, source_client, epoch, seq, op_id, frame))
        try:
            await self._run(self._write, rows, now - self._max_age)
        except Exception as exc:
            log.error("journal write failed", path=str(self._path), error=str(exc))
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for event, (_, _, future) in zip(events, batch, strict=True):
            self._head = event.seq
            for listener in tuple(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("change listener failed", seq=event.seq)
            if not future.done():
                future.set_result(event)

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # --- journal thread ----------------------------------------------------------------------

    def _open_db(self) -> tuple[str, int]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._init_db()
        except sqlite3.DatabaseError as exc:
            self._close_db()
            aside = self._move_aside()
            log.warning(
                "journal unreadable, starting a new epoch",
                path=str(self._path),
                moved_to=str(aside),
                error=str(exc),
            )
            return self._init_db()

    def _init_db(self) -> tuple[str, int]:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._db = db
        if db.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        epoch = meta.get("epoch")
        if epoch is None:
            epoch = uuid.uuid4().hex
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM events")
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("epoch", epoch), ("trimmed_through", "0"), ("schema_version", "1")],
            )
            db.execute("COMMIT")
        self._trimmed_through = int(meta.get("trimmed_through", "0"))
        db.execute("BEGIN IMMEDIATE")
        self._trim_by_age(time.time() - self._max_age)
        db.execute("COMMIT")
        return epoch, self._db_head()

    def _move_aside(self) -> Path:
        aside = self._path.with_name(f"{self._path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            candidate = self._path.with_name(self._path.name + suffix)
            if candidate.exists():
                candidate.replace(aside.with_name(aside.name + suffix))
        return aside

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _db_head(self) -> int:
        assert self._db is not None
        newest = self._db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        return max(newest or 0, self._trimmed_through)

    def _write(self, rows: list[_Row], age_cutoff: float) -> None:
        db = self._db
        assert db is not None
        trimmed = self._trimmed_through
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO events (seq, op_id, epoch, source_client, operation, ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._trim_by_count(rows[-1][0] - self._max_events)
            self._trim_by_age(age_cutoff)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._trimmed_through = trimmed
            raise

    def _trim_by_count(self, through: int) -> None:
        if through > self._trimmed_through:
            self._trim_through(through)

    def _trim_by_age(self, cutoff: float) -> None:
        assert self._db is not None
        # seq order is commit order, so the first recent row ends the (short) scan.
        first_recent = self._db.execute(
            "SELECT seq FROM events WHERE ts >= ? ORDER BY seq LIMIT 1", (cutoff,)
        ).fetchone()
        through = first_recent[0] - 1 if first_recent else self._db_head()
        if through > self._trimmed_through:
            self._trim_through(through)

    def _trim_through(self, through: int) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM events WHERE seq <= ?", (through,))
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'trimmed_through'", (str(through),))
        self._trimmed_through = through

    def _replay(self, since: int) -> list[ChangeEvent] | None:
        db = self._db
        assert db is not None
        if since < self._trimmed_through or since > self._db_head():
            return None
        events = []
        for seq, op_id, epoch, source_client, op_json, _ts in db.execute(
            "SELECT seq, op_id, epoch, source_client, operation, ts FROM events"
            " WHERE seq > ? ORDER BY seq",
            (since,),
        ):
            operation = operation_from_json(json.loads(op_json))
            frame = _frame(op_json, source_client, seq, epoch, op_id)
            events.append(ChangeEvent(operation, source_client, epoch, seq, op_id, frame))
        return events
