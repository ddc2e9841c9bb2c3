"""One conformance suite for every ChangeLog: the embedded SQLite journal and the Redis broker.

A *store* is where a journal lives (a SQLite file, a Redis key prefix); ``store.make()`` builds a
new ChangeLog on it, which is how a test reopens a journal (or, for Redis, adds a node).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from quantum_file_sync.changelog import ChangeLog
from quantum_file_sync.changelog_redis import RedisChangeLog
from quantum_file_sync.operations import (
    ChangeEvent,
    Create,
    Delete,
    FileMetadata,
    Move,
    Operation,
    Update,
)

from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)


class Store(Protocol):
    def make(self, *, max_events: int = 1000, max_age: float = 3600.0) -> ChangeLog: ...

    def reset(self) -> None:
        """Lose the journal (deleted file, flushed Redis)."""


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def make(self, *, max_events: int = 1000, max_age: float = 3600.0) -> ChangeLog:
        from quantum_file_sync.changelog_sqlite import SqliteChangeLog

        return SqliteChangeLog(self.path, max_events=max_events, max_age=max_age)

    def reset(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class RedisStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:8]}:"

    def make(self, *, max_events: int = 1000, max_age: float = 3600.0) -> ChangeLog:
        return RedisChangeLog(
            self.url,
            key_prefix=self.prefix,
            stream_maxlen=max_events,
            max_age=max_age,
            node_id=uuid.uuid4().hex,
            delivery_wait=0.3,
        )

    def reset(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            keys = list(client.scan_iter(match=self.prefix + "*"))
            if keys:
                client.delete(*keys)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "journal.sqlite3")
    return RedisStore(request.getfixturevalue("redis_url"))


@asynccontextmanager
async def opened(store: Store, **options: Any) -> AsyncIterator[ChangeLog]:
    log = store.make(**options)
    await log.open()
    try:
        yield log
    finally:
        await log.close()


def metadata(path: str, *, size: int = 3, is_directory: bool = False) -> FileMetadata:
    return FileMetadata(
        path=path,
        size=size,
        hash=None if is_directory else "ab" * 32,
        modified="2024-05-01T12:00:00Z",
        is_directory=is_directory,
    )


def create(index: int) -> Create:
    return Create(metadata(f"dir/file-{index}.txt", size=index))


def collect(log: ChangeLog) -> tuple[list[ChangeEvent], Callable[[], None]]:
    events: list[ChangeEvent] = []
    return events, log.listen(events.append)


async def test_a_new_journal_is_empty(store: Store) -> None:
    async with opened(store) as log:
        assert log.epoch
        assert await log.head() == 0
        assert await log.replay(log.epoch, 0) == []


async def test_commit_assigns_increasing_seqs_and_keeps_the_operation(store: Store) -> None:
    operations: list[tuple[Operation, str | None]] = [
        (Create(metadata("a.txt")), "client-1"),
        (Update(metadata("a.txt", size=9)), None),
        (Create(metadata("docs", size=0, is_directory=True)), "client-2"),
        (Move(from_path="a.txt", metadata=metadata("docs/a.txt", size=9)), "client-1"),
        (Delete(path="docs", is_directory=True), None),
        (Create(metadata("naïve ünïcode/ file €.txt")), 'quote"client'),
    ]
    async with opened(store) as log:
        events = [await log.commit(op, source) for op, source in operations]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        assert len({e.op_id for e in events}) == len(events)
        for event, (op, source) in zip(events, operations, strict=True):
            assert event.operation == op
            assert event.source_client == source
            assert event.epoch == log.epoch
            assert json.loads(event.frame) == event.to_message()
        assert await log.head() == 6


async def test_epoch_and_seq_survive_a_reopen(store: Store) -> None:
    async with opened(store) as log:
        first = await log.commit(create(1), None)
        epoch = log.epoch
    async with opened(store) as log:
        assert log.epoch == epoch
        assert await log.head() == 1
        assert await log.replay(epoch, 0) == [first]
        assert (await log.commit(create(2), None)).seq == 2


async def test_a_lost_journal_starts_a_new_epoch(store: Store) -> None:
    async with opened(store) as log:
        await log.commit(create(1), None)
        old_epoch = log.epoch
    store.reset()
    async with opened(store) as log:
        assert log.epoch != old_epoch
        assert await log.head() == 0
        assert await log.replay(old_epoch, 0) is None
        assert (await log.commit(create(2), None)).seq == 1


async def test_replay_returns_what_came_after_since(store: Store) -> None:
    async with opened(store) as log:
        events = [await log.commit(create(i), f"c{i}") for i in range(10)]
        assert await log.replay(log.epoch, 4) == events[4:]
        assert await log.replay(log.epoch, 0) == events
        assert await log.replay(log.epoch, 9) == events[9:]
        assert await log.replay(log.epoch, 10) == []
        replayed = await log.replay(log.epoch, 8)
        assert replayed is not None
        assert [e.frame for e in replayed] == [e.frame for e in events[8:]]


async def test_replay_refuses_what_it_cannot_vouch_for(store: Store) -> None:
    async with opened(store) as log:
        await log.commit(create(1), None)
        assert await log.replay("some-other-epoch", 0) is None
        assert await log.replay(log.epoch, 5) is None  # from the future: a reset journal
        assert await log.replay(log.epoch, -1) is None


async def test_listeners_get_every_event_once_and_in_order(store: Store) -> None:
    async with opened(store) as log:
        first, stop_first = collect(log)
        second, stop_second = collect(log)
        committed = [await log.commit(create(i), None) for i in range(20)]
        await eventually(lambda: len(first) >= 20 and len(second) >= 20)
        assert first == committed
        assert second == committed
        stop_first()
        late = await log.commit(create(99), None)
        await eventually(lambda: len(second) >= 21)
        await asyncio.sleep(0.05)
        assert first == committed
        assert second == [*committed, late]
        stop_second()


async def test_concurrent_commits_get_distinct_ordered_seqs(store: Store) -> None:
    async with opened(store) as log:
        seen, stop = collect(log)
        committed = await asyncio.gather(*(log.commit(create(i), None) for i in range(50)))
        assert sorted(e.seq for e in committed) == list(range(1, 51))
        await eventually(lambda: len(seen) >= 50)
        await asyncio.sleep(0.05)
        assert [e.seq for e in seen] == list(range(1, 51))
        assert sorted(seen, key=lambda e: e.seq) == sorted(committed, key=lambda e: e.seq)
        stop()


async def test_retention_keeps_the_newest_max_events(store: Store) -> None:
    async with opened(store, max_events=5) as log:
        events = [await log.commit(create(i), None) for i in range(20)]
        assert await log.replay(log.epoch, 0) is None
        assert await log.replay(log.epoch, 15) == events[15:]
        assert await log.replay(log.epoch, 19) == events[19:]
        assert await log.head() == 20


async def test_retention_drops_events_older_than_max_age(store: Store) -> None:
    async with opened(store, max_age=0.3) as log:
        await log.commit(create(1), None)
        await log.commit(create(2), None)
        await asyncio.sleep(0.5)
        fresh = await log.commit(create(3), None)
        assert await log.replay(log.epoch, 0) is None
        assert await log.replay(log.epoch, 2) == [fresh]


async def test_a_lone_node_owns_the_disk_watch(store: Store) -> None:
    async with opened(store) as log:
        assert log.owns_disk_watch()
