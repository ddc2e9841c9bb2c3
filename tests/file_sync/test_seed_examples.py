"""The founding document's examples, as written: its config, its ``curl`` checks, its browser
snippet's Subscribe → FileOperation flow (in Python)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.file_sync.conftest import RunningQuantum, StartQuantum, http
from tests.support.processes import run_quantum

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG_FILE = REPO / "configs" / "sync-config.json"
# Copied from the seed's "Configuration" section.
SEED_CONFIG = """
{
  "apps": {
    "http": {
      "servers": {
        "file_sync_server": {
          "listen": [":8080"],
          "routes": [
            {
              "match": [{"matcher": "path", "paths": ["/api/*", "/ws"]}],
              "handle": [{
                "handler": "file_sync",
                "root": "./sync-data",
                "enable_upload": true
              }]
            }
          ]
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    """The seed's config, moved to a free port (8080 may be taken on a shared machine)."""
    return start_module_quantum(json.loads(SEED_CONFIG_FILE.read_text()))


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", *args], capture_output=True, text=True, timeout=15)


def test_the_config_file_is_the_seeds_config_verbatim() -> None:
    assert SEED_CONFIG_FILE.read_text().strip() == SEED_CONFIG.strip()


def test_quantum_validate_accepts_the_seed_config() -> None:
    result = run_quantum("validate", "--config", str(SEED_CONFIG_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_server_is_running_with_the_seeds_curl(server: RunningQuantum) -> None:
    # curl http://localhost:8080/api/list
    result = curl(f"http://localhost:{server.port}/api/list")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert set(listing) >= {"epoch", "seq", "files"}


def test_verify_websocket_endpoint_with_the_seeds_curl(server: RunningQuantum) -> None:
    # curl -H "Upgrade: websocket" -H "Connection: upgrade" \
    #   -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" http://localhost:8080/ws
    # (plus -i and a time limit: a 101 keeps the connection open)
    result = curl(
        "-s",
        "-i",
        "--max-time",
        "3",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Connection: upgrade",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"http://localhost:{server.port}/ws",
    )
    status_line = result.stdout.splitlines()[0]
    status = int(status_line.split()[1])
    assert status in (101, 400, 426), result.stdout  # the endpoint exists and speaks WebSocket
    assert status != 404


def test_metrics_and_page_work_under_the_seed_config(server: RunningQuantum) -> None:
    assert "quantum_file_operations_total" in http("GET", server.url + "/metrics").body.decode()
    assert http("GET", server.url + "/").status == 200


async def test_browser_snippet_flow_subscribe_then_receive_an_upload(
    server: RunningQuantum,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://localhost:{server.port}/ws") as ws,
    ):
        await ws.send_str(json.dumps({"type": "Subscribe", "client_id": "browser-client-123"}))
        ack = await ws.receive_json(timeout=5)
        assert ack["type"] == "Ack"
        async with session.put(
            server.url + "/api/files/documents/new-file.txt",
            data=b"x" * 1024,
            headers={"X-Quantum-Client": "uploader"},
        ) as response:
            assert response.status == 201
        seen = []
        while len(seen) < 2:
            message = await ws.receive_json(timeout=5)
            if message["type"] == "FileOperation":
                seen.append(message)
        directory, created = (m["operation"]["Create"]["metadata"] for m in seen)
        assert directory["path"] == "documents"
        assert created["path"] == "documents/new-file.txt"
        assert created["size"] == 1024
        assert seen[1]["source_client"] == "uploader"
