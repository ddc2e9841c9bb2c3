"""Two Quantum nodes, one shared root, one Redis: what happens on one node is seen on the other."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.file_sync.conftest import http
from tests.multinode.conftest import (
    StartNode,
    WsClient,
    eventually_async,
    listing,
    metric,
    upload,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]


async def test_an_upload_through_b_reaches_a_websocket_client_on_a(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    a, b = start_node("a"), start_node("b")
    client = await WsClient.subscribe(session, a, "watcher-on-a")
    try:
        assert await asyncio.to_thread(upload, b, "from-b.txt", b"hello from b", "uploader") == 201
        message = await client.wait_for_path("from-b.txt")
        assert message["source_client"] == "uploader"
        assert "Create" in message["operation"]
        assert message["operation"]["Create"]["metadata"]["size"] == len(b"hello from b")
        b_list = await asyncio.to_thread(listing, b)
        assert (message["epoch"], message["seq"]) == (b_list["epoch"], b_list["seq"])
        assert client.ack["epoch"] == b_list["epoch"]
    finally:
        await client.close()


async def test_a_catches_up_on_changes_made_on_b(
    start_node: StartNode, session: aiohttp.ClientSession
) -> None:
    a, b = start_node("a"), start_node("b")
    first = await WsClient.subscribe(session, a, "roamer")
    await first.close()
    epoch, seq = first.ack["epoch"], first.ack["seq"]
    for i in range(3):
        assert await asyncio.to_thread(upload, b, f"while-away-{i}.txt", b"x" * i) == 201

    def journal_has_them() -> None:
        reply = http("GET", f"{a.url}/api/changes?since={seq}&epoch={epoch}")
        assert reply.status == 200
        body = reply.json()
        assert body["recovered"] is True
        paths = [op["operation"]["Create"]["metadata"]["path"] for op in body["operations"]]
        assert paths == [f"while-away-{i}.txt" for i in range(3)]

    await eventually_async(journal_has_them)
    back = await WsClient.subscribe(session, a, "roamer", since=(epoch, seq))
    try:
        assert back.ack["recovered"] is True
        await back.wait_for_path("while-away-2.txt")
        assert back.paths() == [f"while-away-{i}.txt" for i in range(3)]
        assert [m["seq"] for m in back.operations] == [seq + 1, seq + 2, seq + 3]
    finally:
        await back.close()


async def test_a_change_made_on_disk_is_broadcast_once_by_one_node(
    start_node: StartNode, shared_root: Path, session: aiohttp.ClientSession
) -> None:
    a, b = start_node("a"), start_node("b")
    owners = [metric(node, "quantum_disk_watch_owner") for node in (a, b)]
    assert sorted(o for o in owners if o is not None) == [0.0, 1.0]
    on_a = await WsClient.subscribe(session, a, "on-a")
    on_b = await WsClient.subscribe(session, b, "on-b")
    try:
        (shared_root / "dropped-in.txt").write_bytes(b"written straight to the shared disk")
        await on_a.wait_for_path("dropped-in.txt")
        await on_b.wait_for_path("dropped-in.txt")
        # An upload's own disk events must not come back as a second, disk-originated change.
        assert await asyncio.to_thread(upload, a, "uploaded.txt", b"via the api") == 201
        await on_a.wait_for_path("uploaded.txt")
        await on_b.wait_for_path("uploaded.txt")
        await asyncio.sleep(1.5)  # both watchers have long seen both files by now
        for client in (on_a, on_b):
            assert client.paths() == ["dropped-in.txt", "uploaded.txt"]
            assert [m["source_client"] for m in client.operations] == [None, "uploader"]
        assert on_a.operations == on_b.operations
    finally:
        await on_a.close()
        await on_b.close()


async def test_both_nodes_serve_the_same_files_and_journal(start_node: StartNode) -> None:
    a, b = start_node("a"), start_node("b")
    assert await asyncio.to_thread(upload, a, "docs/one.txt", b"1") == 201
    assert await asyncio.to_thread(upload, b, "docs/two.txt", b"22") == 201

    def same_view() -> None:
        on_a, on_b = listing(a), listing(b)
        assert (on_a["epoch"], on_a["seq"]) == (on_b["epoch"], on_b["seq"])
        assert {f["path"] for f in on_a["files"]} == {f["path"] for f in on_b["files"]}
        assert {"docs/one.txt", "docs/two.txt"} <= {f["path"] for f in on_a["files"]}

    await eventually_async(same_view)
    assert http("GET", a.url + "/api/files/docs/two.txt").body == b"22"
    assert http("GET", b.url + "/api/files/docs/one.txt").body == b"1"
