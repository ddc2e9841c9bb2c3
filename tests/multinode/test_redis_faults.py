"""Faults of a two-node cluster: Redis dies and comes back, a node dies, Redis is late."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.file_sync.conftest import RunningQuantum, http
from tests.fixtures.redis import RedisServer
from tests.multinode.conftest import (
    StartNode,
    WsClient,
    eventually,
    eventually_async,
    listing,
    metric,
    upload,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]


def assert_no_duplicates(messages: list[dict[str, Any]]) -> None:
    """Within an epoch: seqs strictly increase and no change (op_id, path) arrives twice."""
    assert len({m["op_id"] for m in messages}) == len(messages)
    for _, group in itertools.groupby(messages, key=lambda m: m["epoch"]):
        in_epoch = list(group)
        seqs = [m["seq"] for m in in_epoch]
        assert seqs == sorted(set(seqs)), seqs
        paths = Counter(str(m["operation"]) for m in in_epoch)
        assert max(paths.values()) == 1, paths.most_common(3)


def redis_up(*nodes: RunningQuantum) -> None:
    for node in nodes:
        assert metric(node, "quantum_redis_up") == 1.0


async def test_redis_killed_and_restarted_during_traffic(
    start_node: StartNode,
    cluster_redis: RedisServer,
    shared_root: Path,
    session: aiohttp.ClientSession,
) -> None:
    a, b = start_node("a"), start_node("b")
    watcher = await WsClient.subscribe(session, a, "watcher")
    old_epoch = watcher.ack["epoch"]
    uploaded: dict[str, bytes] = {}
    statuses: list[int] = []
    counter = itertools.count()

    async def traffic(count: int) -> None:
        for _ in range(count):
            i = next(counter)
            path, content = f"traffic/{i:03}.txt", f"file {i}".encode()
            node = (a, b)[i % 2]
            statuses.append(await asyncio.to_thread(upload, node, path, content))
            uploaded[path] = content

    try:
        await traffic(10)
        await watcher.wait_for_path("traffic/009.txt")

        cluster_redis.kill()
        await traffic(10)  # the nodes keep serving; the changes are on disk, not journaled
        assert a.process.proc is not None and a.process.proc.poll() is None
        assert metric(a, "quantum_redis_up") == 0.0

        cluster_redis.start()  # empty: it had no persistence
        await eventually_async(lambda: redis_up(a, b), timeout=15)
        await traffic(10)
        await watcher.wait_for_path("traffic/029.txt")

        assert set(statuses) == {201}
        for path, content in uploaded.items():
            assert (shared_root / path).read_bytes() == content
        for node in (a, b):
            names = {f["path"] for f in listing(node)["files"]}
            assert set(uploaded) <= names
            outages = metric(node, "quantum_redis_outages_total")
            assert outages is not None and outages >= 1
        # After the restart the journal is a new one: live clients are told to resync, and
        # a client of the old epoch is not offered a replay it could not trust.
        new_epoch = listing(a)["epoch"]
        assert new_epoch != old_epoch
        assert any(m.get("code") == "resync_required" for m in watcher.messages)
        assert (
            http("GET", f"{b.url}/api/changes?since=5&epoch={old_epoch}").json()["recovered"]
            is False
        )
        operations = watcher.operations
        assert_no_duplicates(operations)
        assert {m["epoch"] for m in operations} == {old_epoch, new_epoch}
        received = {m["operation"]["Create"]["metadata"]["path"] for m in operations}
        assert {f"traffic/{i:03}.txt" for i in [*range(10), *range(20, 30)]} <= received
    finally:
        await watcher.close()


async def test_clients_of_a_dead_node_resume_on_the_other(
    start_node: StartNode, shared_root: Path, session: aiohttp.ClientSession
) -> None:
    a = start_node("a")
    assert metric(a, "quantum_disk_watch_owner") == 1.0  # alone, a holds the disk-watch lease
    b = start_node("b")
    client = await WsClient.subscribe(session, a, "survivor")
    for i in range(3):
        assert await asyncio.to_thread(upload, b, f"before-{i}.txt", b"b") == 201
    await client.wait_for_path("before-2.txt")
    last = client.operations[-1]

    a.kill()
    await asyncio.wait_for(client.closed.wait(), timeout=10)
    for i in range(3):
        assert await asyncio.to_thread(upload, b, f"missed-{i}.txt", b"m") == 201

    resumed = await WsClient.subscribe(session, b, "survivor", since=(last["epoch"], last["seq"]))
    try:
        assert resumed.ack["recovered"] is True
        await resumed.wait_for_path("missed-2.txt")
        assert resumed.paths() == [f"missed-{i}.txt" for i in range(3)]
        assert [m["seq"] for m in resumed.operations] == [last["seq"] + i for i in (1, 2, 3)]

        # b takes over the disk watch once a's lease expires, and publishes what it sees.
        await eventually_async(
            lambda: _assert_equal(metric(b, "quantum_disk_watch_owner"), 1.0), timeout=15
        )
        (shared_root / "after-failover.txt").write_bytes(b"seen by b")
        await resumed.wait_for_path("after-failover.txt")
        await client.close()
        await asyncio.sleep(1.0)
        assert_no_duplicates(resumed.operations)
    finally:
        await resumed.close()


async def test_a_node_starts_without_redis_and_joins_when_it_comes(
    start_node: StartNode, cluster_redis: RedisServer, session: aiohttp.ClientSession
) -> None:
    cluster_redis.kill()
    a = start_node("a")
    assert http("GET", a.url + "/api/list").status == 200
    assert await asyncio.to_thread(upload, a, "early.txt", b"before redis") == 201
    cluster_redis.start()
    await eventually_async(lambda: redis_up(a), timeout=15)
    client = await WsClient.subscribe(session, a, "late")
    try:
        assert await asyncio.to_thread(upload, a, "later.txt", b"with redis") == 201
        message = await client.wait_for_path("later.txt")
        assert message["seq"] == client.ack["seq"] + 1
        await eventually(lambda: len(client.operations) == 1)
    finally:
        await client.close()


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected
