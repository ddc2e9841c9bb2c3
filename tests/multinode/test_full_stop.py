"""Changes made on disk while every node is stopped are journaled once (journaled state)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.file_sync.conftest import RunningQuantum, changes, http
from tests.fixtures.redis import RedisServer
from tests.multinode.conftest import StartNode, WsClient, eventually, metric, upload
from tests.support.processes import wait_for_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]

RESCAN_DONE = "disk rescan finished"
SEEDED = "journaled state seeded"
PROCESS_TIMEOUT = 30.0
"""For what waits on whole processes (start-up, reconnects) on a busy machine."""
Change = tuple[str, str, str | None]
"""(kind, path, from) of one journaled operation."""

# What the edits below must be journaled as, each exactly once.
EXPECTED: Counter[Change] = Counter(
    {
        ("Update", "edit.txt", None): 1,
        ("Create", "new.txt", None): 1,
        ("Create", "new-dir", None): 1,
        ("Create", "new-dir/z.txt", None): 1,
        ("Move", "renamed.txt", "old-name.txt"): 1,
        ("Move", "renamed-from-disk.txt", "from-disk.txt"): 1,
        ("Move", "moved-dir", "moving-dir"): 1,
        ("Delete", "doomed.txt", None): 1,
        ("Delete", "doomed-dir", None): 1,
    }
)


def change(operation: dict[str, Any]) -> Change:
    ((kind, body),) = operation.items()
    if kind == "Delete":
        return (kind, body["path"], None)
    return (kind, body["metadata"]["path"], body.get("from"))


def rescans(node: RunningQuantum) -> list[dict[str, Any]]:
    """The node's ``disk rescan finished`` log records, oldest first (all of its runs)."""
    records = (json.loads(line) for line in node.logs().splitlines() if line.startswith("{"))
    return [record for record in records if record.get("event") == RESCAN_DONE]


def restart_together(nodes: list[RunningQuantum]) -> tuple[RunningQuantum, RunningQuantum]:
    """Start the stopped ``nodes`` at the same moment; (holder, follower) once one of them,
    the disk-watch lease holder, has finished its rescan."""
    before = {node.port: len(rescans(node)) for node in nodes}
    for node in nodes:
        node.process.start(wait=False)
    for node in nodes:
        wait_for_port(node.port)

    def rescanned() -> list[RunningQuantum]:
        return [node for node in nodes if len(rescans(node)) > before[node.port]]

    wait_until(lambda: bool(rescanned()), PROCESS_TIMEOUT, "the lease holder's rescan")
    (holder,) = rescanned()
    (follower,) = [node for node in nodes if node is not holder]
    assert metric(holder, "quantum_disk_watch_owner") == 1.0
    return holder, follower


def caught_up(node: RunningQuantum, seq: int) -> None:
    """Wait until ``node`` has delivered every change up to ``seq`` (it follows the journal
    through pub/sub, a moment behind the node that committed)."""
    wait_until(lambda: changes(node)["seq"] >= seq, what=f"seq {seq} on {node.url}")


def prepare_cluster(start_node: StartNode, root: Path) -> tuple[RunningQuantum, RunningQuantum]:
    """Two nodes whose journal knows a small tree: some of it uploaded, some found on disk."""
    (root / "from-disk.txt").write_bytes(b"was here before the first start")
    a = start_node("a")
    wait_until(lambda: bool(rescans(a)), PROCESS_TIMEOUT, "a's first rescan (it seeds the state)")
    b = start_node("b")
    for path in [
        "keep.txt",
        "edit.txt",
        "old-name.txt",
        "doomed.txt",
        "dir/inner.txt",
        "moving-dir/x.txt",
        "doomed-dir/y.txt",
    ]:
        assert upload(a, path, f"content of {path}".encode()) == 201
    return a, b


def edit_while_stopped(root: Path) -> None:
    (root / "edit.txt").write_bytes(b"edited while every node was stopped")
    (root / "new.txt").write_bytes(b"new")
    (root / "new-dir").mkdir()
    (root / "new-dir" / "z.txt").write_bytes(b"z")
    os.rename(root / "old-name.txt", root / "renamed.txt")
    os.rename(root / "from-disk.txt", root / "renamed-from-disk.txt")
    os.rename(root / "moving-dir", root / "moved-dir")
    (root / "doomed.txt").unlink()
    shutil.rmtree(root / "doomed-dir")
    os.utime(root / "keep.txt")  # a new mtime, the same content: nothing to announce


async def test_a_client_resuming_after_a_full_stop_sees_each_change_once(
    start_node: StartNode, shared_root: Path, session: aiohttp.ClientSession
) -> None:
    a, b = prepare_cluster(start_node, shared_root)
    cursor = changes(a)
    epoch, seq = cursor["epoch"], cursor["seq"]
    a.stop()
    b.stop()

    edit_while_stopped(shared_root)
    restart_together([a, b])

    for node in (a, b):
        caught_up(node, seq + sum(EXPECTED.values()))
        reply = http("GET", f"{node.url}/api/changes?since={seq}&epoch={epoch}").json()
        assert reply["recovered"] is True
        assert Counter(change(m["operation"]) for m in reply["operations"]) == EXPECTED
    client = await WsClient.subscribe(session, b, "returning", since=(epoch, seq))
    try:
        assert client.ack["recovered"] is True
        await eventually(lambda: len(client.operations) >= sum(EXPECTED.values()))
        assert Counter(change(m["operation"]) for m in client.operations) == EXPECTED
        assert [m["seq"] for m in client.operations] == list(
            range(seq + 1, seq + 1 + sum(EXPECTED.values()))
        )
    finally:
        await client.close()


async def test_nodes_starting_together_journal_the_differences_once(
    start_node: StartNode, shared_root: Path
) -> None:
    a, b = prepare_cluster(start_node, shared_root)
    seq = changes(a)["seq"]
    a.stop()
    b.stop()
    edit_while_stopped(shared_root)
    holder, follower = restart_together([a, b])
    assert rescans(holder)[-1]["journaled"] == sum(EXPECTED.values())
    follower_rescans = len(rescans(follower))
    caught_up(follower, seq + sum(EXPECTED.values()))
    journaled = changes(follower, seq)
    assert Counter(change(m["operation"]) for m in journaled["operations"]) == EXPECTED

    # The follower takes over the lease: it rescans against the state in Redis, which holds
    # the differences already, so it announces nothing again.
    holder.stop()
    wait_until(
        lambda: len(rescans(follower)) > follower_rescans,
        PROCESS_TIMEOUT,
        "the follower's rescan after the takeover",
    )
    assert rescans(follower)[-1]["journaled"] == 0
    assert changes(follower, seq)["operations"] == journaled["operations"]


async def test_a_redis_that_lost_its_data_is_seeded_again_by_the_lease_holder(
    start_node: StartNode, shared_root: Path, cluster_redis: RedisServer
) -> None:
    a, b = prepare_cluster(start_node, shared_root)
    seeds = sum(n.logs().count(SEEDED) for n in (a, b))
    cluster_redis.kill()  # no persistence: epoch, journal and state are gone
    cluster_redis.start()
    wait_until(
        lambda: sum(n.logs().count(SEEDED) for n in (a, b)) > seeds,
        PROCESS_TIMEOUT,
        "the lease holder seeding the state again",
    )
    wait_until(
        lambda: all(metric(n, "quantum_redis_up") == 1.0 for n in (a, b)),
        PROCESS_TIMEOUT,
        "both nodes back on Redis",
    )
    cursor = changes(a)
    a.stop()
    b.stop()

    edit_while_stopped(shared_root)
    restart_together([a, b])
    caught_up(a, cursor["seq"] + sum(EXPECTED.values()))
    reply = http("GET", f"{a.url}/api/changes?since={cursor['seq']}&epoch={cursor['epoch']}")
    assert reply.json()["recovered"] is True
    assert Counter(change(m["operation"]) for m in reply.json()["operations"]) == EXPECTED
