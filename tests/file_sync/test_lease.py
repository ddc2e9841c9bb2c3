"""The disk-watch lease against a real Redis: one holder, renewal, release, failover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from quantum_file_sync.lease import DiskWatchLease
from redis.asyncio import Redis

from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

TTL = 0.3
KEY = "test:lease"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_one_of_two_nodes_holds_the_lease_and_keeps_it(redis_client: Redis) -> None:
    changes: list[bool] = []
    first = DiskWatchLease(redis_client, KEY, "node-a", ttl=TTL, on_change=changes.append)
    second = DiskWatchLease(redis_client, KEY, "node-b", ttl=TTL)
    await first.start()
    await second.start()
    try:
        assert first.owned
        assert not second.owned
        await asyncio.sleep(TTL * 4)  # several renewals
        assert first.owned
        assert not second.owned
        assert await redis_client.get(KEY) == b"node-a"
        assert changes == [True]
    finally:
        await first.close()
        await second.close()
    assert changes == [True, False]


async def test_a_clean_shutdown_hands_the_lease_over_at_once(redis_client: Redis) -> None:
    first = DiskWatchLease(redis_client, KEY, "node-a", ttl=5.0)
    second = DiskWatchLease(redis_client, KEY, "node-b", ttl=5.0)
    await first.start()
    await second.start()
    try:
        await first.close()
        assert await redis_client.get(KEY) is None
        assert await second.refresh()
    finally:
        await second.close()


async def test_a_dead_holder_fails_over_after_the_ttl(redis_client: Redis) -> None:
    holder = DiskWatchLease(redis_client, KEY, "node-a", ttl=TTL)
    standby = DiskWatchLease(redis_client, KEY, "node-b", ttl=TTL)
    await holder.start()
    await standby.start()
    try:
        assert holder._task is not None
        holder._task.cancel()  # the holder stops renewing, as if its process froze or died
        started = asyncio.get_running_loop().time()
        await eventually(lambda: standby.owned)
        assert asyncio.get_running_loop().time() - started < TTL * 2 + 0.2
        assert not holder.owned  # its local view expired no later than the key did
        assert await redis_client.get(KEY) == b"node-b"
    finally:
        await holder.close()
        await standby.close()


async def test_closing_a_former_holder_leaves_the_new_holders_key(redis_client: Redis) -> None:
    holder = DiskWatchLease(redis_client, KEY, "node-a", ttl=TTL)
    await holder.start()
    assert holder._task is not None
    holder._task.cancel()
    await asyncio.sleep(TTL + 0.1)
    standby = DiskWatchLease(redis_client, KEY, "node-b", ttl=5.0)
    await standby.start()
    try:
        assert standby.owned
        await holder.close()
        assert await redis_client.get(KEY) == b"node-b"
    finally:
        await standby.close()


async def test_suspend_gives_up_ownership_locally(redis_client: Redis) -> None:
    lease = DiskWatchLease(redis_client, KEY, "node-a", ttl=5.0)
    await lease.start()
    try:
        assert lease.owned
        lease.suspend()
        assert not lease.owned
        assert await lease.refresh()  # the key is still ours in Redis: taken back at once
    finally:
        await lease.close()
