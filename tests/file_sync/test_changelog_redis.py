"""What only the Redis change log does: several nodes, lost subscriptions, outages, new epochs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from quantum_file_sync.changelog import ChangeLogUnavailable
from quantum_file_sync.changelog_redis import RedisChangeLog
from quantum_file_sync.index import Entry, Index
from quantum_file_sync.journaled_state import encode_entry as encode
from quantum_file_sync.metadata import StatKey
from quantum_file_sync.operations import (
    ChangeEvent,
    Create,
    Delete,
    FileMetadata,
    Move,
    Update,
)
from redis.asyncio import Redis

from tests.fixtures.redis import RedisServer
from tests.support import waiting

pytestmark = pytest.mark.timeout(60)


def create(index: int) -> Create:
    return Create(
        FileMetadata(f"f{index}.txt", index, "cd" * 32, "2024-05-01T12:00:00Z", is_directory=False)
    )


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Redis round trips (and its restarts) get longer than the default wait."""
    await waiting.eventually(predicate, timeout)


@asynccontextmanager
async def node(url: str, prefix: str, **options: Any) -> AsyncIterator[RedisChangeLog]:
    options = {"heartbeat_interval": 0.1, "command_timeout": 0.5, "delivery_wait": 0.3} | options
    log = RedisChangeLog(url, key_prefix=prefix, node_id=uuid.uuid4().hex, **options)
    await log.open()
    try:
        yield log
    finally:
        await log.close()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_two_nodes_share_one_sequence_and_see_everything(redis_url: str, prefix: str) -> None:
    async with node(redis_url, prefix) as a, node(redis_url, prefix) as b:
        assert a.epoch == b.epoch
        seen_a: list[ChangeEvent] = []
        seen_b: list[ChangeEvent] = []
        a.listen(seen_a.append)
        b.listen(seen_b.append)

        async def commit_many(log: RedisChangeLog, base: int) -> list[ChangeEvent]:
            return [await log.commit(create(base + i), None) for i in range(30)]

        from_a, from_b = await asyncio.gather(commit_many(a, 0), commit_many(b, 100))
        committed = sorted(from_a + from_b, key=lambda e: e.seq)
        assert [e.seq for e in committed] == list(range(1, 61))
        await eventually(lambda: len(seen_a) >= 60 and len(seen_b) >= 60)
        await asyncio.sleep(0.05)
        assert seen_a == committed
        assert seen_b == committed
        assert await a.head() == await b.head() == 60
        assert await b.replay(a.epoch, 50) == committed[50:]


async def test_a_commit_is_delivered_locally_before_commit_returns(
    redis_url: str, prefix: str
) -> None:
    async with node(redis_url, prefix) as a:
        seen: list[ChangeEvent] = []
        a.listen(seen.append)
        event = await a.commit(create(1), "me")
        assert seen == [event]
        assert await a.head() == 1


async def test_events_missed_by_a_lost_subscription_are_read_back(
    redis_url: str, prefix: str
) -> None:
    registry = CollectorRegistry()
    async with node(redis_url, prefix, registry=registry) as a, node(redis_url, prefix) as b:
        seen: list[ChangeEvent] = []
        a.listen(seen.append)
        before = [await b.commit(create(i), None) for i in range(3)]
        await eventually(lambda: len(seen) == 3)
        async with Redis.from_url(redis_url) as admin:
            await admin.client_kill_filter(_type="pubsub")
            # a reconnects after a backoff; meanwhile these are published to nobody on a's side
            during = [await b.commit(create(10 + i), None) for i in range(5)]
        after = [await b.commit(create(20 + i), None) for i in range(3)]
        await eventually(lambda: len(seen) >= 11)
        await asyncio.sleep(0.05)
        assert seen == before + during + after
        assert sample(registry, "quantum_redis_refilled_events_total") >= 1
        assert sample(registry, "quantum_redis_outages_total") == 1
        assert sample(registry, "quantum_redis_up") == 1


async def test_redis_restart_means_new_epoch_and_normal_service(
    redis_factory: Callable[[], RedisServer], prefix: str
) -> None:
    server = redis_factory()
    registry = CollectorRegistry()
    async with node(server.url, prefix, registry=registry) as a:
        epochs: list[str] = []
        a.on_epoch_change(epochs.append)
        old_epoch = a.epoch
        await a.commit(create(1), None)
        await a.commit(create(2), None)

        server.kill()
        await eventually(lambda: not a.available)
        assert sample(registry, "quantum_redis_up") == 0
        assert sample(registry, "quantum_redis_outages_total") == 1
        with pytest.raises(ChangeLogUnavailable):
            await a.commit(create(3), None)
        assert await a.replay(old_epoch, 0) is None
        assert await a.head() == 2
        assert a.epoch == old_epoch
        assert not a.owns_disk_watch()

        server.start()
        await eventually(lambda: a.available)
        assert a.epoch != old_epoch
        assert epochs == [a.epoch]
        assert await a.head() == 0
        event = await a.commit(create(4), None)
        assert (event.epoch, event.seq) == (a.epoch, 1)
        assert await a.replay(a.epoch, 0) == [event]
        await eventually(a.owns_disk_watch)
        assert sample(registry, "quantum_redis_up") == 1
        assert sample(registry, "quantum_redis_outages_total") == 1


async def test_a_node_that_lost_a_change_abandons_the_epoch(redis_url: str, prefix: str) -> None:
    async with node(redis_url, prefix) as a, node(redis_url, prefix) as b:
        old_epoch = a.epoch
        epochs_b: list[str] = []
        b.on_epoch_change(epochs_b.append)
        await a.commit(create(1), None)
        async with Redis.from_url(redis_url) as admin:
            # Writes (scripts included) stall past a's command timeout; Redis itself stays up.
            await admin.client_pause(800, all=False)  # CLIENT PAUSE 800 WRITE
            with pytest.raises(ChangeLogUnavailable):
                await a.commit(create(2), None)
        # Whatever became of that commit, clients of the old epoch cannot be sure to have it.
        await eventually(lambda: a.available and a.epoch != old_epoch)
        await eventually(lambda: b.epoch == a.epoch)
        assert epochs_b == [a.epoch]
        assert await b.replay(old_epoch, 1) is None
        event = await b.commit(create(3), None)
        assert (event.epoch, event.seq) == (a.epoch, 1)


async def test_an_unreachable_redis_at_start_is_not_fatal(
    redis_factory: Callable[[], RedisServer], prefix: str
) -> None:
    server = redis_factory()
    server.kill()
    async with node(server.url, prefix) as a:
        assert not a.available
        assert await a.head() == 0
        assert await a.replay(a.epoch, 0) is None
        offline_epoch = a.epoch
        server.start()
        await eventually(lambda: a.available)
        assert a.epoch != offline_epoch
        assert (await a.commit(create(1), None)).seq == 1


async def test_exactly_one_node_owns_the_disk_watch_with_failover(
    redis_url: str, prefix: str
) -> None:
    async with node(redis_url, prefix, lease_ttl=0.3) as a:
        async with node(redis_url, prefix, lease_ttl=0.3) as b:
            assert a.owns_disk_watch()
            assert not b.owns_disk_watch()
        # b is gone; a still holds it
        assert a.owns_disk_watch()
        async with node(redis_url, prefix, lease_ttl=0.3) as c:
            changes: list[bool] = []
            c.on_disk_watch_change(changes.append)
            await a.close()  # a clean shutdown releases the lease
            await eventually(c.owns_disk_watch, timeout=2)
            assert changes == [True]


def entry(number: int, *, is_dir: bool = False) -> Entry:
    key = StatKey(7, number, 0 if is_dir else number, number * 1000)
    return Entry(is_dir, key, None if is_dir else f"{number:064x}")


def metadata(rel: str, known: Entry) -> FileMetadata:
    return FileMetadata(rel, known.key.size, known.hash, "2024-05-01T12:00:00Z", known.is_dir)


async def test_commits_keep_the_journaled_state_as_the_index_has_it(
    redis_url: str, prefix: str
) -> None:
    index = Index()
    async with node(redis_url, prefix) as log:
        log.track_state(index.get, root_dev=0)
        state = log.journaled_state
        assert await state.load() is None  # never seeded
        index.put("keep.txt", entry(1))
        assert await state.seed(index.entries())

        async def put(rel: str, known: Entry, kind: type[Create | Update] = Create) -> None:
            index.put(rel, known)
            await log.commit(kind(metadata(rel, known)), None)

        await put("d", entry(2, is_dir=True))
        await put("d/a.txt", entry(3))
        await put("d/sub", entry(4, is_dir=True))
        await put("d/sub/b.txt", entry(5))
        # Neighbours of "d/" in byte order: subtree ranges must not reach them.
        await put("d.txt", entry(6))
        await put("d0.txt", entry(7))
        await put("d/a.txt", entry(8), Update)

        index.move_tree("d", "e")
        index.put("e", entry(9, is_dir=True))
        await log.commit(Move("d", metadata("e", entry(9, is_dir=True))), None)
        index.remove_tree("e/sub")
        await log.commit(Delete("e/sub", True), None)
        await put("e", entry(10))  # a file replaces the directory and its contents
        await put("gone", entry(11, is_dir=True))
        await put("gone/x.txt", entry(12))
        index.remove_tree("gone")
        await log.commit(Delete("gone", True), None)

        loaded = await state.load()
        assert loaded is not None
        assert sorted(loaded) == sorted(index.entries())
        assert [rel for rel, _ in sorted(loaded)] == ["d.txt", "d0.txt", "e", "keep.txt"]


async def test_a_seed_does_not_overwrite_what_was_committed_meanwhile(
    redis_url: str, prefix: str
) -> None:
    index = Index()
    async with node(redis_url, prefix) as log:
        log.track_state(index.get, root_dev=0)
        state = log.journaled_state
        stale = [("dir", entry(1, is_dir=True)), ("dir/old.txt", entry(2)), ("f.txt", entry(3))]
        # The seed's steps, with commits of another node in between (as a slow seed would see).
        await state._begin_seed(keys=state.keys, args=["token"])
        await log.commit(Delete("dir", True), None)
        index.put("f.txt", entry(4))
        await log.commit(Update(metadata("f.txt", entry(4))), None)
        args = ["token", *(value for rel, known in stale for value in (rel, encode(known)))]
        assert await state._seed_chunk(keys=state.keys, args=args) == 1
        assert await state.load() is None  # not ready until the seed finishes
        assert await state._finish_seed(keys=state.keys, args=["token"]) == 1
        assert await state.load() == [("f.txt", entry(4))]
        # A seed that another one replaced writes nothing.
        assert await state._seed_chunk(keys=state.keys, args=args) == 0


async def test_the_state_names_roots_filesystem_the_same_way_on_every_machine(
    redis_url: str, prefix: str
) -> None:
    """Machines mounting one shared folder give it different device numbers."""
    index = Index()
    async with node(redis_url, prefix) as a, node(redis_url, prefix) as b:
        a.track_state(index.get, root_dev=111)
        b.track_state(Index().get, root_dev=222)
        assert await a.journaled_state.seed([])
        on_root = Entry(False, StatKey(111, 5, 3, 1000), "ab" * 32)
        elsewhere = Entry(False, StatKey(333, 6, 3, 1000), "ab" * 32)
        for rel, known in [("root.txt", on_root), ("mounted/other.txt", elsewhere)]:
            index.put(rel, known)
            await a.commit(Create(metadata(rel, known)), None)
        loaded = await b.journaled_state.load()
        assert loaded is not None
        assert dict(loaded) == {
            "root.txt": Entry(False, StatKey(222, 5, 3, 1000), "ab" * 32),
            "mounted/other.txt": elsewhere,
        }
