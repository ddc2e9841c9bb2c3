"""PUT /api/files/{path}: atomic streamed uploads, preconditions, limits, interruptions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.file_sync.conftest import (
    RunningQuantum,
    StartQuantum,
    changes,
    file_sync_config,
    http,
    operations,
)
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="16MiB"))


@pytest.fixture(scope="module")
def small(start_module_quantum: StartQuantum) -> RunningQuantum:
    """A server whose upload limit is 64 KiB."""
    return start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="64KiB"))


def put(server: RunningQuantum, path: str, data: bytes, **headers: str) -> tuple[int, dict]:
    reply = http("PUT", f"{server.url}/api/files/{path}", data, headers)
    return reply.status, reply.json() if reply.body else {}


def temp_files(server: RunningQuantum) -> list[Path]:
    return [p for p in (server.root / ".quantum" / "tmp").rglob("*") if p.is_file()]


def test_create_then_update_answers_201_then_200_with_metadata(server: RunningQuantum) -> None:
    seq = changes(server)["seq"]
    status, created = put(server, "up/one.txt", b"first")
    assert status == 201
    assert created["path"] == "up/one.txt"
    assert created["size"] == 5
    assert created["hash"] == hashlib.sha256(b"first").hexdigest()
    assert created["is_directory"] is False
    status, updated = put(server, "up/one.txt", b"second version")
    assert status == 200
    assert updated["hash"] == hashlib.sha256(b"second version").hexdigest()
    assert (server.root / "up" / "one.txt").read_bytes() == b"second version"
    ops = operations(server, seq)
    assert [next(iter(op)) for op in ops] == ["Create", "Create", "Update"]
    assert ops[0]["Create"]["metadata"]["path"] == "up"  # the parent directory, announced first
    assert ops[0]["Create"]["metadata"]["is_directory"] is True


def test_source_client_header_is_carried_into_the_journal(server: RunningQuantum) -> None:
    seq = changes(server)["seq"]
    reply = http(
        "PUT", server.url + "/api/files/client.txt", b"x", {"X-Quantum-Client": "laptop-7"}
    )
    assert reply.status == 201
    [message] = changes(server, seq)["operations"]
    assert message["source_client"] == "laptop-7"
    assert message["seq"] == seq + 1


def test_if_none_match_star_only_creates(server: RunningQuantum) -> None:
    assert put(server, "once.txt", b"a", **{"If-None-Match": "*"})[0] == 201
    status, body = put(server, "once.txt", b"b", **{"If-None-Match": "*"})
    assert status == 412
    assert body["code"] == "precondition_failed"
    assert (server.root / "once.txt").read_bytes() == b"a"


def test_if_match_must_name_the_current_version(server: RunningQuantum) -> None:
    _, first = put(server, "guarded.txt", b"v1")
    assert put(server, "guarded.txt", b"v2", **{"If-Match": '"' + "0" * 64 + '"'})[0] == 412
    assert put(server, "missing.txt", b"v2", **{"If-Match": f'"{first["hash"]}"'})[0] == 412
    status, second = put(server, "guarded.txt", b"v2", **{"If-Match": f'"{first["hash"]}"'})
    assert status == 200
    assert second["hash"] == hashlib.sha256(b"v2").hexdigest()


async def test_concurrent_puts_with_the_same_if_match_never_both_win(
    server: RunningQuantum,
) -> None:
    _, base = put(server, "race.txt", b"base")
    seq = changes(server)["seq"]
    rounds = 5
    async with aiohttp.ClientSession() as session:
        for round_ in range(rounds):
            current = hashlib.sha256(
                b"base" if round_ == 0 else (server.root / "race.txt").read_bytes()
            ).hexdigest()

            async def attempt(body: bytes, etag: str = current) -> int:
                async with session.put(
                    server.url + "/api/files/race.txt", data=body, headers={"If-Match": f'"{etag}"'}
                ) as response:
                    await response.read()
                    return response.status

            statuses = await asyncio.gather(
                attempt(b"A" * 300_000 + bytes([round_])), attempt(b"B" * 300_000 + bytes([round_]))
            )
            assert sorted(statuses) == [200, 412], statuses
    assert base["hash"]
    assert len(operations(server, seq)) == rounds  # exactly one Update per round


def test_parent_that_is_a_file_or_target_that_is_a_directory_conflicts(
    server: RunningQuantum,
) -> None:
    put(server, "plain.txt", b"file")
    status, body = put(server, "plain.txt/child.txt", b"x")
    assert (status, body["code"]) == (409, "not_a_directory")
    http("POST", server.url + "/api/mkdir", json_body={"path": "adir"})
    status, body = put(server, "adir", b"x")
    assert (status, body["code"]) == (409, "is_directory")


def test_over_the_limit_by_content_length_is_413_and_writes_nothing(
    small: RunningQuantum,
) -> None:
    seq = changes(small)["seq"]
    assert put(small, "fits.bin", b"x" * 64 * 1024)[0] == 201
    status, body = put(small, "big.bin", b"x" * (64 * 1024 + 1))
    assert (status, body["code"]) == (413, "too_large")
    assert not (small.root / "big.bin").exists()
    assert [next(iter(op)) for op in operations(small, seq)] == ["Create"]


async def test_over_the_limit_while_streaming_is_413_and_writes_nothing(
    small: RunningQuantum,
) -> None:
    seq = changes(small)["seq"]

    async def chunks():  # chunked transfer: no Content-Length to check up front
        for _ in range(5):
            yield b"y" * (32 * 1024)

    async with (
        aiohttp.ClientSession() as session,
        session.put(small.url + "/api/files/streamed.bin", data=chunks()) as response,
    ):
        assert response.status == 413
        assert (await response.json())["code"] == "too_large"
    assert not (small.root / "streamed.bin").exists()
    assert temp_files(small) == []
    assert operations(small, seq) == []


def test_interrupted_upload_leaves_nothing_and_broadcasts_nothing(server: RunningQuantum) -> None:
    seq = changes(server)["seq"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"PUT /api/files/interrupted.bin HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 10485760\r\n\r\n" + b"z" * (1024 * 1024)
        )
        wait_until(lambda: bool(temp_files(server)), 5, "the upload in the temp area")
    wait_until(lambda: not temp_files(server), 5, "the temp file removed")
    assert temp_files(server) == []
    assert not (server.root / "interrupted.bin").exists()
    assert operations(server, seq) == []
    assert http("GET", server.url + "/api/list").status == 200


def test_read_only_server_refuses_every_write(start_quantum: StartQuantum) -> None:
    server = start_quantum(json.loads((REPO / "configs" / "read-only.json").read_text()))
    (server.root / "keep.txt").write_text("kept")
    requests = [
        ("PUT", "/api/files/new.txt", None),
        ("DELETE", "/api/files/keep.txt", None),
        ("POST", "/api/mkdir", {"path": "d"}),
        ("POST", "/api/move", {"from": "keep.txt", "to": "moved.txt"}),
    ]
    for method, path, payload in requests:
        body = b"data" if payload is None else None
        reply = http(method, server.url + path, body, json_body=payload)
        assert reply.status == 403, (method, path)
        assert reply.json()["code"] == "forbidden"
    assert (server.root / "keep.txt").read_text() == "kept"
    assert not (server.root / "new.txt").exists()
    assert http("GET", server.url + "/api/files/keep.txt").body == b"kept"
