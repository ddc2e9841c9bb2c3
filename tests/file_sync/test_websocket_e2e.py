"""End to end: a real ``quantum`` process, HTTP API changes, and WebSocket subscribers."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.file_sync.conftest import StartQuantum, file_sync_config
from tests.file_sync.websocket_harness import receive_json, subscribe

Predicate = Callable[[dict[str, Any]], bool]


class Subscriber:
    """A WebSocket client that remembers every FileOperation it saw, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def until(self, predicate: Predicate, timeout: float = 10.0) -> dict[str, Any]:
        """The first not-yet-consumed FileOperation matching ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                message: dict[str, Any] = await receive_json(self.ws, timeout)
                assert message["type"] == "FileOperation", message
                if self.seen:
                    assert message["seq"] > self.seen[-1]["seq"], (self.seen[-1], message)
                self.seen.append(message)
                if predicate(message):
                    return message


def kind_and_path(kind: str, path: str) -> Predicate:
    def match(message: dict[str, Any]) -> bool:
        body = message["operation"].get(kind)
        if body is None:
            return False
        found = body["metadata"]["path"] if "metadata" in body else body["path"]
        return bool(found == path)

    return match


async def test_websocket_end_to_end_api_changes_reach_every_subscriber(
    start_quantum: StartQuantum,
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    api = server.url + "/api"
    async with aiohttp.ClientSession() as http:
        async with (
            http.ws_connect(server.url + "/ws") as ws_alice,
            http.ws_connect(server.url + "/ws") as ws_bob,
        ):
            ack = await subscribe(ws_alice, "alice")
            await subscribe(ws_bob, "bob")
            alice, bob = Subscriber(ws_alice), Subscriber(ws_bob)
            epoch = ack["epoch"]

            content = b"quarterly numbers\n"
            async with http.put(
                f"{api}/files/docs/report.txt", data=content, headers={"X-Quantum-Client": "alice"}
            ) as reply:
                assert reply.status == 201
                written = await reply.json()
            assert written["hash"] == hashlib.sha256(content).hexdigest()
            for client in (alice, bob):
                message = await client.until(kind_and_path("Create", "docs/report.txt"))
                assert message["operation"]["Create"]["metadata"] == written
                assert (message["source_client"], message["epoch"]) == ("alice", epoch)

            async with http.put(
                f"{api}/files/docs/report.txt", data=b"v2", headers={"X-Quantum-Client": "alice"}
            ) as reply:
                assert reply.status == 200
                updated = await reply.json()
            for client in (alice, bob):
                message = await client.until(kind_and_path("Update", "docs/report.txt"))
                assert message["operation"]["Update"]["metadata"] == updated
                assert updated["size"] == 2 and message["source_client"] == "alice"

            async with http.post(
                f"{api}/mkdir", json={"path": "archive"}, headers={"X-Quantum-Client": "bob"}
            ) as reply:
                assert reply.status in (200, 201)
            for client in (alice, bob):
                message = await client.until(kind_and_path("Create", "archive"))
                metadata = message["operation"]["Create"]["metadata"]
                assert (metadata["is_directory"], metadata["hash"]) == (True, None)
                assert message["source_client"] == "bob"

            async with http.post(
                f"{api}/move",
                json={"from": "docs/report.txt", "to": "archive/report.txt"},
                headers={"X-Quantum-Client": "bob"},
            ) as reply:
                assert reply.status == 200
            for client in (alice, bob):
                message = await client.until(kind_and_path("Move", "archive/report.txt"))
                move = message["operation"]["Move"]
                assert move["from"] == "docs/report.txt"
                assert move["metadata"]["hash"] == updated["hash"]

            async with http.delete(
                f"{api}/files/archive/report.txt", headers={"X-Quantum-Client": "alice"}
            ) as reply:
                assert reply.status in (200, 204)
            for client in (alice, bob):
                message = await client.until(kind_and_path("Delete", "archive/report.txt"))
                assert message["operation"]["Delete"] == {
                    "path": "archive/report.txt",
                    "is_directory": False,
                }
            # Both saw the very same stream.
            assert [m["op_id"] for m in alice.seen] == [m["op_id"] for m in bob.seen]

            # A change made directly on disk is broadcast too, with no source client.
            (server.root / "dropped-in.txt").write_text("by hand")
            message = await alice.until(kind_and_path("Create", "dropped-in.txt"))
            assert message["source_client"] is None
            last_seen = alice.seen[-1]["seq"]

        # Away for a while, then back: exactly what was missed, in order.
        for name in ("one", "two", "three"):
            async with http.put(f"{api}/files/away/{name}.txt", data=name.encode()) as reply:
                assert reply.status == 201
        async with http.ws_connect(server.url + "/ws") as ws:
            ack = await subscribe(ws, "alice", since={"epoch": epoch, "seq": last_seen})
            assert ack["recovered"] is True
            back = Subscriber(ws)
            await back.until(kind_and_path("Create", "away/three.txt"))
            assert back.seen[0]["seq"] == last_seen + 1
            assert [m["seq"] for m in back.seen] == list(range(last_seen + 1, ack["seq"] + 1))

        async with http.get(server.url + "/metrics") as reply:
            metrics = await reply.text()
        assert 'quantum_ws_messages_sent_total{type="FileOperation"}' in metrics
        assert "quantum_ws_connections 0.0" in metrics


async def test_websocket_end_to_end_resume_across_a_restart(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    async with aiohttp.ClientSession() as http:
        async with http.put(server.url + "/api/files/a.txt", data=b"a") as reply:
            assert reply.status == 201
        async with http.ws_connect(server.url + "/ws") as ws:
            ack = await subscribe(ws, "c")
        server.stop()
        server.restart()
        async with http.put(server.url + "/api/files/b.txt", data=b"b") as reply:
            assert reply.status == 201
        async with http.ws_connect(server.url + "/ws") as ws:
            since = {"epoch": ack["epoch"], "seq": ack["seq"]}
            again = await subscribe(ws, "c", since=since)
            assert (again["epoch"], again["recovered"]) == (ack["epoch"], True)
            message = await Subscriber(ws).until(kind_and_path("Create", "b.txt"))
            assert message["seq"] > ack["seq"]
            assert json.loads(json.dumps(message))["epoch"] == ack["epoch"]
