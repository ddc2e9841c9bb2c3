"""Block transfers under concurrency and against a folder that changes under the server.

Real server processes and real requests: commits racing for one path, commits of different
paths sharing uploaded chunks, live files changed or deleted on disk (keeping their stat
identity) between ``missing`` and ``commit``, commits to impossible targets, and concurrent
uploads of one chunk.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from quantum_file_sync.chunks import Manifest, record_header

from tests.file_sync.conftest import (
    Reply,
    RunningQuantum,
    StartQuantum,
    file_sync_config,
    http,
    operations,
    watcher_caught_up,
)
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
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True, max_upload_size="64MiB"))


def _head(server: RunningQuantum) -> int:
    seq: int = http("GET", server.url + "/api/list?recursive=false&limit=1").json()["seq"]
    return seq


def _flip(data: bytes, *offsets: int) -> bytes:
    changed = bytearray(data)
    for offset in offsets:
        changed[offset] ^= 0xFF
    return bytes(changed)


def _together(*calls: Callable[[], Reply]) -> list[Reply]:
    """Run ``calls`` at once (released together by a barrier); their replies in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Reply]) -> Reply:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _blobs(server: RunningQuantum) -> list[Path]:
    return sorted((server.root / ".quantum" / "chunks").glob("??/*"))


def _journal_after(server: RunningQuantum, seq: int, path: str) -> list[dict[str, Any]]:
    """What was journaled for ``path`` after ``seq``, once the disk watcher caught up."""
    return [op for op in watcher_caught_up(server, seq) if _path_of(op) == path]


def _path_of(operation: dict[str, Any]) -> str:
    ((kind, body),) = operation.items()
    return str(body["path"] if kind == "Delete" else body["metadata"]["path"])


def _set_stat_back(path: Path, before: os.stat_result) -> None:
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


# -- commits racing ------------------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(6))
def test_two_commits_racing_for_one_path(
    server: RunningQuantum, tmp_path: Path, round_: int
) -> None:
    path = f"race-{round_}.bin"
    base = random_bytes(6 * MiB, 100 + round_)
    send_file(server, tmp_path, path, base)
    old = manifest_of(tmp_path, base)
    guarded_data = _flip(base, 1 * MiB + 5000)  # with If-Match of the old version
    blind_data = _flip(base, 4 * MiB + 5000)  # without a precondition
    guarded, blind = manifest_of(tmp_path, guarded_data), manifest_of(tmp_path, blind_data)
    for data, manifest in ((guarded_data, guarded), (blind_data, blind)):
        lacking = missing(server, manifest, path)
        assert len(lacking) == 1
        assert upload(server, records(data, manifest, lacking)).status == 200
    wait_until(lambda: _journal_after(server, 0, path) != [], what="the Create")
    seq = _head(server)
    versions = {old.hash, guarded.hash, blind.hash}
    seen: set[str] = set()
    stop = threading.Event()

    def watch_file() -> None:  # the file is always one complete version
        while not stop.is_set():
            seen.add(hashlib.sha256((server.root / path).read_bytes()).hexdigest())

    watcher = threading.Thread(target=watch_file)
    watcher.start()
    try:
        first, second = _together(
            lambda: commit(server, path, guarded, **{"If-Match": f'"{old.hash}"'}),
            lambda: commit(server, path, blind),
        )
    finally:
        stop.set()
        watcher.join()
    assert seen <= versions
    final = hashlib.sha256((server.root / path).read_bytes()).hexdigest()
    replaced = next(c.hash for c in old.chunks if c.offset <= 1 * MiB + 5000 < c.end)
    if first.status == 412:  # the blind one went first: the guarded one lost
        assert first.json()["code"] == "precondition_failed", first.body
        assert (second.status, second.json()["hash"]) == (200, blind.hash), second.body
        winners = [blind.hash]
    elif second.status == 409:  # the guarded one went first and took a chunk the blind lacks
        assert (first.status, first.json()["hash"]) == (200, guarded.hash), first.body
        assert second.json()["code"] == "missing_chunks", second.body
        assert second.json()["missing"] == [replaced]
        winners = [guarded.hash]
    else:  # the guarded one went first, then the blind one
        assert (first.status, first.json()["hash"]) == (200, guarded.hash), first.body
        assert (second.status, second.json()["hash"]) == (200, blind.hash), second.body
        winners = [guarded.hash, blind.hash]
    assert final == winners[-1]
    applied = len(winners)
    journal = _journal_after(server, seq, path)  # after the watcher saw the renames too
    assert [next(iter(op)) for op in journal] == ["Update"] * applied
    assert [op["Update"]["metadata"]["hash"] for op in journal] == winners
    final_manifest = guarded if final == guarded.hash else blind
    assert missing(server, final_manifest, path) == []


def test_two_creations_racing_for_one_path(server: RunningQuantum, tmp_path: Path) -> None:
    for round_ in range(4):
        path = f"created-{round_}.bin"
        versions = [random_bytes(2 * MiB, 160 + 2 * round_ + n) for n in range(2)]
        manifests = [manifest_of(tmp_path, data) for data in versions]
        for data, manifest in zip(versions, manifests, strict=True):
            assert upload(server, records(data, manifest)).status == 200
        seq = _head(server)
        replies = _together(
            *(partial(commit, server, path, m, **{"If-None-Match": "*"}) for m in manifests)
        )
        assert sorted(reply.status for reply in replies) == [201, 412], [r.body for r in replies]
        ((winner,),) = [[n for n, r in enumerate(replies) if r.status == 201]]
        assert (server.root / path).read_bytes() == versions[winner]
        journal = _journal_after(server, seq, path)
        assert [next(iter(op)) for op in journal] == ["Create"]
        assert journal[0]["Create"]["metadata"]["hash"] == manifests[winner].hash
    empty = {"hash": hashlib.sha256(b"").hexdigest(), "size": 0, "chunks": []}
    assert commit(server, "empty.bin", empty).status == 201
    assert (server.root / "empty.bin").read_bytes() == b""


def test_a_stale_if_match_whose_chunks_went_with_the_old_version_is_412(
    server: RunningQuantum, tmp_path: Path
) -> None:
    base = random_bytes(6 * MiB, 150)
    send_file(server, tmp_path, "stale.bin", base)
    old = manifest_of(tmp_path, base)
    mine = _flip(base, 1 * MiB + 5000)
    theirs = _flip(base, 4 * MiB + 5000)
    mine_manifest = manifest_of(tmp_path, mine)
    lacking = missing(server, mine_manifest, "stale.bin")
    assert upload(server, records(mine, mine_manifest, lacking)).status == 200
    send_file(server, tmp_path, "stale.bin", theirs)  # another client's version wins
    # The chunk of the old version that the other one replaced is nowhere now, but what the
    # commit must hear is that its base is gone.
    reply = commit(server, "stale.bin", mine_manifest, **{"If-Match": f'"{old.hash}"'})
    assert (reply.status, reply.json()["code"]) == (412, "precondition_failed"), reply.body
    assert (server.root / "stale.bin").read_bytes() == theirs


def test_commits_of_two_paths_sharing_uploaded_chunks(
    server: RunningQuantum, tmp_path: Path
) -> None:
    for round_ in range(20):
        shared = random_bytes(8 * MiB, 200 + round_)
        one = shared + random_bytes(MiB, 300 + round_)
        two = random_bytes(4 * MiB, 400 + round_) + shared  # needs the shared ones last
        first, second = manifest_of(tmp_path, one), manifest_of(tmp_path, two)
        common = {c.hash for c in first.chunks} & {c.hash for c in second.chunks}
        assert common
        body = records(one, first) + records(two, second, missing(server, second))
        assert upload(server, body).status == 200
        assert missing(server, first) == missing(server, second) == []
        targets = [f"share-{round_}-a.bin", f"share-{round_}-b.bin"]
        replies = _together(
            *(partial(commit, server, t, m) for t, m in zip(targets, (first, second), strict=True))
        )
        for reply, data, target in zip(replies, (one, two), targets, strict=True):
            # never 409: a blob the other commit dropped is found in the other's new file
            assert reply.status == 201, reply.body
            assert (server.root / target).read_bytes() == data
        used = {c.hash for c in first.chunks} | {c.hash for c in second.chunks}
        assert [blob for blob in _blobs(server) if blob.name in used] == []


# -- live files that change under the server -----------------------------------------------------


@pytest.mark.parametrize("target", ["same", "other"])
def test_a_live_file_changed_in_place_between_missing_and_commit(
    server: RunningQuantum, tmp_path: Path, target: str
) -> None:
    source = f"in-place-{target}.bin"
    destination = source if target == "same" else f"in-place-{target}-copy.bin"
    base = random_bytes(8 * MiB, 500 + len(target))
    send_file(server, tmp_path, source, base)
    old = manifest_of(tmp_path, base)
    wanted = _flip(base, 6 * MiB + 100)
    new = manifest_of(tmp_path, wanted)
    lacking = missing(server, new, destination)
    assert len(lacking) == 1
    assert upload(server, records(wanted, new, lacking)).status == 200

    # The source changes within chunk 2, same size, mtime set back: the same stat identity.
    on_disk = server.root / source
    before = on_disk.stat()
    victim = old.chunks[2]
    with open(on_disk, "r+b") as handle:
        handle.seek(victim.offset + 1000)
        handle.write(b"\x00" * 64)
    _set_stat_back(on_disk, before)

    refused = commit(server, destination, new)
    assert (refused.status, refused.json()["code"]) == (409, "missing_chunks"), refused.body
    assert refused.json()["missing"] == [victim.hash]
    if target == "other":
        assert not (server.root / destination).exists()
    assert upload(server, records(wanted, new, [victim.hash])).status == 200
    done = commit(server, destination, new)
    assert done.status == (200 if target == "same" else 201), done.body
    assert (server.root / destination).read_bytes() == wanted


def test_a_live_file_deleted_between_missing_and_commit(
    server: RunningQuantum, tmp_path: Path
) -> None:
    base = random_bytes(6 * MiB, 600)
    send_file(server, tmp_path, "doomed.bin", base)
    wanted = _flip(base, 3 * MiB)
    new = manifest_of(tmp_path, wanted)
    lacking = missing(server, new, "doomed.bin")
    assert len(lacking) == 1
    assert upload(server, records(wanted, new, lacking)).status == 200
    (server.root / "doomed.bin").unlink()
    refused = commit(server, "doomed.bin", new)
    assert (refused.status, refused.json()["code"]) == (409, "missing_chunks"), refused.body
    expected = [c.hash for c in new.chunks if c.hash not in lacking]
    assert refused.json()["missing"] == expected
    assert not (server.root / "doomed.bin").exists()
    assert upload(server, records(wanted, new, expected)).status == 200
    done = commit(server, "doomed.bin", new)
    assert done.status == 201, done.body
    assert (server.root / "doomed.bin").read_bytes() == wanted


def test_fetching_a_chunk_whose_live_source_changed_in_place(
    server: RunningQuantum, tmp_path: Path
) -> None:
    base = random_bytes(6 * MiB, 700)
    send_file(server, tmp_path, "fetched.bin", base)
    manifest = manifest_of(tmp_path, base)
    on_disk = server.root / "fetched.bin"
    before = on_disk.stat()
    victim = manifest.chunks[1]
    with open(on_disk, "r+b") as handle:
        handle.seek(victim.offset + 500)
        handle.write(b"\x00" * 64)
    _set_stat_back(on_disk, before)
    wanted = [c.hash for c in manifest.chunks]
    fetched = http("POST", server.url + "/api/chunks/get", json_body={"chunks": wanted})
    assert fetched.status == 200
    got = parse_records(fetched.body)
    assert list(got) == [c.hash for c in manifest.chunks if c.hash != victim.hash]
    for ref in manifest.chunks:
        if ref.hash in got:
            assert got[ref.hash] == base[ref.offset : ref.end]
    # The file as it is now is served by its real content.
    now = on_disk.read_bytes()
    current = manifest_of(tmp_path, now)
    reply = http("GET", server.url + "/api/files/fetched.bin?manifest=true")
    assert Manifest.from_json(reply.json(), max_size=len(now)) == current
    again = http(
        "POST", server.url + "/api/chunks/get", json_body={"chunks": [current.chunks[1].hash]}
    )
    assert parse_records(again.body) == {
        current.chunks[1].hash: now[current.chunks[1].offset : current.chunks[1].end]
    }


# -- impossible targets ------------------------------------------------------------------------


def test_commits_to_impossible_targets_change_nothing(
    server: RunningQuantum, tmp_path: Path
) -> None:
    assert http("PUT", server.url + "/api/files/plain.txt", b"a plain file").status == 201
    inner = random_bytes(3 * MiB, 800)
    send_file(server, tmp_path, "a-dir/inner.bin", inner)
    data = random_bytes(2 * MiB, 801)
    manifest = manifest_of(tmp_path, data)
    assert upload(server, records(data, manifest)).status == 200
    wait_until(lambda: len(operations(server)) >= 3, what="the Creates")
    before = _head(server)

    under_a_file = commit(server, "plain.txt/child.bin", manifest)
    assert (under_a_file.status, under_a_file.json()["code"]) == (409, "not_a_directory")
    for reserved in (".quantum/x.bin", ".quantum/chunks/index.sqlite3", ".Quantum-sync/x"):
        reply = commit(server, reserved, manifest)
        assert (reply.status, reply.json()["code"]) == (403, "reserved"), reserved
    onto_a_dir = commit(server, "a-dir", manifest)
    assert (onto_a_dir.status, onto_a_dir.json()["code"]) == (409, "is_directory")
    unknown = manifest_of(tmp_path, random_bytes(MiB, 802))
    onto_a_dir = commit(server, "a-dir", unknown)
    assert (onto_a_dir.status, onto_a_dir.json()["code"]) == (409, "is_directory")
    assert missing(server, unknown, "a-dir") == [c.hash for c in unknown.chunks]

    assert (server.root / "plain.txt").read_bytes() == b"a plain file"
    assert (server.root / "a-dir").is_dir()
    assert (server.root / "a-dir" / "inner.bin").read_bytes() == inner
    assert not list((server.root / ".quantum").glob("x.bin"))
    assert _head(server) == before
    assert missing(server, manifest) == []  # the uploaded chunks are still there
    # and the live files below the directory are still known by their chunks
    assert send_file(server, tmp_path, "inner-copy.bin", inner) == []


def test_a_manifest_naming_known_chunks_with_wrong_sizes_is_400(
    server: RunningQuantum, tmp_path: Path
) -> None:
    """Not 409 missing_chunks: the client would upload them, be told they are stored, and
    be refused again, for ever."""
    data = random_bytes(6 * MiB, 850)
    send_file(server, tmp_path, "sized.bin", data)  # its chunks: in a live file
    blob_data = random_bytes(6 * MiB, 851)
    blob_manifest = manifest_of(tmp_path, blob_data)
    assert upload(server, records(blob_data, blob_manifest)).status == 200  # these: blobs
    for manifest in (manifest_of(tmp_path, data), blob_manifest):
        body = manifest.to_json()
        body["chunks"][0]["size"] -= 1
        body["chunks"][1]["size"] += 1
        for chunk in body["chunks"]:
            del chunk["offset"]
        reply = commit(server, "wrongly-sized.bin", body)
        assert (reply.status, reply.json()["code"]) == (400, "bad_manifest"), reply.body
        assert missing(server, manifest) == []
    assert not (server.root / "wrongly-sized.bin").exists()
    assert commit(server, "rightly-sized.bin", blob_manifest).status == 201


def test_a_truncated_blob_is_missing_not_a_bad_manifest(
    server: RunningQuantum, tmp_path: Path
) -> None:
    data = random_bytes(6 * MiB, 860)
    manifest = manifest_of(tmp_path, data)
    assert upload(server, records(data, manifest)).status == 200
    damaged = manifest.chunks[1].hash
    blob = server.root / ".quantum" / "chunks" / damaged[:2] / damaged
    os.truncate(blob, 1000)
    reply = commit(server, "from-damaged.bin", manifest)
    assert (reply.status, reply.json()["code"]) == (409, "missing_chunks"), reply.body
    assert reply.json()["missing"] == [damaged]
    assert missing(server, manifest) == [damaged]
    assert upload(server, records(data, manifest, [damaged])).status == 200
    assert commit(server, "from-damaged.bin", manifest).status == 201
    assert (server.root / "from-damaged.bin").read_bytes() == data


# -- uploads -------------------------------------------------------------------------------------


def test_a_records_body_without_a_header_line_is_400(server: RunningQuantum) -> None:
    for size in (70_000, MiB, 8 * MiB):  # over aiohttp's line limit too
        reply = upload(server, b"a" * size)
        assert (reply.status, reply.json()["code"]) == (400, "bad_record"), size


def test_concurrent_uploads_of_one_chunk(start_quantum: StartQuantum, tmp_path: Path) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    piece = random_bytes(4 * MiB, 900)
    digest = hashlib.sha256(piece).hexdigest()
    body = record_header(digest, len(piece)) + piece
    replies = _together(*[lambda: upload(server, body)] * 4)
    for reply in replies:
        assert reply.status == 200, reply.body
        assert reply.json()["stored"] == [digest]
    blobs = _blobs(server)
    assert [blob.name for blob in blobs] == [digest]
    assert blobs[0].read_bytes() == piece
    assert list((server.root / ".quantum" / "chunks" / "tmp").iterdir()) == []
    fetched = http("POST", server.url + "/api/chunks/get", json_body={"chunks": [digest]})
    assert parse_records(fetched.body) == {digest: piece}


def test_no_chunk_is_read_through_a_link_out_of_the_folder(
    server: RunningQuantum, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = random_bytes(MiB, 950)
    (outside / "secret.bin").write_bytes(secret)
    (server.root / "escape").symlink_to(outside, target_is_directory=True)
    (server.root / "inward").symlink_to(server.root / ".quantum", target_is_directory=True)
    manifest = manifest_of(tmp_path, secret)
    for path in ("escape/secret.bin", "inward/chunks/index.sqlite3"):
        reply = http("GET", f"{server.url}/api/files/{path}?manifest=true")
        assert reply.status in (400, 403, 404), reply.body
    assert missing(server, manifest, "escape/secret.bin") == [c.hash for c in manifest.chunks]
    fetched = http(
        "POST", server.url + "/api/chunks/get", json_body={"chunks": [manifest.chunks[0].hash]}
    )
    assert fetched.body == b""
