"""The disk watch fails over: what is written to disk while no node holds the lease is announced."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.multinode.conftest import StartNode, WsClient, eventually_async, metric

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(60)]


def _assert_owner(value: float | None) -> None:
    assert value == 1.0


async def test_a_file_written_while_the_lease_holder_is_dead_is_announced_once(
    start_node: StartNode, shared_root: Path, session: aiohttp.ClientSession
) -> None:
    a = start_node("a")
    assert metric(a, "quantum_disk_watch_owner") == 1.0  # alone, a holds the disk-watch lease
    b = start_node("b")
    assert metric(b, "quantum_disk_watch_owner") == 0.0
    client = await WsClient.subscribe(session, b, "survivor")
    try:
        a.kill()
        # Nobody publishes disk changes until a's lease expires and b takes it over.
        (shared_root / "orphan.txt").write_bytes(b"written while no node held the lease")
        await eventually_async(lambda: _assert_owner(metric(b, "quantum_disk_watch_owner")), 15)
        created = await client.wait_for_path("orphan.txt")
        assert created["operation"]["Create"]["metadata"]["size"] == 36
        await asyncio.sleep(1.0)  # a duplicate (watcher event after the rescan) would be here
        assert client.paths() == ["orphan.txt"]
    finally:
        await client.close()
