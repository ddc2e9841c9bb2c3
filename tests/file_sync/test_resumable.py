"""Resumable uploads on /api/uploads (quantum_file_sync.resumable): tus 1.0 (tuspy, unmodified)
and the IETF draft (raw requests), over real sockets against real server processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.file_sync.conftest import (
    Reply,
    RunningQuantum,
    StartQuantum,
    changes,
    file_sync_config,
    http,
    operations,
)
from tests.support.waiting import wait_until

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
IETF = {"Upload-Draft-Interop-Version": "9"}
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="16MiB"))


def uploads_dir(server: RunningQuantum) -> Path:
    return server.root / ".quantum" / "uploads"


def record_of(server: RunningQuantum, location: str) -> dict[str, Any]:
    upload_id = location.rsplit("/", 1)[1]
    record: dict[str, Any] = json.loads(
        (uploads_dir(server) / upload_id / "record.json").read_bytes()
    )
    return record


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def create_tus(server: RunningQuantum, path: str, length: int, **headers: str) -> str:
    reply = http(
        "POST",
        f"{server.url}/api/uploads",
        headers={
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": f"path {b64(path)}",
            **headers,
        },
    )
    assert reply.status == 201, reply.body
    location = reply.header("Location")
    assert location is not None and location.startswith("/api/uploads/")
    return location


def patch_tus(
    server: RunningQuantum, location: str, offset: int, data: bytes, **headers: str
) -> Reply:
    return http(
        "PATCH",
        server.url + location,
        data,
        {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            **headers,
        },
    )


def head(server: RunningQuantum, location: str) -> Reply:
    return http("HEAD", server.url + location, headers=TUS)


def offset_of(server: RunningQuantum, location: str) -> int:
    reply = head(server, location)
    assert reply.status == 204, reply.status
    return int(reply.header("Upload-Offset") or -1)


def file_ops(ops: list[dict[str, Any]], path: str) -> list[str]:
    return [
        kind
        for op in ops
        for kind, body in op.items()
        if body.get("metadata", {}).get("path") == path
    ]


# -- tus ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("checksum", [False, True])
def test_tuspy_uploads_a_multi_mib_file_unmodified(
    server: RunningQuantum, tmp_path: Path, checksum: bool
) -> None:
    data = os.urandom(5 * MiB + 12345)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    target = f"tus/big-{checksum}.bin"
    seq = changes(server)["seq"]
    with source.open("rb") as stream:  # given a path, tuspy leaves a file open per request
        tus = tus_client.TusClient(
            server.url + "/api/uploads", headers={"X-Quantum-Client": "tuspy"}
        )
        uploader = tus.uploader(
            file_stream=stream,
            chunk_size=MiB,
            metadata={"path": target, "sha256": hashlib.sha256(data).hexdigest()},
            upload_checksum=checksum,
        )
        uploader.upload()
    landed = server.root / target
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert file_ops(operations(server, seq), target) == ["Create"]
    created = [m for m in changes(server, seq)["operations"] if file_ops([m["operation"]], target)]
    assert created[0]["source_client"] == "tuspy"
    listing = http("GET", f"{server.url}/api/list?path=tus").json()["files"]
    assert any(f["path"] == target for f in listing)
    # Only the completed upload's small record is left, no data.
    assert uploader.url is not None
    upload_dir = uploads_dir(server) / uploader.url.rsplit("/", 1)[1]
    assert sorted(p.name for p in upload_dir.iterdir()) == ["record.json"]
    reply = head(server, uploader.url.removeprefix(server.url))
    assert reply.header("Upload-Offset") == str(len(data))
    assert reply.header("Upload-Complete") == "?1"


def test_discovery_with_options(server: RunningQuantum) -> None:
    reply = http("OPTIONS", server.url + "/api/uploads")
    assert reply.status == 204
    assert reply.header("Tus-Version") == "1.0.0"
    extensions = (reply.header("Tus-Extension") or "").split(",")
    assert {"creation", "checksum", "termination"} <= set(extensions)
    assert reply.header("Tus-Max-Size") == str(16 * MiB)
    assert "sha1" in (reply.header("Tus-Checksum-Algorithm") or "").split(",")
    assert "max-size=" in (reply.header("Upload-Limit") or "")  # the draft's discovery


def test_tus_checksum_mismatch_is_460_and_keeps_nothing_of_the_body(
    server: RunningQuantum,
) -> None:
    location = create_tus(server, "tus/checked.bin", 6)
    wrong = "sha1 " + b64(hashlib.sha1(b"other").digest())
    reply = patch_tus(server, location, 0, b"abc", **{"Upload-Checksum": wrong})
    assert reply.status == 460
    assert reply.json()["code"] == "checksum_mismatch"
    assert offset_of(server, location) == 0
    right = "sha1 " + b64(hashlib.sha1(b"abc").digest())
    reply = patch_tus(server, location, 0, b"abc", **{"Upload-Checksum": right})
    assert reply.status == 204
    assert reply.header("Upload-Offset") == "3"
    assert patch_tus(server, location, 3, b"def").status == 204
    assert (server.root / "tus" / "checked.bin").read_bytes() == b"abcdef"


def test_tus_empty_file_completes_at_creation(server: RunningQuantum) -> None:
    location = create_tus(server, "tus/empty.txt", 0)
    assert (server.root / "tus" / "empty.txt").read_bytes() == b""
    assert head(server, location).header("Upload-Complete") == "?1"


# -- IETF draft --------------------------------------------------------------------------------


async def _ietf_flow(server: RunningQuantum, data: bytes) -> None:
    target = "ietf/flow.bin"
    seq = changes(server)["seq"]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{server.url}/api/uploads",
            params={"path": target},
            headers={**IETF, "Upload-Complete": "?0", "Upload-Length": str(len(data))},
        ) as response:
            assert response.status == 201
            location = response.headers["Location"]
            assert "max-size=" in response.headers["Upload-Limit"]
            assert response.headers["Upload-Complete"] == "?0"
        url = server.url + location

        async def offset() -> tuple[int, str]:
            async with session.head(url, headers=IETF) as response:
                assert response.status == 204
                assert response.headers["Cache-Control"] == "no-store"
                assert response.headers["Upload-Length"] == str(len(data))
                assert "max-age=" in response.headers["Upload-Limit"]
                return int(response.headers["Upload-Offset"]), response.headers["Upload-Complete"]

        assert await offset() == (0, "?0")
        half = len(data) // 2
        async with session.patch(
            url,
            data=io.BytesIO(data[:half]),
            headers={
                **IETF,
                "Content-Type": "application/partial-upload",
                "Upload-Offset": "0",
                "Upload-Complete": "?0",
            },
        ) as response:
            assert response.status == 204
            assert response.headers["Upload-Complete"] == "?0"
        assert await offset() == (half, "?0")
        assert not (server.root / target).exists()
        assert file_ops(operations(server, seq), target) == []
        async with session.patch(
            url,
            data=io.BytesIO(data[half:]),
            headers={
                **IETF,
                "Content-Type": "application/partial-upload",
                "Upload-Offset": str(half),
                "Upload-Complete": "?1",
            },
        ) as response:
            assert response.status == 201
            assert response.headers["Upload-Complete"] == "?1"
            body = await response.json()
            assert body["path"] == target
            assert body["hash"] == hashlib.sha256(data).hexdigest()
            assert response.headers["ETag"] == f'"{body["hash"]}"'
        assert await offset() == (len(data), "?1")
    assert (server.root / target).read_bytes() == data
    assert file_ops(operations(server, seq), target) == ["Create"]


def test_ietf_careful_upload_in_parts(server: RunningQuantum) -> None:
    asyncio.run(_ietf_flow(server, os.urandom(3 * MiB + 7)))


def test_ietf_104_only_for_the_interop_version(server: RunningQuantum) -> None:
    request = (
        b"POST /api/uploads?path=ietf/informational.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upload-Complete: ?0\r\nUpload-Draft-Interop-Version: 9\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received.partition(b"HTTP/1.1 201 ")[2]:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    interim, _, final = received.partition(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 104 Upload Resumption Supported\r\n")
    assert b"\r\nUpload-Draft-Interop-Version: 9" in interim
    location = [line for line in interim.split(b"\r\n") if line.startswith(b"Location: ")]
    assert location and location[0].startswith(b"Location: /api/uploads/")
    assert final.startswith(b"HTTP/1.1 201 ")
    assert location[0] in final
    # Without the interop version: no 104 (http.client would take it for the final answer).
    reply = http(
        "POST", f"{server.url}/api/uploads?path=ietf/plain.txt", headers={"Upload-Complete": "?0"}
    )
    assert reply.status == 201


def test_ietf_upload_with_repr_digest_completes_in_the_creation_request(
    server: RunningQuantum,
) -> None:
    data = b"all in one request"
    digest = b64(hashlib.sha256(data).digest())
    reply = http(
        "POST",
        f"{server.url}/api/uploads?path=ietf/one-shot.txt",
        data,
        {"Upload-Complete": "?1", "Repr-Digest": f"sha-256=:{digest}:"},
    )
    assert reply.status == 201, reply.body
    assert reply.header("Upload-Complete") == "?1"
    assert reply.json()["hash"] == hashlib.sha256(data).hexdigest()
    assert (server.root / "ietf" / "one-shot.txt").read_bytes() == data


# -- bad input ---------------------------------------------------------------------------------


def test_patch_at_a_wrong_offset_is_409_with_the_expected_offset(server: RunningQuantum) -> None:
    location = create_tus(server, "bad/offset.bin", 10)
    assert patch_tus(server, location, 0, b"12345").status == 204
    for sent in (0, 7):
        reply = http(
            "PATCH",
            server.url + location,
            b"67890",
            {
                "Content-Type": "application/partial-upload",
                "Upload-Offset": str(sent),
                "Upload-Complete": "?0",
            },
        )
        assert reply.status == 409
        assert reply.header("Upload-Offset") == "5"
        assert (reply.header("Content-Type") or "").startswith("application/problem+json")
        body = reply.json()
        assert body["type"] == PROBLEMS + "mismatching-upload-offset"
        assert body["expected-offset"] == 5
        assert body["provided-offset"] == sent
        assert body["code"] == "offset_mismatch"
        assert body["error"]
    assert offset_of(server, location) == 5


def test_patch_after_completion(server: RunningQuantum) -> None:
    """More bytes are refused; an empty completing PATCH (a client that missed the final
    answer) gets the final answer again, and nothing is journaled twice."""
    created = http(
        "POST", f"{server.url}/api/uploads?path=bad/finished.txt", headers={"Upload-Complete": "?0"}
    )
    location = created.header("Location") or ""
    ietf = {"Content-Type": "application/partial-upload", "Upload-Complete": "?1"}
    first = http("PATCH", server.url + location, b"abc", {**ietf, "Upload-Offset": "0"})
    assert first.status == 201
    seq = changes(server)["seq"]
    reply = http("PATCH", server.url + location, b"more", {**ietf, "Upload-Offset": "3"})
    assert (reply.status, reply.json()["code"]) == (400, "inconsistent_length")
    assert reply.json()["type"] == PROBLEMS + "inconsistent-upload-length"
    assert reply.header("Upload-Complete") == "?0"
    again = http("PATCH", server.url + location, b"", {**ietf, "Upload-Offset": "3"})
    assert again.status == 201
    assert again.header("Upload-Complete") == "?1"
    assert again.json() == first.json()
    assert http("PATCH", server.url + location, b"", {**ietf, "Upload-Offset": "0"}).status == 409
    assert (server.root / "bad" / "finished.txt").read_bytes() == b"abc"
    assert changes(server, seq)["operations"] == []
    probe = http("GET", server.url + location)  # GET retrieves the offset like HEAD
    assert (probe.status, probe.header("Upload-Offset"), probe.header("Upload-Complete")) == (
        204,
        "3",
        "?1",
    )


@pytest.mark.parametrize("protocol", ["tus", "ietf"])
def test_an_upload_whose_hash_mismatches_leaves_nothing(
    server: RunningQuantum, protocol: str
) -> None:
    target = f"bad/mismatch-{protocol}.bin"
    wrong = hashlib.sha256(b"something else").digest()
    seq = changes(server)["seq"]
    if protocol == "tus":
        location = create_tus(
            server,
            target,
            8,
            **{"Upload-Metadata": f"path {b64(target)},sha256 {b64(wrong.hex())}"},
        )
        reply = patch_tus(server, location, 0, b"contents")
    else:
        created = http(
            "POST",
            f"{server.url}/api/uploads?path={target}",
            headers={"Upload-Complete": "?0", "Repr-Digest": f"sha-256=:{b64(wrong)}:"},
        )
        assert created.status == 201
        location = created.header("Location") or ""
        reply = http(
            "PATCH",
            server.url + location,
            b"contents",
            {
                "Content-Type": "application/partial-upload",
                "Upload-Offset": "0",
                "Upload-Complete": "?1",
            },
        )
        assert reply.header("Upload-Complete") == "?1"
    assert reply.status == 422
    assert reply.json()["code"] == "hash_mismatch"
    assert not (server.root / target).exists()
    assert changes(server, seq)["operations"] == []
    assert head(server, location).status == 404  # discarded
    assert not (uploads_dir(server) / location.rsplit("/", 1)[1]).exists()


def test_a_client_that_disconnects_mid_patch_keeps_what_was_received(
    server: RunningQuantum,
) -> None:
    data = os.urandom(3 * MiB)
    target = "bad/disconnect.bin"
    location = create_tus(server, target, len(data))
    sent = 1 * MiB + 4321
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[:sent]
        )
    wait_until(lambda: record_of(server, location)["offset"] == sent, what="the durable offset")
    assert offset_of(server, location) == sent
    assert not (server.root / target).exists()
    assert patch_tus(server, location, 0, data).status == 409  # never goes back
    assert offset_of(server, location) == sent
    assert patch_tus(server, location, sent, data[sent:]).status == 204
    assert (server.root / target).read_bytes() == data


def test_a_new_request_stops_an_append_still_in_flight(server: RunningQuantum) -> None:
    """The draft's recommended concurrency rule: a client that gave up on a PATCH and asks
    again gets the offset of what arrived, and the old request is stopped."""
    data = os.urandom(3 * MiB)
    target = "bad/superseded.bin"
    location = create_tus(server, target, len(data))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stale:
        stale.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data[: MiB + MiB // 2]
        )
        wait_until(lambda: record_of(server, location)["offset"] >= MiB, what="a durable MiB")
        offset = offset_of(server, location)  # stops the stale PATCH, which keeps what it got
        assert MiB <= offset <= MiB + MiB // 2
        try:
            answer = stale.recv(65536)
        except ConnectionResetError:
            answer = b""  # closed with the rest of its body unread
        assert answer == b"" or answer.startswith(b"HTTP/1.1 409 "), answer
    assert offset_of(server, location) == offset
    assert patch_tus(server, location, offset, data[offset:]).status == 204
    assert (server.root / target).read_bytes() == data


def test_uploads_need_the_token_when_auth_is_on(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, auth={"tokens": ["s3cret"]}))
    create = {**TUS, "Upload-Length": "2", "Upload-Metadata": f"path {b64('auth.txt')}"}
    reply = http("POST", server.url + "/api/uploads", headers=create)
    assert (reply.status, reply.json()["code"]) == (401, "unauthorized")
    bearer = {"Authorization": "Bearer s3cret"}
    reply = http("POST", server.url + "/api/uploads", headers={**create, **bearer})
    assert reply.status == 201
    location = reply.header("Location") or ""
    assert http("HEAD", server.url + location, headers=TUS).status == 401
    assert patch_tus(server, location, 0, b"ok", **bearer).status == 204
    assert (server.root / "auth.txt").read_bytes() == b"ok"


def test_bad_requests(server: RunningQuantum) -> None:
    url = server.url + "/api/uploads"
    location = create_tus(server, "bad/typed.bin", 4)
    cases: list[tuple[Reply, int, str]] = [
        (
            http(
                "PATCH",
                server.url + location,
                b"abcd",
                {**TUS, "Content-Type": "text/plain", "Upload-Offset": "0"},
            ),
            415,
            "unsupported_media_type",
        ),
        (patch_tus(server, "/api/uploads/" + "x" * 32, 0, b"a"), 404, "not_found"),
        (patch_tus(server, "/api/uploads/short", 0, b"a"), 404, "not_found"),
        (http("DELETE", url + "/" + "y" * 32, headers=TUS), 404, "not_found"),
        (
            http("POST", url + "?path=.quantum/x", headers={"Upload-Complete": "?0"}),
            403,
            "reserved",
        ),
        (http("POST", url + "?path=../x", headers={"Upload-Complete": "?0"}), 400, "bad_path"),
        (http("POST", url + "?path=a//b", headers=TUS | {"Upload-Length": "1"}), 400, "bad_path"),
        (http("POST", url, headers={"Upload-Complete": "?0"}), 400, "bad_request"),
        (http("POST", url + "?path=x.bin"), 400, "bad_request"),
        (
            http("POST", url + "?path=x.bin", headers={**TUS, "Upload-Length": str(16 * MiB + 1)}),
            413,
            "too_large",
        ),
        (
            http(
                "POST",
                url + "?path=x.bin",
                headers={"Tus-Resumable": "0.2.2", "Upload-Length": "1"},
            ),
            412,
            "unsupported_version",
        ),
        (http("GET", url), 405, "method_not_allowed"),
    ]
    for reply, status, code in cases:
        assert (reply.status, reply.json()["code"]) == (status, code), reply.body
    assert offset_of(server, location) == 0
    assert head(server, "/api/uploads/" + "z" * 32).status == 404


def test_a_patch_over_max_upload_size_is_413(server: RunningQuantum) -> None:
    created = http(
        "POST", f"{server.url}/api/uploads?path=bad/huge.bin", headers={"Upload-Complete": "?0"}
    )
    location = created.header("Location") or ""
    reply = http(
        "PATCH",
        server.url + location,
        b"x" * (16 * MiB + 1),
        {
            "Content-Type": "application/partial-upload",
            "Upload-Offset": "0",
            "Upload-Complete": "?0",
        },
    )
    assert reply.status == 413
    assert reply.json()["code"] == "too_large"
    assert "max-size=" in (reply.header("Upload-Limit") or "")
    assert not (server.root / "bad" / "huge.bin").exists()
    # Too much in the creating request: the upload exists (Location), nothing was appended.
    reply = http(
        "POST",
        f"{server.url}/api/uploads?path=bad/huge.bin",
        b"x" * (16 * MiB + 1),
        {"Upload-Complete": "?0"},
    )
    assert (reply.status, reply.header("Upload-Complete")) == (413, "?0")
    assert offset_of(server, reply.header("Location") or "") == 0


def test_delete_cancels_an_upload(server: RunningQuantum) -> None:
    location = create_tus(server, "bad/cancelled.bin", 10)
    assert patch_tus(server, location, 0, b"12345").status == 204
    assert http("DELETE", server.url + location, headers=TUS).status == 204
    assert head(server, location).status == 404
    assert not (uploads_dir(server) / location.rsplit("/", 1)[1]).exists()
    assert not (server.root / "bad" / "cancelled.bin").exists()


def test_preconditions_given_at_creation_are_checked_at_commit(server: RunningQuantum) -> None:
    assert http("PUT", f"{server.url}/api/files/bad/existing.txt", b"old").status == 201
    location = create_tus(server, "bad/existing.txt", 3, **{"If-None-Match": "*"})
    seq = changes(server)["seq"]
    reply = patch_tus(server, location, 0, b"new")
    assert reply.status == 412
    assert reply.json()["code"] == "precondition_failed"
    assert (server.root / "bad" / "existing.txt").read_bytes() == b"old"
    assert changes(server, seq)["operations"] == []
    old = hashlib.sha256(b"old").hexdigest()
    location = create_tus(server, "bad/existing.txt", 3, **{"If-Match": f'"{old}"'})
    assert patch_tus(server, location, 0, b"new").status == 204
    assert (server.root / "bad" / "existing.txt").read_bytes() == b"new"
    assert file_ops(operations(server, seq), "bad/existing.txt") == ["Update"]


def test_a_read_only_server_refuses_uploads(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=False))
    reply = http(
        "POST", f"{server.url}/api/uploads?path=a.txt", headers={**TUS, "Upload-Length": "1"}
    )
    assert (reply.status, reply.json()["code"]) == (403, "forbidden")
    reply = patch_tus(server, "/api/uploads/" + "x" * 32, 0, b"a")
    assert (reply.status, reply.json()["code"]) == (403, "forbidden")


# -- durability --------------------------------------------------------------------------------


def test_kill_9_mid_upload_then_resume_after_restart(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    data = os.urandom(8 * MiB)
    target = "crash/resumed.bin"
    seq = changes(server)["seq"]
    location = create_tus(server, target, len(data))
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
        )
        sent = 0
        deadline = time.monotonic() + 20
        while record_of(server, location)["offset"] < 3 * MiB:
            assert time.monotonic() < deadline, "the upload made no durable progress"
            if sent < 6 * MiB:
                sock.sendall(data[sent : sent + 256 * 1024])
                sent += 256 * 1024
            else:
                time.sleep(0.01)
        server.kill()
    durable = record_of(server, location)["offset"]
    assert 3 * MiB <= durable <= sent
    server.restart()
    assert offset_of(server, location) == durable
    data_file = uploads_dir(server) / location.rsplit("/", 1)[1] / "data"
    assert data_file.stat().st_size == durable
    assert data_file.read_bytes() == data[:durable]
    assert not (server.root / target).exists()
    assert patch_tus(server, location, durable, data[durable:]).status == 204
    assert (
        hashlib.sha256((server.root / target).read_bytes()).digest()
        == hashlib.sha256(data).digest()
    )
    assert file_ops(operations(server, seq), target) == ["Create"]


def test_unfinished_uploads_expire(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, uploads={"expire": "1s"}))
    location = create_tus(server, "late.bin", 10)
    assert patch_tus(server, location, 0, b"12345").status == 204
    upload_dir = uploads_dir(server) / location.rsplit("/", 1)[1]
    assert upload_dir.exists()
    wait_until(lambda: not upload_dir.exists(), timeout=15, what="the expired upload's removal")
    assert head(server, location).status == 404
    assert not (server.root / "late.bin").exists()
