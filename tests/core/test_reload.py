"""Reload through SIGHUP, --watch and the admin endpoint: atomic swap, old config on failure."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import QuantumProcess, free_port, wait_for_port
from tests.support.waiting import wait_until


def config(
    port: int,
    body: str,
    *,
    admin: int | None = None,
    extra_listen: list[str] | None = None,
    ws_tag: str = "echo:",
) -> dict[str, Any]:
    return {
        "admin": {"listen": f"127.0.0.1:{admin}"} if admin else {"disabled": True},
        "apps": {
            "http": {
                "servers": {
                    "main": {
                        "listen": [f"127.0.0.1:{port}", *(extra_listen or [])],
                        "routes": [
                            {
                                "match": [{"path": ["/ws"]}],
                                "handle": [{"handler": "testkit_ws_echo", "tag": ws_tag}],
                            },
                            {"handle": [{"handler": "testkit_sleep", "seconds": 0, "body": body}]},
                        ],
                    }
                }
            }
        },
    }


def body_of(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_sighup_reloads_and_bad_config_keeps_old(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port, "one"), tmp_path, port=port).start()
    assert body_of(server.url) == "one"
    server.write_config(config(port, "two"))
    server.signal(signal.SIGHUP)
    wait_until(lambda: body_of(server.url) == "two")
    bad = config(port, "three")
    bad["apps"]["http"]["servers"]["main"]["routes"][1]["handle"][0]["handler"] = "nope"
    server.write_config(bad)
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.logs())
    assert body_of(server.url) == "two"
    assert "unknown handler 'nope'" in server.logs()


def test_watch_reloads_when_the_file_changes(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port, "one"), tmp_path, port=port, args=("--watch",)).start()

    def reloaded() -> bool:
        # The config watcher starts after the port answers and nothing tells when: a write
        # made before it watches is never seen, so the (same) change is written again until
        # one is picked up.
        server.write_config(config(port, "watched"))
        return body_of(server.url) == "watched"

    wait_until(reloaded, what="a reload from --watch", interval=0.5)


async def test_reload_under_load_fails_no_request(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    server = quantum_factory(config(port, "v0", admin=admin), tmp_path, port=port).start()
    wait_for_port(admin)
    stop = asyncio.Event()
    results: list[int] = []
    errors: list[str] = []

    async def load(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.get(server.url) as response:
                    await response.read()
                    results.append(response.status)
            except aiohttp.ClientError as exc:
                errors.append(repr(exc))

    async with aiohttp.ClientSession() as session:
        loaders = [asyncio.create_task(load(session)) for _ in range(4)]
        outcomes = []
        for i in range(20):
            new = config(port, f"v{i + 1}", admin=admin)
            if i % 2:
                new["apps"]["http"]["servers"]["main"]["listen"] = ["not an address"]
            async with session.post(f"http://127.0.0.1:{admin}/load", json=new) as response:
                outcomes.append(response.status)
                if response.status == 400:
                    payload = await response.json()
                    assert payload["code"] == "invalid_config"
                    assert any("listen[0]" in issue for issue in payload["issues"])
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*loaders)
        async with session.get(f"http://127.0.0.1:{admin}/config") as response:
            current = await response.json()
    assert outcomes == [200, 400] * 10
    assert errors == []
    assert len(results) > 100
    assert set(results) == {200}
    assert current["apps"]["http"]["servers"]["main"]["routes"][1]["handle"][0]["body"] == "v19"
    metrics = body_of(f"http://127.0.0.1:{admin}/metrics")
    assert "quantum_config_last_reload_successful 0.0" in metrics  # the last one was invalid


async def test_websocket_survives_reload_and_listeners_follow_config(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, extra, admin = free_port(), free_port(), free_port()
    quantum_factory(config(port, "a", admin=admin), tmp_path, port=port).start()
    wait_for_port(admin)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_str("hi")
            assert await ws.receive_str() == "echo:hi"
            new = config(port, "b", admin=admin, extra_listen=[f"127.0.0.1:{extra}"])
            async with session.post(f"http://127.0.0.1:{admin}/load", json=new) as response:
                assert response.status == 200
            await ws.send_str("still there")
            assert await ws.receive_str() == "echo:still there"
            async with session.get(f"http://127.0.0.1:{extra}/") as response:
                assert await response.text() == "b"
            async with session.post(
                f"http://127.0.0.1:{admin}/load", json=config(port, "c", admin=admin)
            ) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorError):
                async with session.get(
                    f"http://127.0.0.1:{extra}/", timeout=aiohttp.ClientTimeout(total=2)
                ):
                    pass
            await ws.send_str("and again")
            assert await ws.receive_str() == "echo:and again"


async def test_admin_load_requires_json(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    quantum_factory(config(port, "a", admin=admin), tmp_path, port=port).start()
    wait_for_port(admin)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{admin}/load", data="x") as response:
            assert response.status == 415
        async with session.post(
            f"http://127.0.0.1:{admin}/load",
            data="{nope",
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
            assert "invalid JSON" in json.dumps(await response.json())


def test_busy_admin_address_is_a_warning(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    admin = free_port()
    port1, port2 = free_port(), free_port()
    first = quantum_factory(
        config(port1, "first", admin=admin), tmp_path, port=port1, name="one"
    ).start()
    wait_for_port(admin)
    second = quantum_factory(
        config(port2, "second", admin=admin), tmp_path, port=port2, name="two"
    ).start()
    assert body_of(second.url) == "second"
    wait_until(lambda: "admin endpoint not started" in second.logs())
    assert first.proc is not None and first.proc.poll() is None
