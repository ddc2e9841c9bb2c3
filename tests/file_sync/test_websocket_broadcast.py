"""Broadcasting: fan-out, pattern filters, concurrent commits, slow consumers, epoch changes."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from quantum_file_sync.changelog import ChangeLog, Listener
from quantum_file_sync.operations import ChangeEvent, Operation
from quantum_file_sync.ws import WsManager, WsSettings

from tests.file_sync.websocket_harness import (
    RawWebSocket,
    create,
    delete,
    move,
    operations,
    receive_json,
    serve_ws,
    subscribe,
    update,
)
from tests.support.waiting import eventually


async def test_websocket_broadcast_reaches_every_subscriber_once(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server:
        clients = [await server.connect().__aenter__() for _ in range(20)]
        try:
            for index, ws in enumerate(clients):
                await subscribe(ws, f"client-{index}")
            async with server.connect() as idle:  # connected but not subscribed: gets nothing
                await server.changelog.commit(create("docs/a.txt"), "client-3")
                await server.changelog.commit(update("docs/a.txt"), None)
                await server.changelog.commit(move("docs/a.txt", "b.txt"), "client-4")
                await server.changelog.commit(delete("b.txt"), None)
                for ws in clients:
                    received = await operations(ws, 4)
                    assert [m["seq"] for m in received] == [1, 2, 3, 4]
                    kinds = [next(iter(m["operation"])) for m in received]
                    assert kinds == ["Create", "Update", "Move", "Delete"]
                    assert [m["source_client"] for m in received] == [
                        "client-3",
                        None,
                        "client-4",
                        None,
                    ]
                    assert len({m["op_id"] for m in received}) == 4
                    assert {m["epoch"] for m in received} == {server.changelog.epoch}
                await idle.send_str('{"type":"Ping"}')
                assert await receive_json(idle) == {"type": "Pong"}  # not a FileOperation
        finally:
            for ws in clients:
                await ws.close()
        sent = {"type": "FileOperation"}
        assert server.metric("quantum_ws_messages_sent_total", sent) == 80
        assert server.metric("quantum_ws_broadcast_duration_seconds_count") == 4


async def test_websocket_patterns_filter_on_the_server(tmp_path: Path) -> None:
    async with (
        serve_ws(tmp_path) as server,
        server.connect() as docs,
        server.connect() as texts,
        server.connect() as everything,
    ):
        await subscribe(docs, "docs", patterns=["docs/*"])
        await subscribe(texts, "texts", patterns=["**/*.txt"])
        await subscribe(everything, "all")
        paths = ["docs/a.md", "src/main.py", "notes/deep/x.txt", "docs/sub/y.bin"]
        for path in paths:
            await server.changelog.commit(create(path), None)
        await server.changelog.commit(move("docs/a.md", "archive/a.md"), None)  # leaves docs/
        await server.changelog.commit(delete("src/main.py"), None)

        def path_of(message: dict[str, object]) -> str:
            operation = message["operation"]
            assert isinstance(operation, dict)
            ((_, body),) = operation.items()
            return str(body["metadata"]["path"] if "metadata" in body else body["path"])

        assert [path_of(m) for m in await operations(everything, 6)] == [
            *paths,
            "archive/a.md",
            "src/main.py",
        ]
        assert [path_of(m) for m in await operations(docs, 3)] == [
            "docs/a.md",
            "docs/sub/y.bin",
            "archive/a.md",
        ]
        assert [m["seq"] for m in await operations(texts, 1)] == [3]
        # Nothing else is queued for the filtered clients.
        for ws in (docs, texts):
            await ws.send_str('{"type":"Ping"}')
            assert await receive_json(ws) == {"type": "Pong"}


async def test_websocket_concurrent_commits_and_clients_keep_seq_order(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server:
        clients = [await server.connect().__aenter__() for _ in range(8)]
        try:
            for index, ws in enumerate(clients):
                await subscribe(ws, f"c{index}")
            results = await asyncio.gather(
                *(server.changelog.commit(create(f"f{i}.txt"), f"w{i % 4}") for i in range(300))
            )
            assert sorted(e.seq for e in results) == list(range(1, 301))

            async def drain(ws: aiohttp.ClientWebSocketResponse) -> list[int]:
                return [m["seq"] for m in await operations(ws, 300)]

            for seqs in await asyncio.gather(*(drain(ws) for ws in clients)):
                assert seqs == list(range(1, 301))
        finally:
            for ws in clients:
                await ws.close()


async def test_websocket_slow_consumer_is_dropped_and_others_stay_on_time(tmp_path: Path) -> None:
    settings = WsSettings(send_buffer=32)
    async with serve_ws(tmp_path, settings=settings) as server, server.connect() as fast:
        slow = await RawWebSocket.open(server.port, recv_buffer=4096)
        try:
            await slow.send_text('{"type":"Subscribe","client_id":"slow"}')
            await slow.recv_until(b'"Ack"')  # then it never reads again
            await subscribe(fast, "fast")
            rss_before = _rss()
            big = "d/" + "x" * 8000  # ~8 KB per frame
            total = 1500  # ~12 MB offered to the slow client
            latencies: list[float] = []

            async def consume() -> None:
                for _ in range(total):
                    message = await receive_json(fast, validate=False)
                    path = message["operation"]["Create"]["metadata"]["path"]
                    latencies.append(time.time() - float(path.rsplit("/", 1)[1]))

            consumer = asyncio.create_task(consume())
            for _ in range(total // 50):
                await asyncio.gather(
                    *(
                        server.changelog.commit(create(f"{big}/{time.time()}"), None)
                        for _ in range(50)
                    )
                )
            await asyncio.wait_for(consumer, 30)
            assert max(latencies) < 2.0
            dropped = {"reason": "slow"}
            assert server.metric("quantum_ws_dropped_clients_total", dropped) == 1
            # closed without waiting on its backlog
            await eventually(lambda: len(server.manager.connections()) <= 1, timeout=2)
            assert [c.client_id for c in server.manager.connections()] == ["fast"]
            # What the slow client could not read was not kept in the server.
            assert _rss() - rss_before < 8 * 1024 * 1024
            assert server.metric("quantum_ws_errors_total", {"code": "too_slow"}) == 1
        finally:
            slow.close()


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryChangeLog(ChangeLog):
    """The smallest ChangeLog: enough to drive WsManager through an epoch change."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._epoch = "first"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @property
    def epoch(self) -> str:
        return self._epoch

    async def head(self) -> int:
        return 0

    async def commit(self, operation: Operation, source_client: str | None) -> ChangeEvent:
        raise NotImplementedError

    def publish(self, event: ChangeEvent) -> None:
        self._epoch = event.epoch
        for listener in self.listeners:
            listener(event)

    async def replay(self, epoch: str, since: int) -> Sequence[ChangeEvent] | None:
        return None

    def listen(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


async def test_websocket_epoch_change_asks_clients_to_resync(tmp_path: Path) -> None:
    changelog = MemoryChangeLog()
    manager = WsManager(
        changelog, WsSettings(), CollectorRegistry(), structlog.get_logger(), lambda t: True
    )
    await manager.start()
    app = web.Application()
    app.router.add_get("/ws", manager.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/ws"
            async with session.ws_connect(url) as ws:
                await subscribe(ws, "c")
                changelog.publish(ChangeEvent(create("a"), None, "first", 5, "op5"))
                assert (await operations(ws, 1))[0]["seq"] == 5
                # A reset journal starts again at seq 1 in a new epoch: not swallowed as a dupe.
                changelog.publish(ChangeEvent(create("b"), None, "second", 1, "op1"))
                error = await receive_json(ws)
                assert (error["type"], error["code"]) == ("Error", "resync_required")
                message = await receive_json(ws)
                assert (message["epoch"], message["seq"]) == ("second", 1)
                assert json.loads(json.dumps(message))["operation"]["Create"]
    finally:
        await manager.close()
        await runner.cleanup()


async def test_websocket_changes_committed_together_are_filtered_and_ordered(
    tmp_path: Path,
) -> None:
    """A group commit hands several changes over at once; each subscriber still gets exactly
    its matching ones, in seq order (they travel in one write)."""
    async with (
        serve_ws(tmp_path) as server,
        server.connect() as docs,
        server.connect() as everything,
    ):
        await subscribe(docs, "docs", patterns=["docs"])
        await subscribe(everything, "all")
        paths = [f"docs/{i}" if i % 3 == 0 else f"src/{i}" for i in range(150)]
        events = await asyncio.gather(*(server.changelog.commit(create(p), None) for p in paths))
        by_path = {path: event.seq for path, event in zip(paths, events, strict=True)}
        expected = sorted(by_path[p] for p in paths if p.startswith("docs/"))
        assert [m["seq"] for m in await operations(docs, len(expected))] == expected
        assert [m["seq"] for m in await operations(everything, 150)] == list(range(1, 151))
        batches = server.metric("quantum_ws_broadcast_duration_seconds_count")
        assert batches < 150  # some changes did share a broadcast
        sent = {"type": "FileOperation"}
        assert server.metric("quantum_ws_messages_sent_total", sent) == 150 + len(expected)
