"""A hostile server (an in-process aiohttp fake: no real server would send these) tries to make
the client write outside its folder, into its state directory, or content that does not match
the announced hash. The client refuses, says so, and still syncs the honest entries."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.client.conftest import CLIENT, snapshot

GOOD = b"honest content\n"
EVIL = b"pwned\n"
HOSTILE_PATHS = [
    "../escape.txt",
    "/tmp/absolute-escape.txt",
    "a/../../climb.txt",
    ".quantum-sync/state.sqlite3",
    "nul\x00byte.txt",
    "back\\slash.txt",
]


def meta(path: str, data: bytes) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(data),
        "hash": hashlib.sha256(data).hexdigest(),
        "modified": "2024-01-15T10:30:00Z",
        "is_directory": False,
    }


def operation(seq: int, operation: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "FileOperation",
        "operation": operation,
        "source_client": None,
        "seq": seq,
        "epoch": "e1",
        "op_id": f"op{seq}",
    }


def fake_app(*, honest_listing: bool = False, bundles: bool = False) -> web.Application:
    app = web.Application()
    files = [] if honest_listing else [meta(p, EVIL) for p in HOSTILE_PATHS]
    files.append(meta("ok.txt", GOOD))
    if not honest_listing or bundles:
        files.append(meta("liar.txt", GOOD))  # announced hash of GOOD, served EVIL

    async def list_files(request: web.Request) -> web.Response:
        return web.json_response({"epoch": "e1", "seq": 3, "files": files})

    async def changes(request: web.Request) -> web.Response:
        assert request.query["epoch"] == "e1" and request.query["since"] == "3"
        operations = [
            operation(4, {"Create": {"metadata": meta("../changes-escape.txt", EVIL)}}),
            operation(5, {"Move": {"from": "ok.txt", "metadata": meta("/tmp/changes-abs", GOOD)}}),
            operation(6, {"Create": {"metadata": meta("more.txt", GOOD)}}),
        ]
        return web.json_response(
            {"epoch": "e1", "seq": 6, "recovered": True, "operations": operations}
        )

    async def get_file(request: web.Request) -> web.Response:
        name = request.match_info["path"]
        return web.Response(body=GOOD if name in ("ok.txt", "more.txt") else EVIL)

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.receive()  # Subscribe
        await socket.send_json(
            {"type": "Ack", "client_id": "x", "epoch": "e1", "seq": 3, "recovered": False}
        )
        for seq, path in enumerate(["../ws-escape.txt", "/tmp/ws-absolute.txt"], start=4):
            await socket.send_json(
                {
                    "type": "FileOperation",
                    "operation": {"Create": {"metadata": meta(path, EVIL)}},
                    "source_client": None,
                    "seq": seq,
                    "epoch": "e1",
                    "op_id": f"op{seq}",
                }
            )
        await socket.send_json(
            {
                "type": "FileOperation",
                "operation": {
                    "Move": {"from": "ok.txt", "metadata": meta("../moved-out.txt", GOOD)}
                },
                "source_client": None,
                "seq": 6,
                "epoch": "e1",
                "op_id": "op6",
            }
        )
        async for _ in socket:
            pass
        return socket

    async def bundle(request: web.Request) -> web.StreamResponse:
        asked = (await request.json())["paths"]
        assert set(asked) <= {"ok.txt", "liar.txt"}, asked  # hostile names are never asked for
        response = web.StreamResponse(headers={"Content-Type": "application/x-quantum-bundle"})
        await response.prepare(request)

        def record(path: str, data: bytes, announced: bytes) -> bytes:
            digest = hashlib.sha256(announced).hexdigest()
            header = {"path": path, "size": len(data), "hash": digest}
            return json.dumps(header).encode() + b"\n" + data

        await response.write(record("../bundle-escape.txt", EVIL, EVIL))  # never asked for
        await response.write(record("liar.txt", EVIL, GOOD))  # announced GOOD, sends EVIL
        await response.write(record("ok.txt", GOOD, GOOD))
        await response.write(b'{"end": true, "files": 3, "errors": 0}\n')
        await response.write_eof()
        return response

    if bundles:
        app.router.add_post("/api/bundle", bundle)
    app.router.add_get("/api/list", list_files)
    app.router.add_get("/api/changes", changes)
    app.router.add_get("/api/files/{path:.*}", get_file)
    app.router.add_get("/ws", ws)
    return app


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def hostile_server() -> AsyncIterator[str]:
    async for url in serve(fake_app()):
        yield url


@pytest.fixture
async def hostile_bundles() -> AsyncIterator[str]:
    """Lists honestly, then sends lying and unasked-for files in its bundles."""
    async for url in serve(fake_app(honest_listing=True, bundles=True)):
        yield url


@pytest.fixture
async def hostile_journal() -> AsyncIterator[str]:
    """Lists honestly, then replays hostile operations from ``/api/changes``."""
    async for url in serve(fake_app(honest_listing=True)):
        yield url


def escaped(tmp_path: Path) -> list[Path]:
    candidates = [
        tmp_path / "escape.txt",
        tmp_path / "climb.txt",
        tmp_path / "ws-escape.txt",
        tmp_path / "moved-out.txt",
        tmp_path / "changes-escape.txt",
        tmp_path / "bundle-escape.txt",
        Path("/tmp/absolute-escape.txt"),
        Path("/tmp/ws-absolute.txt"),
        Path("/tmp/changes-abs"),
    ]
    return [p for p in candidates if p.exists()]


async def run_client(
    *args: str, stop_when: tuple[str, ...] = (), and_exists: Path | None = None
) -> tuple[int, str]:
    """Run the client to its end; with ``stop_when``, stop it (SIGTERM) once its log has
    mentioned every one of those strings and ``and_exists`` exists (a realtime client runs
    until told to stop)."""
    proc = await asyncio.create_subprocess_exec(
        CLIENT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    if stop_when:

        async def read_until_seen() -> None:
            assert proc.stderr is not None
            while not all(word.encode() in b"".join(lines) for word in stop_when):
                line = await proc.stderr.readline()
                if not line:
                    return
                lines.append(line)

        await asyncio.wait_for(read_until_seen(), 30)
        for _ in range(300):
            if and_exists is None or and_exists.exists():
                break
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
    _, rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, (b"".join(lines) + rest).decode()


async def test_one_pass_refuses_hostile_paths_and_lying_content(
    hostile_server: str, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    code, stderr = await run_client("--server", hostile_server, "--local-path", str(folder))
    assert escaped(tmp_path) == []
    assert snapshot(folder) == {"ok.txt": GOOD}  # the honest file, nothing else
    state = (folder / ".quantum-sync" / "state.sqlite3").read_bytes()
    assert state.startswith(b"SQLite format 3")
    assert code == 7, stderr
    assert stderr.count("unsafe path") >= len(HOSTILE_PATHS), stderr
    for path in ("../escape.txt", "/tmp/absolute-escape.txt", ".quantum-sync/state.sqlite3"):
        assert json.dumps(path)[1:-1] in stderr
    assert "liar.txt" in stderr and "hashes to" in stderr
    assert "could not be synced" in stderr.splitlines()[-1]


async def test_bundles_deliver_only_what_was_asked_for_and_verified(
    hostile_bundles: str, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    code, stderr = await run_client("--server", hostile_bundles, "--local-path", str(folder))
    assert escaped(tmp_path) == []
    assert snapshot(folder) == {"ok.txt": GOOD}
    assert "liar.txt" in stderr and "hashes to" in stderr
    assert code == 7, stderr


@pytest.mark.skipif(sys.platform != "linux", reason="inotify watcher")
async def test_realtime_refuses_hostile_operations(hostile_server: str, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    code, stderr = await run_client(
        "--server",
        hostile_server,
        "--local-path",
        str(folder),
        "--realtime",
        stop_when=("ws-escape.txt", "moved-out.txt"),
        and_exists=folder / "ok.txt",
    )
    assert escaped(tmp_path) == []
    assert (folder / "ok.txt").read_bytes() == GOOD  # a move out of the folder is not obeyed
    assert "ws-escape.txt" in stderr and "moved-out.txt" in stderr
    assert code == 7, stderr


async def test_journal_replay_refuses_hostile_operations(
    hostile_journal: str, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    args = ("--server", hostile_journal, "--local-path", str(folder))
    first, stderr = await run_client(*args)
    assert first == 0, stderr
    second, stderr = await run_client(*args)  # resumes with GET /api/changes?since=3
    assert escaped(tmp_path) == []
    assert snapshot(folder) == {"more.txt": GOOD, "ok.txt": GOOD}
    assert "changes-escape.txt" in stderr and "/tmp/changes-abs" in stderr
    assert second == 7, stderr
