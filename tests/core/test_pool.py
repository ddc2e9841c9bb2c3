"""UsagePool: one resource per key, closed by its last user."""

from __future__ import annotations

import asyncio

from quantum.pool import UsagePool


class Resource:
    created = 0

    def __init__(self) -> None:
        Resource.created += 1
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def make() -> Resource:
    await asyncio.sleep(0.01)
    return Resource()


async def test_concurrent_acquires_share_one_resource() -> None:
    pool = UsagePool()
    before = Resource.created
    results = await asyncio.gather(*(pool.acquire("k", make) for _ in range(5)))
    resources = {id(resource) for resource, _ in results}
    assert len(resources) == 1
    assert [created for _, created in results].count(True) == 1
    assert Resource.created == before + 1
    assert pool.users("k") == 5


async def test_last_release_closes() -> None:
    pool = UsagePool()
    first, _ = await pool.acquire("k", make)
    second, created = await pool.acquire("k", make)
    assert second is first
    assert not created
    await pool.release("k")
    assert not first.closed
    await pool.release("k")
    assert first.closed
    third, created = await pool.acquire("k", make)
    assert created
    assert third is not first


async def test_keys_are_independent() -> None:
    pool = UsagePool()
    a, _ = await pool.acquire("a", make)
    b, _ = await pool.acquire("b", make)
    assert a is not b
    await pool.release("a")
    assert a.closed
    assert not b.closed
    await pool.release("missing")  # harmless
