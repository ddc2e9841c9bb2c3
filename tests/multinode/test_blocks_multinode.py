"""Block transfers on two nodes sharing one root and one Redis.

A chunk uploaded to one node is a blob on the shared disk, so any node commits with it; a node
finds the unchanged chunks of a live file another node wrote (path hint), so a small change
sent through it costs only the changed chunk; both nodes run on this one host, so they share
one ``index-HOSTNAME.sqlite3``, which concurrent commits through both must leave sound.
"""

from __future__ import annotations

import copy
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
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
from tests.support.processes import QUANTUM, QuantumProcess, free_port, wait_for_port
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


def test_one_chunk_uploaded_through_both_nodes_at_once(
    start_node: StartNode, shared_root: Path, tmp_path: Path
) -> None:
    a, b = start_node("a"), start_node("b")
    piece = random_bytes(4 * MiB, 600)
    manifest = manifest_of(tmp_path, piece)
    body = records(piece, manifest)
    barrier = threading.Barrier(4)

    def send(node: RunningQuantum) -> int:
        barrier.wait()
        return upload(node, body).status

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(send, [a, b, a, b])) == [200] * 4
    assert _blobs(shared_root) == sorted({c.hash for c in manifest.chunks})
    assert list((_chunks_dir(shared_root) / "tmp").iterdir()) == []
    assert commit(b, "once.bin", manifest).status == 201
    assert (shared_root / "once.bin").read_bytes() == piece


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


# -- a node on another host (its own UTS namespace, so its own hostname and index) ---------------

OTHER_HOST = "quantum-other-host"
_IN_OTHER_HOST = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', OTHER_HOST]


class _OtherHostProcess(QuantumProcess):
    def start(self, *, wait: bool = True) -> QuantumProcess:
        self.write_config()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*_IN_OTHER_HOST, *QUANTUM, "run", "--config", str(self.config_path), *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait and self.port is not None:
            wait_for_port(self.port)
        return self


@pytest.fixture
def on_other_host(tmp_path: Path) -> Iterator[Callable[[RunningQuantum], RunningQuantum]]:
    """``on_other_host(a)``: a node of a's cluster whose hostname is not this host's."""
    probe = subprocess.run(
        ["unshare", "--uts", "hostname", OTHER_HOST], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"no UTS namespace here: {probe.stderr.decode().strip()}")
    started: list[RunningQuantum] = []

    def start(peer: RunningQuantum) -> RunningQuantum:
        config = copy.deepcopy(peer.config)
        port = free_port()
        next(iter(config["apps"]["http"]["servers"].values()))["listen"] = [f"127.0.0.1:{port}"]
        workdir = tmp_path / "other-host"
        workdir.mkdir()
        process = _OtherHostProcess(config, workdir, port=port)
        node = RunningQuantum(process, peer.root, workdir, config)
        started.append(node)
        node.process.start()
        return node

    yield start
    for node in started:
        node.stop()


def test_a_node_on_another_host_finds_the_chunks_of_a_file_written_on_a_by_its_path(
    start_node: StartNode,
    on_other_host: Callable[[RunningQuantum], RunningQuantum],
    shared_root: Path,
    tmp_path: Path,
) -> None:
    a = start_node("a")
    b = on_other_host(a)
    data = random_bytes(8 * MiB, 400)
    send_file(a, tmp_path, "written-on-a.bin", data)
    old = manifest_of(tmp_path, data)
    indexes = {p.name for p in _chunks_dir(shared_root).glob("index-*.sqlite3")}
    assert indexes == {f"index-{socket.gethostname()}.sqlite3", f"index-{OTHER_HOST}.sqlite3"}

    changed = bytearray(data)
    changed[3 * MiB] ^= 0xFF
    new = manifest_of(tmp_path, bytes(changed))
    lacking = missing(b, new, "written-on-a.bin")  # b cuts the file it has not seen yet
    assert len(lacking) == 1
    assert upload(b, records(bytes(changed), new, lacking)).status == 200
    updated = commit(b, "written-on-a.bin", new, **{"If-Match": f'"{old.hash}"'})
    assert updated.status == 200, updated.body
    assert (shared_root / "written-on-a.bin").read_bytes() == bytes(changed)
    # a knows the file's new version as well once it has followed b's change
    wait_until(lambda: _manifest_on(a, "written-on-a.bin") == new, what="a to see b's change")
    assert missing(a, new) == []
    assert send_file(a, tmp_path, "copy-on-a.bin", bytes(changed)) == []

    # and chunks uploaded to a are committed through b
    other = random_bytes(3 * MiB, 401)
    manifest = manifest_of(tmp_path, other)
    assert upload(a, records(other, manifest)).status == 200
    assert missing(b, manifest) == []
    assert commit(b, "uploaded-to-a.bin", manifest).status == 201
    assert (shared_root / "uploaded-to-a.bin").read_bytes() == other


def test_a_chunk_uploaded_again_to_another_host_lives_its_full_expiry(
    start_node: StartNode,
    on_other_host: Callable[[RunningQuantum], RunningQuantum],
    shared_root: Path,
    tmp_path: Path,
) -> None:
    """Each host's index remembers when *it* stored a blob; the blob file is shared. a must
    not reap a blob b stored again after a did (b's client is about to commit with it)."""
    expire = 4.0
    a = start_node("a", uploads={"expire": f"{expire:g}s"})
    b = on_other_host(a)
    data = random_bytes(200 * 1024, 500)  # one chunk
    manifest = manifest_of(tmp_path, data)
    (digest,) = [c.hash for c in manifest.chunks]
    blob = _chunks_dir(shared_root) / digest[:2] / digest
    assert upload(a, records(data, manifest)).status == 200
    stored_on_a = blob.stat().st_mtime
    wait_until(lambda: time.time() > stored_on_a + expire / 2, what="half the expiry")
    assert upload(b, records(data, manifest)).status == 200  # another client, through b
    stored_on_b = blob.stat().st_mtime
    a_index = _chunks_dir(shared_root) / f"index-{socket.gethostname()}.sqlite3"

    def a_reaper_saw_it() -> bool:  # dropped a's row, or moved it to b's store time
        with sqlite3.connect(f"file:{a_index}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT stored FROM blobs").fetchall()
        return rows == [] or rows[0][0] >= stored_on_b

    wait_until(a_reaper_saw_it, timeout=3 * expire, what="a's reaper")
    assert time.time() < stored_on_b + expire  # b's upload has not expired yet
    assert blob.read_bytes() == data
    assert missing(b, manifest) == []
    wait_until(lambda: not blob.exists(), timeout=3 * expire, what="the blob's expiry")
