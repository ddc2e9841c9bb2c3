"""A reload that changes file_sync options keeps its folder's engine: one watcher, one journal,
open WebSockets stay open; conflicting engine options for one folder are refused."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.file_sync.conftest import StartQuantum, file_sync_config, watcher_caught_up
from tests.support.processes import run_quantum


def handler_of(config: dict[str, Any]) -> dict[str, Any]:
    route = config["apps"]["http"]["servers"]["file_sync_server"]["routes"][0]
    return route["handle"][0]  # type: ignore[no-any-return]


def path_of(operation: dict[str, Any]) -> str:
    (body,) = operation.values()
    return str(body["metadata"]["path"])


async def next_operation(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.receive_str(timeout=10))
        if message["type"] == "FileOperation":
            return message  # type: ignore[no-any-return]


async def test_reload_with_new_options_keeps_websockets_and_journals_once(
    start_quantum: StartQuantum,
) -> None:
    server = start_quantum(file_sync_config(enable_upload=False))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send_json({"type": "Subscribe", "client_id": "watcher-1"})
            ack = json.loads(await ws.receive_str(timeout=10))
            assert ack["type"] == "Ack"
            # enable uploads and reload: the handler changes, the engine must not
            config = server.config
            handler_of(config)["enable_upload"] = True
            server.process.write_config(config)
            server.process.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while True:
                async with session.put(f"{server.url}/api/files/a.txt", data=b"one") as reply:
                    if reply.status == 201:
                        break
                    assert reply.status == 403
                assert time.monotonic() < deadline, server.logs()
                await asyncio.sleep(0.1)
            message = await next_operation(ws)  # the same socket, still subscribed
            assert message["operation"]["Create"]["metadata"]["path"] == "a.txt"
            (server.root / "b.txt").write_text("from disk")  # the one watcher sees it
            message = await next_operation(ws)
            assert message["operation"]["Create"]["metadata"]["path"] == "b.txt"
    settled = await asyncio.to_thread(watcher_caught_up, server)  # a duplicate would be in
    journaled = [(next(iter(op)), path_of(op)) for op in settled]
    assert journaled == [("Create", "a.txt"), ("Create", "b.txt")]  # nothing journaled twice
    assert server.logs().count("file_sync engine ready") == 1


def test_one_folder_with_two_engine_configs_is_refused(tmp_path: Path) -> None:
    config = file_sync_config()
    routes = config["apps"]["http"]["servers"]["file_sync_server"]["routes"]
    routes.append(
        {
            "match": [{"path": ["/other/*"]}],
            "handle": [{"handler": "file_sync", "root": "./sync-data", "watch": False}],
        }
    )
    config["admin"] = {"disabled": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_quantum("validate", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "routes[1].handle[0]: file_sync:" in result.stderr
    assert "is already served with other journal" in result.stderr


def test_workers_with_the_memory_broker_are_refused(tmp_path: Path) -> None:
    config = file_sync_config()
    config["workers"] = 2
    config["admin"] = {"disabled": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_quantum("validate", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "file_sync: workers: 2 needs the redis broker" in result.stderr
    assert not (tmp_path / "sync-data" / ".quantum").exists()  # refused before opening anything
