"""Connection lifecycle, error handling, limits and stale cleanup, over real sockets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from quantum_file_sync.ws import WsSettings

from tests.file_sync.test_websocket_protocol import MALFORMED
from tests.file_sync.websocket_harness import (
    RawWebSocket,
    create,
    masked_frame,
    operations,
    receive_close,
    receive_json,
    serve_ws,
    subscribe,
)
from tests.support.waiting import eventually


async def test_websocket_lifecycle_subscribe_ack_ping_and_cleanup(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server, server.connect() as ws:
        assert server.manager.connections()[0].subscribed is False
        assert server.metric("quantum_ws_connections") == 1
        ack = await subscribe(ws, "c1")
        assert ack == {
            "type": "Ack",
            "client_id": "c1",
            "epoch": server.changelog.epoch,
            "seq": 0,
            "recovered": False,
        }
        await ws.send_json({"type": "Ping"})
        assert await receive_json(ws) == {"type": "Pong"}
        await ws.send_json({"type": "Pong"})  # accepted silently
        (info,) = server.manager.connections()
        assert (info.client_id, info.subscribed, info.patterns) == ("c1", True, None)
        assert info.peer == "127.0.0.1"
        assert info.connected_since <= info.last_seen <= time.time()
        await ws.close()
        await eventually(lambda: not server.manager.connections())
        assert server.metric("quantum_ws_connections") == 0
        received = {"type": "Ping"}
        assert server.metric("quantum_ws_messages_received_total", received) == 1
        assert server.metric("quantum_ws_messages_sent_total", {"type": "Ack"}) == 1


async def test_websocket_seed_browser_snippet_semantics(tmp_path: Path) -> None:
    """The seed's JS: send Subscribe on open, log every FileOperation's ``operation``."""
    async with serve_ws(tmp_path) as server, server.connect() as ws:
        await ws.send_str(json.dumps({"type": "Subscribe", "client_id": "browser-client-123"}))
        await server.changelog.commit(create("documents/new-file.txt", 1024), "someone")
        seen: list[dict[str, Any]] = []
        while not seen:
            message = json.loads((await ws.receive(timeout=5)).data)
            if message["type"] == "FileOperation":
                seen.append(message["operation"])
        metadata = seen[0]["Create"]["metadata"]
        assert metadata["path"] == "documents/new-file.txt"
        assert metadata["size"] == 1024
        assert set(metadata) == {"path", "size", "hash", "modified", "is_directory"}


async def test_websocket_every_malformed_message_gets_an_error_and_the_connection_lives(
    tmp_path: Path,
) -> None:
    settings = WsSettings(max_message_size=1 << 20, message_burst=1000)
    async with serve_ws(tmp_path, settings=settings) as server, server.connect() as ws:
        for text, code in MALFORMED:
            await ws.send_str(text)
            reply = await receive_json(ws)
            assert (reply["type"], reply["code"]) == ("Error", code), text[:60]
            await ws.send_str('{"type":"Ping"}')
            assert await receive_json(ws) == {"type": "Pong"}
        await ws.send_bytes(b'{"type":"Ping"}')
        reply = await receive_json(ws)
        assert (reply["type"], reply["code"]) == ("Error", "invalid_message")
        # Still usable for real work afterwards.
        await subscribe(ws, "survivor")
        await server.changelog.commit(create("a.txt"), None)
        assert (await operations(ws, 1))[0]["seq"] == 1
        assert server.metric("quantum_ws_errors_total", {"code": "invalid_json"}) == 4
        invalid = {"type": "invalid"}
        assert server.metric("quantum_ws_messages_received_total", invalid) == len(MALFORMED) + 1


async def test_websocket_oversized_frame_closes_with_1009(tmp_path: Path) -> None:
    settings = WsSettings(max_message_size=1024)
    async with serve_ws(tmp_path, settings=settings) as server:
        async with server.connect() as ws:
            await ws.send_str(json.dumps({"type": "Subscribe", "client_id": "x" * 2000}))
            assert await receive_close(ws) == 1009
        dropped = {"reason": "protocol_error"}
        await eventually(lambda: server.metric("quantum_ws_dropped_clients_total", dropped) == 1)
        async with server.connect() as ws:  # the server itself is fine
            await subscribe(ws, "next")


async def test_websocket_rate_flood_gets_rate_limited_then_closed_1008(tmp_path: Path) -> None:
    settings = WsSettings(messages_per_second=5, message_burst=10)
    async with serve_ws(tmp_path, settings=settings) as server, server.connect() as ws:
        for _ in range(100):
            await ws.send_str('{"type":"Ping"}')
        replies: list[str] = []
        async with asyncio.timeout(5):
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                replies.append(data.get("code") or data["type"])
        assert ws.close_code == 1008
        assert replies[:10] == ["Pong"] * 10
        assert "rate_limited" in replies
        # Closed before all 100 were processed (how many got through depends on how fast
        # the messages went out: tokens come back at 5/s, and at 10/s for the hard limit).
        assert len(replies) < 100
        assert server.metric("quantum_ws_dropped_clients_total", {"reason": "rate_limited"}) == 1


async def test_websocket_moderate_overuse_is_refused_but_not_closed(tmp_path: Path) -> None:
    settings = WsSettings(messages_per_second=1000, message_burst=3)
    async with serve_ws(tmp_path, settings=settings) as server, server.connect() as ws:
        for _ in range(5):
            await ws.send_str('{"type":"Ping"}')
        kinds = [(await receive_json(ws)).get("code", "Pong") for _ in range(5)]
        assert kinds[:3] == ["Pong"] * 3
        assert "rate_limited" in kinds[3:]
        await asyncio.sleep(0.05)  # tokens come back
        await ws.send_str('{"type":"Ping"}')
        assert await receive_json(ws) == {"type": "Pong"}


async def test_websocket_same_client_id_replaces_the_older_connection(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server:
        async with server.connect() as first, server.connect() as second:
            await subscribe(first, "laptop")
            await subscribe(second, "laptop")
            assert await receive_close(first) == 4000
            await server.changelog.commit(create("a.txt"), None)
            assert (await operations(second, 1))[0]["seq"] == 1
            (info,) = [c for c in server.manager.connections() if c.subscribed]
            assert info.client_id == "laptop"
            dropped = {"reason": "replaced"}
            assert server.metric("quantum_ws_dropped_clients_total", dropped) == 1


async def test_websocket_resubscribe_on_one_connection_changes_id_and_patterns(
    tmp_path: Path,
) -> None:
    async with serve_ws(tmp_path) as server, server.connect() as ws:
        await subscribe(ws, "one", patterns=["a/*"])
        await subscribe(ws, "two", patterns=["b/*"])
        await server.changelog.commit(create("a/x"), None)
        await server.changelog.commit(create("b/x"), None)
        (message,) = await operations(ws, 1)
        assert message["operation"]["Create"]["metadata"]["path"] == "b/x"
        (info,) = server.manager.connections()
        assert (info.client_id, info.patterns) == ("two", ("b/*",))


async def test_websocket_stale_clients_are_closed_and_removed(tmp_path: Path) -> None:
    settings = WsSettings(heartbeat_interval=0.1, heartbeat_timeout=0.4, cleanup_interval=0.2)
    async with serve_ws(tmp_path, settings=settings) as server:
        async with server.connect() as silent, server.connect(autoping=True) as polite:
            await subscribe(silent, "silent")
            await subscribe(polite, "polite")
            # ``silent`` never answers the server's protocol pings; ``polite`` does (as a browser
            # does by itself), so it stays although it never sends a message of its own.
            inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()

            async def read_polite() -> None:
                while True:
                    await inbox.put(await polite.receive())

            reader = asyncio.create_task(read_polite())
            try:
                started = time.monotonic()
                assert await receive_close(silent, timeout=3) == 4001
                assert time.monotonic() - started < 2
                await eventually(lambda: len(server.manager.connections()) < 2)  # silent gone
                await asyncio.sleep(0.6)  # past the heartbeat timeout: polite must stay
                infos = server.manager.connections()
                assert [info.client_id for info in infos] == ["polite"]
                await server.changelog.commit(create("a.txt"), None)
                message = await asyncio.wait_for(inbox.get(), 5)
                assert json.loads(message.data)["type"] == "FileOperation"
            finally:
                reader.cancel()
            stale = {"reason": "stale"}
            assert server.metric("quantum_ws_dropped_clients_total", stale) == 1


async def test_websocket_token_from_subscribe_query_or_header(tmp_path: Path) -> None:
    def authenticate(token: str | None) -> bool:
        return token == "s3cret"

    async with serve_ws(tmp_path, authenticate=authenticate) as server:
        async with server.connect() as ws:
            await ws.send_json({"type": "Subscribe", "client_id": "a"})
            reply = await receive_json(ws)
            assert (reply["type"], reply["code"]) == ("Error", "unauthorized")
            await ws.send_json({"type": "Subscribe", "client_id": "a", "token": "wrong"})
            assert (await receive_json(ws))["code"] == "unauthorized"
            await server.changelog.commit(create("hidden.txt"), None)
            await subscribe(ws, "a", token="s3cret")
            assert [c.subscribed for c in server.manager.connections()] == [True]
        async with server.connect(params={"token": "s3cret"}) as ws:
            await subscribe(ws, "b")
        headers = {"Authorization": "Bearer s3cret"}
        async with server.connect(headers=headers) as ws:
            await subscribe(ws, "c")


async def test_websocket_repeated_bad_tokens_close_the_connection(tmp_path: Path) -> None:
    async with serve_ws(tmp_path, authenticate=lambda token: False) as server:
        async with server.connect() as ws:
            for _ in range(5):
                await ws.send_json({"type": "Subscribe", "client_id": "a", "token": "guess"})
            codes = []
            async with asyncio.timeout(5):
                while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                    codes.append(json.loads(message.data)["code"])
            assert codes == ["unauthorized"] * 5
            assert ws.close_code == 1008


async def test_websocket_connection_limit_answers_503_and_keeps_existing(tmp_path: Path) -> None:
    settings = WsSettings(max_connections=2, retry_after=7)
    async with serve_ws(tmp_path, settings=settings) as server:
        async with server.connect() as one, server.connect() as two:
            await subscribe(one, "one")
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await server.session.ws_connect(server.url)
            assert refused.value.status == 503
            assert refused.value.headers is not None
            assert refused.value.headers["Retry-After"] == "7"
            async with server.session.get(
                server.url,
                headers={
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            ) as response:
                assert response.status == 503
                assert (await response.json())["code"] == "too_many_connections"
            await server.changelog.commit(create("a.txt"), None)
            assert (await operations(one, 1))[0]["seq"] == 1
            await two.send_str('{"type":"Ping"}')
            assert await receive_json(two) == {"type": "Pong"}
        await eventually(lambda: not server.manager.connections())
        async with server.connect() as again:
            await subscribe(again, "again")


async def test_websocket_plain_http_request_gets_426(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server:
        # The seed's troubleshooting curl (no Sec-WebSocket-Version): a clear answer, not a hang.
        headers = {
            "Upgrade": "websocket",
            "Connection": "upgrade",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        async with server.session.get(server.url, headers=headers) as response:
            assert response.status == 426
            assert response.headers["Sec-WebSocket-Version"] == "13"
            assert (await response.json())["code"] == "upgrade_required"


async def test_websocket_protocol_pings_are_answered_and_count_as_activity(tmp_path: Path) -> None:
    settings = WsSettings(heartbeat_interval=0.1, heartbeat_timeout=0.4)
    async with serve_ws(tmp_path, settings=settings) as server:
        raw = await RawWebSocket.open(server.port)
        try:
            for _ in range(8):  # 0.8 s, twice the timeout, kept alive by our pings only
                await raw.send(masked_frame(b"hi", opcode=0x9))
                await asyncio.sleep(0.1)
            assert len(server.manager.connections()) == 1
            await raw.recv_until(b"\x8a\x02hi")  # the pong echoes the ping's payload
        finally:
            raw.close()


async def test_websocket_server_close_says_going_away(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server, server.connect() as ws:
        await subscribe(ws, "c")
        closing = asyncio.create_task(server.manager.close())
        assert await receive_close(ws) == 1001
        await closing
        assert ws.close_code == 1001
