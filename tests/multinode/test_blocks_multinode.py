"""Block transfers on two nodes sharing one root and one Redis.

A chunk uploaded to one node is a blob on the shared disk, so any node commits with it; a node
finds the unchanged chunks of a live file another node wrote (path hint), so a small change
sent through it costs only the changed chunk; both nodes run on this one host, so they share
one ``index-HOSTNAME.sqlite3``, which concurrent commits through both must leave sound.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from quantum_file_sync.chunks import Manifest

from tests.file_sync.conftest import RunningQuantum, http
from tests.file_sync.test_blocks import (
    MiB,
    commit,
    manifest_of,
    missing,
    parse_records,
    random_bytes,
    records,
    send_file,
    upload,
)
from tests.multinode.conftest import StartNode
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(120)]


def _chunks_dir(root: Path) -> Path:
    return root / ".quantum" / "chunks"


def _blobs(root: Path) -> list[str]:
    return sorted(blob.name for blob in _chunks_dir(root).glob("??/*"))


def _manifest_on(node: RunningQuantum, path: str) -> Manifest | None:
    reply = http("GET", f"{node.url}/api/files/{path}?manifest=true")
    if reply.status != 200:
        return None
    return Manifest.from_json(reply.json(), max_size=1 << 40)


def test_chunks_uploaded_to_a_are_committed_through_b(
    start_node: StartNode, shared_root: Path, tmp_path: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    data = random_bytes(6 * MiB, 1)
    manifest = manifest_of(tmp_path, data)
    assert missing(a, manifest) == missing(b, manifest) == [c.hash for c in manifest.chunks]
    assert upload(a, records(data, manifest)).status == 200
    assert missing(b, manifest) == []  # a blob on the shared disk counts on every node
    created = commit(b, "from-a.bin", manifest, **{"If-None-Match": "*"})
    assert created.status == 201, created.body
    assert (shared_root / "from-a.bin").read_bytes() == data
    assert _blobs(shared_root) == []  # their bytes are in a live file now
    assert missing(a, manifest) == missing(b, manifest) == []
    fetched = http(
        "POST", a.url + "/api/chunks/get", json_body={"chunks": [c.hash for c in manifest.chunks]}
    )
    assert parse_records(fetched.body) == {c.hash: data[c.offset : c.end] for c in manifest.chunks}


def test_a_one_byte_change_through_b_of_a_file_committed_on_a_sends_one_chunk(
    start_node: StartNode, shared_root: Path, tmp_path: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    data = random_bytes(8 * MiB, 2)
    send_file(a, tmp_path, "edited.bin", data)
    changed = bytearray(data)
    changed[5 * MiB] ^= 0xFF
    new = manifest_of(tmp_path, bytes(changed))
    old = manifest_of(tmp_path, data)
    lacking = missing(b, new, "edited.bin")
    assert len(lacking) == 1
    assert upload(b, records(bytes(changed), new, lacking)).status == 200
    updated = commit(b, "edited.bin", new, **{"If-Match": f'"{old.hash}"'})
    assert updated.status == 200, updated.body
    assert (shared_root / "edited.bin").read_bytes() == bytes(changed)
    wait_until(lambda: _manifest_on(a, "edited.bin") == new, what="a to serve the new version")
    assert _manifest_on(b, "edited.bin") == new


def test_concurrent_commits_through_both_nodes_keep_the_shared_index_sound(
    start_node: StartNode, shared_root: Path, tmp_path: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    files = {f"many/{i}.bin": random_bytes(3 * MiB, 100 + i) for i in range(12)}

    def send(item: tuple[int, tuple[str, bytes]]) -> list[str]:
        number, (path, data) = item
        return send_file((a, b)[number % 2], tmp_path / f"w{number}", path, data)

    for number in range(len(files)):
        (tmp_path / f"w{number}").mkdir()
    with ThreadPoolExecutor(4) as pool:
        sent = list(pool.map(send, enumerate(files.items())))
    assert all(sent)  # every file was new: its chunks were uploaded
    for path, data in files.items():
        assert (shared_root / path).read_bytes() == data

    # Copies through the other node send nothing: every chunk is known where it is.
    with ThreadPoolExecutor(4) as pool:
        copies = list(
            pool.map(
                lambda item: send_file(
                    (b, a)[item[0] % 2], tmp_path / f"w{item[0]}", f"copy/{item[0]}.bin", item[1]
                ),
                enumerate(files.values()),
            )
        )
    assert copies == [[] for _ in files]

    indexes = sorted(p.name for p in _chunks_dir(shared_root).iterdir() if p.is_file())
    name = f"index-{socket.gethostname()}.sqlite3"
    assert [p for p in indexes if not p.startswith(name)] == []  # no *.corrupt-* left behind
    with sqlite3.connect(f"file:{_chunks_dir(shared_root) / name}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        known = {row[0] for row in db.execute("SELECT path FROM files")}
    assert set(files) | {f"copy/{i}.bin" for i in range(len(files))} <= known
    for path, data in files.items():
        manifest = manifest_of(tmp_path, data)
        for node in (a, b):
            assert _manifest_on(node, path) == manifest
            assert missing(node, manifest) == []


def _commit_after(
    barrier: threading.Barrier, path: str, version: tuple[RunningQuantum, Manifest]
) -> int:
    barrier.wait()
    return commit(version[0], path, version[1]).status


def test_commits_of_one_path_through_both_nodes_leave_the_last_version_known(
    start_node: StartNode, shared_root: Path, tmp_path: Path
) -> None:
    """The commit that lost the race must not record its version over the winner's."""
    a, b = start_node("a"), start_node("b")
    for round_ in range(12):
        path = f"contested-{round_}.bin"
        base = random_bytes(3 * MiB, 300 + round_)
        send_file(a, tmp_path, path, base)
        versions = []
        for number, node in enumerate((a, b)):
            changed = bytearray(base)
            changed[100 + number] ^= 0xFF
            manifest = manifest_of(tmp_path, bytes(changed))
            lacking = missing(node, manifest, path)
            assert upload(node, records(bytes(changed), manifest, lacking)).status == 200
            versions.append((node, bytes(changed), manifest))
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            replies = list(
                pool.map(partial(_commit_after, barrier, path), [(v[0], v[2]) for v in versions])
            )
        assert replies == [200, 200]
        final = (shared_root / path).read_bytes()
        ((_, _, manifest),) = [v for v in versions if v[1] == final]
        for node in (a, b):
            assert missing(node, manifest) == [], round_


def test_a_node_starting_keeps_the_blob_another_node_is_writing(
    start_node: StartNode, shared_root: Path
) -> None:
    a = start_node("a")
    temp = _chunks_dir(shared_root) / "tmp"
    wait_until(temp.is_dir, what="a's chunk store")
    writing = temp / "0123456789abcdef0123456789abcdef.part"  # a blob a is writing right now
    writing.write_bytes(b"half of a chunk")
    abandoned = temp / "fedcba9876543210fedcba9876543210.part"  # left by a crash long ago
    abandoned.write_bytes(b"torn")
    long_ago = time.time() - 2 * 86400
    os.utime(abandoned, (long_ago, long_ago))
    b = start_node("b")
    assert http("GET", b.url + "/api/list").status == 200
    wait_until(lambda: not abandoned.exists(), what="b to clear what a crash left")
    assert writing.read_bytes() == b"half of a chunk"
    assert http("GET", a.url + "/api/list").status == 200
