"""``workers: N``: N processes of one Quantum share its port (SO_REUSEPORT) and the Redis broker."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quantum.metrics import WORKER_HEADER
from tests.file_sync.conftest import RunningQuantum, launch_quantum
from tests.fixtures.redis import RedisServer
from tests.multinode.conftest import WsClient, node_config

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
def workers(
    tmp_path: Path, shared_root: Path, cluster_redis: RedisServer
) -> Iterator[RunningQuantum]:
    started: list[RunningQuantum] = []
    config = node_config(cluster_redis.url, shared_root, f"workers-{uuid.uuid4().hex[:8]}:")
    config["workers"] = 2
    server = launch_quantum(config, tmp_path / "node", started)
    deadline = time.monotonic() + 30
    while server.logs().count('"event": "serving"') < 2:
        assert time.monotonic() < deadline, server.logs()
        time.sleep(0.05)
    yield server
    for process in started:
        process.stop()


class PinnedConnection:
    """A keep-alive HTTP connection, so every request on it reaches the same worker."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        status, _, content = self.exchange(method, path, body)
        return status, content

    def exchange(
        self, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        self.connection.request(method, path, body=body)
        response = self.connection.getresponse()
        return response.status, response.headers, response.read()

    def holds_disk_watch(self) -> bool:
        """Whether the worker at the other end holds the lease: a scrape shows every worker's
        metrics and names the one that answered in X-Quantum-Worker."""
        _, headers, body = self.exchange("GET", "/metrics")
        worker = headers[WORKER_HEADER]
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == "quantum_disk_watch_owner" and sample.labels["worker"] == worker:
                    return sample.value == 1.0
        raise AssertionError(f"worker {worker} exports no quantum_disk_watch_owner")

    def close(self) -> None:
        self.connection.close()


def one_connection_per_worker(port: int) -> tuple[PinnedConnection, PinnedConnection]:
    """Two connections that landed on different workers (told apart by the one worker that
    holds the disk-watch lease)."""
    found: dict[bool, PinnedConnection] = {}
    for _ in range(200):
        connection = PinnedConnection(port)
        owner = connection.holds_disk_watch()
        if owner in found:
            connection.close()
        else:
            found[owner] = connection
        if len(found) == 2:
            return found[True], found[False]
    raise AssertionError("every connection landed on the same worker")


async def test_two_workers_share_one_port_and_every_change(
    workers: RunningQuantum, session: aiohttp.ClientSession
) -> None:
    logs = [json.loads(line) for line in workers.logs().splitlines() if line.startswith("{")]
    pids = {entry["pid"] for entry in logs if entry.get("event") == "serving"}
    assert len(pids) == 2

    first, second = await asyncio.to_thread(one_connection_per_worker, workers.port)
    # Clients land on either worker; each sees the uploads served by both.
    clients = [await WsClient.subscribe(session, workers, f"c{i}") for i in range(4)]
    try:
        for i, connection in enumerate([first, second, first, second]):
            status, _ = await asyncio.to_thread(
                connection.request, "PUT", f"/api/files/w{i}.txt", f"by worker {i % 2}".encode()
            )
            assert status == 201
        for client in clients:
            await client.wait_for_path("w3.txt")
            assert client.paths() == [f"w{i}.txt" for i in range(4)]
            seqs = [m["seq"] for m in client.operations]
            assert seqs == sorted(set(seqs))
    finally:
        first.close()
        second.close()
        for client in clients:
            await client.close()
