"""Block transfers end to end: a real server, real client processes, chunks counted on both
sides (the clients' transfer log lines and the server's chunk counters)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.client.conftest import SyncClient, synced_pair, wait_until
from tests.file_sync.conftest import StartQuantum, file_sync_config, http

MiB = 1024 * 1024


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def events(client: SyncClient, event: str, path: str) -> list[dict[str, Any]]:
    found = []
    for line in client.logs().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event and record.get("path") == path:
                found.append(record)
    return found


def nth_event(client: SyncClient, event: str, path: str, n: int) -> dict[str, Any]:
    """The ``n``-th (1-based) ``event`` logged for ``path``, once it is there."""
    wait_until(
        lambda: len(events(client, event, path)) >= n, 60.0, f"{client.folder.name}: {event} {path}"
    )
    return events(client, event, path)[n - 1]


def server_counters(url: str) -> dict[str, float]:
    wanted = ("quantum_file_chunks_uploaded_total", "quantum_file_chunks_downloaded_total")
    found = dict.fromkeys(wanted, 0.0)
    for line in http("GET", url + "/metrics").body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] += float(value)
    return found


def place(staging: Path, target: Path, data: bytes) -> None:
    """Make ``target`` hold ``data`` at once (written next door, renamed in): the watcher
    never sees a half-written file."""
    staging.mkdir(exist_ok=True)
    temp = staging / target.name
    temp.write_bytes(data)
    os.replace(temp, target)


def test_edits_renames_and_copies_of_a_large_file_move_only_changed_chunks(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient], tmp_path: Path
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    staging = tmp_path / "staging"
    data = bytearray(random_bytes(64 * MiB, 1))

    def chunks_on_server() -> tuple[int, int]:
        counters = server_counters(server.url)
        return (
            int(counters["quantum_file_chunks_uploaded_total"]),
            int(counters["quantum_file_chunks_downloaded_total"]),
        )

    place(staging, a.folder / "big.bin", bytes(data))
    first_up = nth_event(a, "uploaded", "big.bin", 1)
    first_down = nth_event(b, "downloaded", "big.bin", 1)
    total = first_up["chunks"]
    assert 40 <= total <= 80  # ~1 MiB chunks
    assert first_up["chunks_sent"] == total
    assert first_down["whole_file"]  # B had none of it: one plain GET
    assert (b.folder / "big.bin").read_bytes() == data
    before = chunks_on_server()

    # One byte overwritten in the middle: one chunk (two if the byte moved a cut point).
    middle = 32 * MiB + 12345
    data[middle] ^= 0xFF
    with (a.folder / "big.bin").open("r+b") as f:
        f.seek(middle)
        f.write(data[middle : middle + 1])
    up = nth_event(a, "uploaded", "big.bin", 2)
    down = nth_event(b, "downloaded", "big.bin", 2)
    assert 1 <= up["chunks_sent"] <= 2 and up["chunk_bytes_sent"] <= 8 * MiB
    assert 1 <= down["chunks_fetched"] <= 2
    assert down["chunks_reused"] == total - down["chunks_fetched"]
    assert (b.folder / "big.bin").read_bytes() == data
    after = chunks_on_server()
    assert after[0] - before[0] == up["chunks_sent"]
    assert after[1] - before[1] == down["chunks_fetched"]
    before = after

    # Bytes inserted in the middle: every later byte moves, the cut points move with them.
    data[middle:middle] = b"inserted"
    place(staging, a.folder / "big.bin", bytes(data))
    up = nth_event(a, "uploaded", "big.bin", 3)
    down = nth_event(b, "downloaded", "big.bin", 3)
    assert 1 <= up["chunks_sent"] <= 2
    assert 1 <= down["chunks_fetched"] <= 2
    assert (b.folder / "big.bin").read_bytes() == data
    after = chunks_on_server()
    assert after[0] - before[0] == up["chunks_sent"]
    assert after[1] - before[1] == down["chunks_fetched"]
    before = after

    # A rename is a move on both sides: no chunk moves.
    (a.folder / "big.bin").rename(a.folder / "renamed.bin")
    wait_until(lambda: (b.folder / "renamed.bin").exists(), 30.0, "the rename in B")
    assert not (b.folder / "big.bin").exists()
    assert chunks_on_server() == before

    # A copy: A sends no chunk (the server has them all), B builds it from its own file.
    place(staging, a.folder / "copy.bin", bytes(data))
    up = nth_event(a, "uploaded", "copy.bin", 1)
    down = nth_event(b, "downloaded", "copy.bin", 1)
    assert up.get("chunks_sent", 0) == 0 and up.get("chunk_bytes_sent", 0) == 0
    assert down.get("chunks_fetched", 0) == 0 and down["chunks_reused"] == down["chunks"]
    assert (b.folder / "copy.bin").read_bytes() == data
    assert chunks_on_server() == before
    assert a.stop() == 0
    assert b.stop() == 0


# --- through a proxy: an interrupted upload, an older server ----------------------------------


class Proxy:
    """A reverse proxy in a thread of its own, between a client and the server.

    ``hold_uploads_after``: forward that many ``POST /api/chunks``, then hold every later one
    (never answered). ``old_server``: behave like a file_sync without block transfers — the
    ``manifest`` query and ``Accept`` are dropped (the file itself comes back), the chunk
    routes answer 404."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold_uploads_after: int | None = None
        self.old_server = False
        self.forwarded_uploads: list[list[str]] = []
        """The ``stored`` hashes of each chunk upload that went through."""
        self.held = 0
        self._uploads = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._release is not None and self._runner is not None and self._session
        self._release.set()
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None and self._release is not None
        path, query = request.path, dict(request.query)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        if self.old_server:
            if path.startswith("/api/chunks"):
                return web.json_response(
                    {"error": "no such route", "code": "not_found"}, status=404
                )
            query.pop("manifest", None)
            headers.pop("Accept", None)
        is_chunk_upload = request.method == "POST" and path == "/api/chunks"
        if is_chunk_upload:
            if self.hold_uploads_after is not None and self._uploads >= self.hold_uploads_after:
                self.held += 1
                await self._release.wait()
                raise web.HTTPServiceUnavailable()
            self._uploads += 1
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + path,
            params=query,
            headers=headers,
            data=io.BytesIO(body) if body else None,
            allow_redirects=False,
        ) as upstream:
            reply = await upstream.read()
            if is_chunk_upload and upstream.status == 200:
                self.forwarded_uploads.append(json.loads(reply)["stored"])
            kept = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=reply, headers=kept)


@pytest.fixture
def proxies() -> Iterator[Callable[[str], Proxy]]:
    made: list[Proxy] = []

    def make(upstream: str) -> Proxy:
        proxy = Proxy(upstream).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


def start_once(client: SyncClient) -> subprocess.Popen[bytes]:
    """A one-shot pass (``-v``: transfers are logged) running in the background."""
    with client.log_path.open("ab") as log:
        return subprocess.Popen(client.command("-v"), stdout=log, stderr=log)


def test_an_upload_cut_short_resumes_with_the_chunks_already_sent(
    start_quantum: StartQuantum,
    sync_clients: Callable[..., SyncClient],
    proxies: Callable[[str], Proxy],
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    proxy = proxies(server.url)
    proxy.hold_uploads_after = 1
    a = sync_clients(proxy.url, "a")
    data = random_bytes(64 * MiB, 2)
    (a.folder / "big.bin").write_bytes(data)

    first = start_once(a)
    try:
        wait_until(
            lambda: proxy.held >= 1 and len(proxy.forwarded_uploads) == 1,
            60.0,
            "the first chunk upload through, the next one held",
        )
    finally:
        first.kill()
        first.wait()
    assert not (server.root / "big.bin").exists()
    sent_before = proxy.forwarded_uploads[0]
    assert sent_before  # 16 MiB worth of chunks reached the server

    proxy.hold_uploads_after = None
    again = a.run_once("-v")
    assert again.returncode == 0, again.stderr
    assert (server.root / "big.bin").read_bytes() == data
    up = events(a, "uploaded", "big.bin")[-1]
    assert up["chunks_sent"] == up["chunks"] - len(sent_before)
    resent = {h for batch in proxy.forwarded_uploads[1:] for h in batch}
    assert not resent & set(sent_before)


def test_an_older_server_gets_plain_transfers(
    start_quantum: StartQuantum,
    sync_clients: Callable[..., SyncClient],
    proxies: Callable[[str], Proxy],
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    proxy = proxies(server.url)
    proxy.old_server = True
    a = sync_clients(proxy.url, "a")
    data = random_bytes(5 * MiB, 3)
    (a.folder / "big.bin").write_bytes(data)
    upload = a.run_once("-v")
    assert upload.returncode == 0, upload.stderr
    assert "the server takes no chunks: plain uploads" in upload.stderr
    assert (server.root / "big.bin").read_bytes() == data
    assert "chunks" not in events(a, "uploaded", "big.bin")[-1]

    b = sync_clients(proxy.url, "b")
    download = b.run_once("-v")
    assert download.returncode == 0, download.stderr
    assert "the server sends no manifests: plain downloads" in download.stderr
    assert (b.folder / "big.bin").read_bytes() == data
    assert "chunks" not in events(b, "downloaded", "big.bin")[-1]
    assert server_counters(server.url) == {
        "quantum_file_chunks_uploaded_total": 0.0,
        "quantum_file_chunks_downloaded_total": 0.0,
    }


def test_a_conflict_copy_lends_its_chunks_to_the_servers_version(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = sync_clients(server.url, "a"), sync_clients(server.url, "b")
    data = bytearray(random_bytes(16 * MiB, 4))
    (a.folder / "big.bin").write_bytes(data)
    assert a.run_once("-v").returncode == 0
    assert b.run_once("-v").returncode == 0

    ours, theirs = bytearray(data), bytearray(data)
    ours[3 * MiB] ^= 1  # both sides change one byte, in different places
    theirs[12 * MiB] ^= 1
    (a.folder / "big.bin").write_bytes(theirs)
    assert a.run_once("-v").returncode == 0
    (b.folder / "big.bin").write_bytes(ours)
    result = b.run_once("-v")
    assert result.returncode == 0, result.stderr

    assert (b.folder / "big.bin").read_bytes() == theirs  # the server's version keeps the name
    copies = [p for p in b.folder.iterdir() if ".sync-conflict-" in p.name]
    assert len(copies) == 1 and copies[0].read_bytes() == ours
    # Around each of the two changes, one side lacks the other's chunk: B fetches A's change
    # and the original bytes B changed, and sends only its own change (the original bytes A
    # changed are in the server's history, as the version A's upload replaced); every other
    # chunk of the server's version came from the conflict copy.
    down = events(b, "downloaded", "big.bin")[-1]
    assert 2 <= down["chunks_fetched"] <= 4
    assert down["chunks_reused"] == down["chunks"] - down["chunks_fetched"]
    up = events(b, "uploaded", copies[0].name)[-1]
    assert 1 <= up["chunks_sent"] <= 2
