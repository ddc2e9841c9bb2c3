"""Block transfers over real HTTP: manifests, missing chunks, chunk upload/download, commits.

Every bad input of the block protocol is sent here too: chunks whose bytes do not match,
malformed and oversized manifests, commits naming chunks the server lacks, a client that
disconnects mid-chunk, a kill -9 mid-assembly and a full disk (the old version stays intact).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quantum_file_sync.chunks import (
    MANIFEST_MEDIA_TYPE,
    RECORDS_MEDIA_TYPE,
    Manifest,
    manifest_of_file,
    parse_record_header,
    record_header,
)

from tests.file_sync.conftest import (
    Reply,
    RunningQuantum,
    StartQuantum,
    file_sync_config,
    http,
    operations,
    watcher_caught_up,
)
from tests.support.waiting import wait_until

MiB = 1024 * 1024


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def manifest_of(tmp_path: Path, data: bytes) -> Manifest:
    path = tmp_path / f"m-{hashlib.sha256(data).hexdigest()[:12]}"
    path.write_bytes(data)
    _, manifest = manifest_of_file(path)
    path.unlink()
    return manifest


def records(data: bytes, manifest: Manifest, hashes: list[str] | None = None) -> bytes:
    wanted = set(hashes if hashes is not None else [c.hash for c in manifest.chunks])
    body = bytearray()
    for ref in manifest.chunks:
        if ref.hash in wanted:
            wanted.discard(ref.hash)
            body += record_header(ref.hash, ref.size) + data[ref.offset : ref.end]
    return bytes(body)


def parse_records(body: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    position = 0
    while position < len(body):
        end = body.index(b"\n", position) + 1
        digest, size = parse_record_header(body[position:end])
        found[digest] = body[end : end + size]
        position = end + size
    return found


def missing(server: RunningQuantum, manifest: Manifest, path: str | None = None) -> list[str]:
    body: dict[str, Any] = {"chunks": [c.hash for c in manifest.chunks]}
    if path is not None:
        body["path"] = path
    reply = http("POST", server.url + "/api/chunks/missing", json_body=body)
    assert reply.status == 200, reply.body
    result: list[str] = reply.json()["missing"]
    return result


def upload(server: RunningQuantum, body: bytes) -> Reply:
    return http("POST", server.url + "/api/chunks", body, {"Content-Type": RECORDS_MEDIA_TYPE})


def commit(
    server: RunningQuantum, path: str, manifest: Manifest | dict[str, Any], **headers: str
) -> Reply:
    body = manifest.to_json() if isinstance(manifest, Manifest) else manifest
    return http(
        "PUT",
        f"{server.url}/api/files/{path}",
        json.dumps(body),
        {"Content-Type": MANIFEST_MEDIA_TYPE, **headers},
    )


def send_file(server: RunningQuantum, tmp_path: Path, path: str, data: bytes) -> list[str]:
    """Upload ``data`` by blocks; returns the hashes that had to be sent."""
    manifest = manifest_of(tmp_path, data)
    lacking = missing(server, manifest, path)
    if lacking:
        assert upload(server, records(data, manifest, lacking)).status == 200
    reply = commit(server, path, manifest)
    assert reply.status in (200, 201), reply.body
    return lacking


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="64MiB"))


def test_upload_by_blocks_then_a_one_byte_change_sends_one_chunk(
    server: RunningQuantum, tmp_path: Path
) -> None:
    data = random_bytes(8 * MiB, 1)
    manifest = manifest_of(tmp_path, data)
    assert missing(server, manifest) == [c.hash for c in manifest.chunks]
    stored = upload(server, records(data, manifest))
    assert stored.status == 200, stored.body
    assert stored.json()["stored"] == [c.hash for c in manifest.chunks]
    created = commit(server, "big.bin", manifest, **{"If-None-Match": "*"})
    assert created.status == 201, created.body
    assert created.json()["hash"] == manifest.hash
    assert created.header("ETag") == f'"{manifest.hash}"'
    assert (server.root / "big.bin").read_bytes() == data
    wait_until(lambda: any("Create" in op for op in operations(server)), what="the Create")
    seq = _head(server)

    changed = bytearray(data)
    changed[5 * MiB] ^= 0xFF
    new = manifest_of(tmp_path, bytes(changed))
    lacking = missing(server, new, "big.bin")
    assert len(lacking) == 1
    uploaded = metric(server, "quantum_file_chunks_uploaded_total")
    assert upload(server, records(bytes(changed), new, lacking)).status == 200
    assert metric(server, "quantum_file_chunks_uploaded_total") == uploaded + 1
    stale = commit(server, "big.bin", new, **{"If-Match": f'"{"0" * 64}"'})
    assert stale.status == 412
    updated = commit(server, "big.bin", new, **{"If-Match": f'"{manifest.hash}"'})
    assert updated.status == 200, updated.body
    assert (server.root / "big.bin").read_bytes() == bytes(changed)
    wait_until(lambda: len(operations(server, seq)) >= 1, what="the Update")
    assert [next(iter(op)) for op in operations(server, seq)] == ["Update"]


def test_manifest_download_and_chunk_fetch(server: RunningQuantum, tmp_path: Path) -> None:
    data = random_bytes(5 * MiB, 2)
    (server.root / "on-disk.bin").write_bytes(data)  # never cut by the server yet
    expected = manifest_of(tmp_path, data)
    wait_until(
        lambda: http("GET", server.url + "/api/files/on-disk.bin?manifest=true").status == 200,
        what="the file",
    )
    reply = http("GET", server.url + "/api/files/on-disk.bin?manifest=true")
    assert (reply.header("Content-Type") or "").startswith(MANIFEST_MEDIA_TYPE)
    assert reply.header("ETag") == f'"{expected.hash}"'
    assert Manifest.from_json(reply.json(), max_size=len(data)) == expected
    by_accept = http(
        "GET", server.url + "/api/files/on-disk.bin", headers={"Accept": MANIFEST_MEDIA_TYPE}
    )
    assert by_accept.json() == reply.json()
    cached = http(
        "GET",
        server.url + "/api/files/on-disk.bin?manifest=true",
        headers={"If-None-Match": f'"{expected.hash}"'},
    )
    assert cached.status == 304

    wanted = [c.hash for c in expected.chunks[:2]] + ["f" * 64]
    fetched = http("POST", server.url + "/api/chunks/get", json_body={"chunks": wanted})
    assert fetched.status == 200
    assert fetched.header("Content-Type") == RECORDS_MEDIA_TYPE
    got = parse_records(fetched.body)
    assert list(got) == wanted[:2]  # the unknown chunk is left out
    for ref in expected.chunks[:2]:
        assert got[ref.hash] == data[ref.offset : ref.end]


def test_copy_and_rename_send_no_chunk_bytes(server: RunningQuantum, tmp_path: Path) -> None:
    data = random_bytes(6 * MiB, 3)
    send_file(server, tmp_path, "original.bin", data)
    assert send_file(server, tmp_path, "copies/copy.bin", data) == []
    assert (server.root / "copies" / "copy.bin").read_bytes() == data
    moved = http(
        "POST", server.url + "/api/move", json_body={"from": "original.bin", "to": "moved.bin"}
    )
    assert moved.status == 200
    # The renamed file's chunks are still known under its new name.
    assert send_file(server, tmp_path, "copies/again.bin", data) == []


def test_a_chunk_whose_bytes_do_not_match_is_stored_nowhere(
    server: RunningQuantum, tmp_path: Path
) -> None:
    data = random_bytes(3 * MiB, 4)
    manifest = manifest_of(tmp_path, data)
    first, second = manifest.chunks[0], manifest.chunks[1]
    body = (
        record_header(first.hash, first.size)
        + data[first.offset : first.end]
        + record_header(second.hash, second.size)
        + b"x" * second.size
    )
    reply = upload(server, body)
    assert reply.status == 422
    assert reply.json()["code"] == "chunk_mismatch"
    assert reply.json()["hash"] == second.hash
    assert missing(server, manifest) == [c.hash for c in manifest.chunks[1:]]
    refused = commit(server, "never.bin", manifest)
    assert refused.status == 409
    assert refused.json()["code"] == "missing_chunks"
    assert refused.json()["missing"] == [c.hash for c in manifest.chunks[1:]]
    assert not (server.root / "never.bin").exists()


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (lambda m: {**m, "hash": m["hash"][:-1]}, 400, "bad_manifest"),
        (lambda m: {**m, "chunks": m["chunks"][::-1]}, 400, "bad_manifest"),
        (
            lambda m: {
                **m,
                "chunks": [{**m["chunks"][0]}, {**m["chunks"][1], "offset": 10}],
                "size": m["chunks"][0]["size"] + m["chunks"][1]["size"],
            },
            400,
            "bad_manifest",
        ),
        (lambda m: {**m, "size": m["size"] + 1}, 400, "bad_manifest"),
        (lambda m: {**m, "size": 65 * MiB}, 413, "too_large"),
        (lambda m: {**m, "hash": "0" * 64}, 422, "hash_mismatch"),
        (lambda m: [m], 400, "bad_manifest"),
    ],
    ids=["short-hash", "out-of-order", "overlapping", "sizes", "over-limit", "wrong-hash", "list"],
)
def test_bad_manifests_change_nothing(
    server: RunningQuantum, tmp_path: Path, change: Any, status: int, code: str
) -> None:
    data = random_bytes(3 * MiB, 5)
    send_file(server, tmp_path, "victim.bin", data)
    before = _head(server)
    manifest = manifest_of(tmp_path, data).to_json()
    reply = commit(server, "victim.bin", change(manifest))
    assert (reply.status, reply.json()["code"]) == (status, code), reply.body
    assert (server.root / "victim.bin").read_bytes() == data
    assert _head(server) == before


def test_bad_requests(server: RunningQuantum) -> None:
    url = server.url + "/api/chunks/missing"
    assert http("POST", url, json_body={"chunks": ["A" * 64]}).json()["code"] == "bad_hash"
    assert http("POST", url, json_body={"chunks": "x"}).status == 400
    assert http("POST", url, json_body={"chunks": ["a" * 64] * 10_001}).status == 400
    assert http("POST", url, b"{nope").json()["code"] == "invalid_json"
    assert http("POST", url, json_body={"chunks": [], "path": "../x"}).status == 400
    bad = http("POST", server.url + "/api/chunks", b"x", {"Content-Type": "text/plain"})
    assert bad.status == 415
    for body in (b"zz 3\nabc", b"a" * 64 + b" 0\n", b"a" * 64 + b" 99999999\n", b"a" * 200):
        reply = upload(server, body)
        assert (reply.status, reply.json()["code"]) == (400, "bad_record"), body[:80]
    short = upload(server, record_header("a" * 64, 100) + b"only a few")
    assert (short.status, short.json()["code"]) == (400, "bad_record")


def test_a_client_that_disconnects_mid_chunk_leaves_nothing(
    server: RunningQuantum, tmp_path: Path
) -> None:
    data = random_bytes(4 * MiB, 6)
    manifest = manifest_of(tmp_path, data)
    ref = manifest.chunks[0]
    head = (
        f"POST /api/chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {RECORDS_MEDIA_TYPE}\r\n"
        f"Content-Length: {ref.size + 100}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            head + record_header(ref.hash, ref.size) + data[ref.offset : ref.offset + 1000]
        )
    wait_until(lambda: http("GET", server.url + "/api/list").status == 200, what="the server")
    assert ref.hash in missing(server, manifest)


def test_read_only_server_refuses_block_writes(start_quantum: StartQuantum, tmp_path: Path) -> None:
    server = start_quantum(file_sync_config(enable_upload=False))
    data = random_bytes(MiB, 7)
    manifest = manifest_of(tmp_path, data)
    assert upload(server, records(data, manifest)).status == 403
    assert commit(server, "x.bin", manifest).status == 403
    assert missing(server, manifest) == [c.hash for c in manifest.chunks]


def test_kill_during_assembly_leaves_the_old_version(
    start_quantum: StartQuantum, tmp_path: Path
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, max_upload_size="2GiB"))
    old = random_bytes(2 * MiB, 8)
    send_file(server, tmp_path, "doc.bin", old)
    wait_until(lambda: _head(server) >= 1, what="the Create")
    before = _head(server)
    # A large file made of one repeated chunk: slow to assemble, quick to send.
    piece = random_bytes(4 * MiB, 9)
    piece_hash = hashlib.sha256(piece).hexdigest()
    assert upload(server, record_header(piece_hash, len(piece)) + piece).status == 200
    count = 300
    big = {
        "hash": hashlib.sha256(piece * count).hexdigest(),
        "size": len(piece) * count,
        "chunks": [{"hash": piece_hash, "size": len(piece)}] * count,
    }
    temp_dir = server.root / ".quantum" / "tmp"
    with subprocess.Popen(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            f"Content-Type: {MANIFEST_MEDIA_TYPE}",
            "--data-binary",
            json.dumps(big),
            f"{server.url}/api/files/doc.bin",
        ]
    ) as curl:
        wait_until(lambda: _largest(temp_dir) > 16 * MiB, what="assembly under way")
        server.kill()
        curl.wait(timeout=10)
    server.restart()
    wait_until(lambda: http("GET", server.url + "/api/list").status == 200, what="restart")
    assert (server.root / "doc.bin").read_bytes() == old
    # The restart's rescan may announce doc.bin again (the index snapshot a kill -9 leaves can
    # predate it), but only ever as the old version: nothing of the torn assembly.
    old_hash = hashlib.sha256(old).hexdigest()
    for operation in watcher_caught_up(server, before):
        assert [*operation] in (["Create"], ["Update"]), operation
        assert next(iter(operation.values()))["metadata"]["hash"] == old_hash
    assert _largest(temp_dir) == 0  # the torn temp file was removed
    manifest = manifest_of(tmp_path, old)
    assert missing(server, manifest, "doc.bin") == []
    assert send_file(server, tmp_path, "doc-copy.bin", old) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_mid_assembly_keeps_the_old_version(
    start_quantum: StartQuantum, small_disk: Path, tmp_path: Path
) -> None:
    server = start_quantum(
        file_sync_config(root=str(small_disk / "root"), enable_upload=True, watch=False)
    )
    old = random_bytes(3 * MiB, 10)
    send_file(server, tmp_path, "doc.bin", old)
    before = _head(server)
    piece = random_bytes(4 * MiB, 11)
    piece_hash = hashlib.sha256(piece).hexdigest()
    assert upload(server, record_header(piece_hash, len(piece)) + piece).status == 200
    count = 8  # 32 MiB: more than the disk holds
    big = {
        "hash": hashlib.sha256(piece * count).hexdigest(),
        "size": len(piece) * count,
        "chunks": [{"hash": piece_hash, "size": len(piece)}] * count,
    }
    reply = commit(server, "doc.bin", big)
    assert (reply.status, reply.json()["code"]) == (507, "insufficient_storage"), reply.body
    assert (server.root / "doc.bin").read_bytes() == old
    assert _head(server) == before
    assert _largest(server.root / ".quantum" / "tmp") == 0
    assert send_file(server, tmp_path, "small.bin", random_bytes(MiB, 12))  # works again


def metric(server: RunningQuantum, name: str) -> float:
    text = http("GET", server.url + "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no metric {name}")


def _head(server: RunningQuantum) -> int:
    seq: int = http("GET", server.url + "/api/list?recursive=false&limit=1").json()["seq"]
    return seq


def _largest(directory: Path) -> int:
    sizes = (
        [entry.stat().st_size for entry in directory.rglob("*.part") if entry.is_file()]
        if directory.exists()
        else []
    )
    return max(sizes, default=0)


def test_uploaded_chunks_no_commit_uses_expire(start_quantum: StartQuantum, tmp_path: Path) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, uploads={"expire": "1s"}))
    data = random_bytes(MiB, 13)
    manifest = manifest_of(tmp_path, data)
    assert upload(server, records(data, manifest)).status == 200
    assert missing(server, manifest) == []
    wait_until(lambda: missing(server, manifest) != [], timeout=30, what="the reaper")
    assert not any((server.root / ".quantum" / "chunks").glob("??/*"))
