"""File history under bad input and failures (docs/history.md).

Real server processes on 127.0.0.1: restores that cannot apply, restores racing each other, a
purge while the version is being downloaded, forged paging cursors, a full disk (a small
tmpfs), and kill -9 during restores and during many concurrent changes. After each failure
the live files, the catalogue (``.quantum/history/history.sqlite3``) and the files of history
(pins, trash, blobs) must agree.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client as httpclient
import json
import os
import random
import socket
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from quantum_file_sync.chunks import record_header

from tests.client.conftest import wait_until
from tests.file_sync.conftest import (
    Reply,
    RunningQuantum,
    StartQuantum,
    file_sync_config,
    http,
    operations,
)
from tests.file_sync.test_blocks import (  # noqa: F401  (small_disk: a fixture)
    MiB,
    commit,
    random_bytes,
    small_disk,
    upload,
)
from tests.file_sync.test_history import put, settled, sha, usage, versions

HISTORY = Path(".quantum") / "history"


def restore(server: RunningQuantum, path: str, version: int, **extra: Any) -> Reply:
    body = {"path": path, "version": version, **extra}
    return http("POST", f"{server.url}/api/restore", json_body=body, timeout=120)


def head(server: RunningQuantum) -> int:
    seq: int = http("GET", server.url + "/api/list?recursive=false&limit=1").json()["seq"]
    return seq


def trash(server: RunningQuantum, **query: Any) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    reply = http("GET", f"{server.url}/api/trash" + (f"?{params}" if params else ""))
    assert reply.status == 200, reply.body
    return dict(reply.json())


def code(reply: Reply) -> tuple[int, str]:
    return reply.status, reply.json()["code"]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def commit_repeated(server: RunningQuantum, path: str, piece: bytes, count: int) -> str:
    """A large file made of one chunk repeated ``count`` times: cheap to send, slow to build.
    Returns its SHA-256."""
    digest = sha(piece)
    assert upload(server, record_header(digest, len(piece)) + piece).status == 200
    whole = hashlib.sha256()
    for _ in range(count):
        whole.update(piece)
    manifest = {
        "hash": whole.hexdigest(),
        "size": len(piece) * count,
        "chunks": [{"hash": digest, "size": len(piece)}] * count,
    }
    reply = commit(server, path, manifest)
    assert reply.status in (200, 201), reply.body
    return whole.hexdigest()


def largest_part(directory: Path) -> int:
    sizes = [p.stat().st_size for p in directory.rglob("*.part") if p.is_file()]
    return max(sizes, default=0)


def up(server: RunningQuantum) -> bool:
    try:
        return http("GET", server.url + "/api/list?recursive=false&limit=1").status == 200
    except OSError:
        return False


def restart(server: RunningQuantum) -> None:
    server.restart()
    wait_until(lambda: up(server), 30, what="the restart")


def catalogue(root: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(versions: id, path, pin, hash, complete, trash), (trash: id, path, pinned, files)."""
    db = sqlite3.connect(f"file:{root / HISTORY / 'history.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT id, path, pin, hash, complete, trash FROM versions ORDER BY id"
        ).fetchall()
        items = db.execute("SELECT id, path, pinned, files FROM trash ORDER BY id").fetchall()
    finally:
        db.close()
    return rows, items


def assert_history_consistent(root: Path) -> None:
    """Every pin a version names exists, every file in ``pins/`` belongs to a version, and the
    trash items are exactly the entries of ``trash/`` (read with the server stopped)."""
    rows, items = catalogue(root)
    base = root / HISTORY
    for version_id, path, pin, *_ in rows:
        if pin is not None:
            assert os.path.lexists(base / pin), (version_id, path, pin)
    named = {pin for _, _, pin, *_ in rows if pin is not None}
    orphans = [p.name for p in (base / "pins").iterdir() if f"pins/{p.name}" not in named]
    assert orphans == []
    on_disk = sorted(int(entry.name) for entry in (base / "trash").iterdir())
    assert on_disk == sorted(item_id for item_id, _, pinned, _ in items if pinned)
    for item_id, _, pinned, files in items:
        held = [r for r in rows if r[5] == item_id]
        assert files == len(held), (item_id, files, held)
        if pinned:
            for _, _, pin, *_ in held:
                assert pin is not None and pin.startswith(f"trash/{item_id}")


@pytest.fixture
def server(start_quantum: StartQuantum) -> RunningQuantum:
    return start_quantum(file_sync_config(enable_upload=True, max_upload_size="1GiB"))


# -- bad input ----------------------------------------------------------------------------------


def test_restore_refuses_what_cannot_apply(server: RunningQuantum) -> None:
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    put(server, "dir/f.txt", b"f1")
    put(server, "dir/f.txt", b"f2")
    version = versions(server, "a.txt")["versions"][0]["id"]
    nested = versions(server, "dir/f.txt")["versions"][0]["id"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"path": "/etc/passwd", "version": version}, 400, "bad_path"),
        ({"path": "a.txt/../../x", "version": version}, 400, "bad_path"),
        ({"path": "", "version": version}, 400, "bad_path"),
        ({"path": "a\x00b", "version": version}, 400, "bad_path"),
        ({"path": "a.txt", "version": version, "to": "../x"}, 400, "bad_path"),
        ({"path": "a.txt", "version": version, "to": ".quantum/x"}, 403, "reserved"),
        ({"path": "a.txt", "version": version, "to": "/tmp/x"}, 400, "bad_path"),
        ({"path": "a.txt", "version": 0}, 400, "bad_request"),
        ({"path": "a.txt", "version": True}, 400, "bad_request"),
        ({"path": "a.txt", "version": 2**70}, 400, "bad_request"),
        ({"path": "a.txt", "version": nested}, 404, "version_not_found"),
    ]
    for body, status, expected in cases:
        reply = http("POST", f"{server.url}/api/restore", json_body=body)
        assert (reply.status, reply.json()["code"]) == (status, expected), (body, reply.body)
    for url, status, expected in (
        (f"/api/versions/a.txt?version={2**70}", 400, "bad_request"),
        (f"/api/versions/a.txt?version={nested}", 404, "version_not_found"),
    ):
        assert code(http("GET", server.url + url)) == (status, expected), url
    huge = http("POST", f"{server.url}/api/trash/restore", json_body={"ids": [2**70]})
    assert code(huge) == (400, "bad_request")
    # A parent that is a file now: nothing is written.
    http("DELETE", f"{server.url}/api/files/dir")
    put(server, "dir", b"a file where the directory was")
    moved = restore(server, "dir/f.txt", nested)
    assert moved.status == 404 or code(moved) == (409, "not_a_directory"), moved.body
    assert (server.root / "dir").read_bytes() == b"a file where the directory was"
    assert (server.root / "a.txt").read_bytes() == b"2"


def test_restore_of_a_version_purged_with_its_trash_item(server: RunningQuantum) -> None:
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    kept = versions(server, "a.txt")["versions"][0]["id"]
    assert http("DELETE", f"{server.url}/api/files/a.txt").status == 204
    assert http("DELETE", f"{server.url}/api/trash").json() == {"purged": 1}
    put(server, "a.txt", b"3")
    # The version from before the delete is still there; purging it makes it 404.
    assert http("DELETE", f"{server.url}/api/versions/a.txt?version={kept}").status == 200
    assert code(restore(server, "a.txt", kept)) == (404, "version_not_found")
    again = http("DELETE", f"{server.url}/api/versions/a.txt?version={kept}")
    assert code(again) == (404, "version_not_found")
    assert (server.root / "a.txt").read_bytes() == b"3"


def test_restore_onto_a_directory_restored_from_the_trash(server: RunningQuantum) -> None:
    """A trashed file whose path is a directory now is a conflict and stays in the trash."""
    put(server, "x", b"file x")
    http("DELETE", f"{server.url}/api/files/x")
    http("POST", f"{server.url}/api/mkdir", json_body={"path": "x"})
    put(server, "y/z.txt", b"z")
    http("DELETE", f"{server.url}/api/files/y")
    put(server, "y", b"a file now")
    items = trash(server)["items"]
    reply = http(
        "POST", f"{server.url}/api/trash/restore", json_body={"ids": [i["id"] for i in items]}
    ).json()
    assert reply["restored"] == []
    assert sorted((c["path"], c["code"]) for c in reply["conflicts"]) == [
        ("x", "is_directory"),
        ("y/z.txt", "not_a_directory"),
    ]
    assert [i["id"] for i in trash(server)["items"]] == [i["id"] for i in items]
    assert (server.root / "x").is_dir() and (server.root / "y").read_bytes() == b"a file now"


def test_many_concurrent_restores_of_one_file(server: RunningQuantum) -> None:
    rng = random.Random(3)
    contents = [rng.randbytes(2 * MiB) for _ in range(6)]
    for data in contents:
        put(server, "race.bin", data)
    old = versions(server, "race.bin")["versions"]
    assert [v["hash"] for v in old] == [sha(d) for d in reversed(contents[:-1])]
    before = head(server)
    requests = [old[n % len(old)] for n in range(16)]
    start = threading.Barrier(len(requests))

    def one(version: dict[str, Any]) -> Reply:
        start.wait()
        return restore(server, "race.bin", version["id"])

    with ThreadPoolExecutor(len(requests)) as pool:
        replies = list(pool.map(one, requests))
    done = [v for v, r in zip(requests, replies, strict=True) if r.status == 200]
    for version, reply in zip(requests, replies, strict=True):
        assert reply.status == 200, reply.body  # nothing stops a restore onto a plain file
        assert reply.json()["restored_from"] == version["id"]
        assert reply.json()["metadata"]["hash"] == version["hash"]
    final = file_hash(server.root / "race.bin")
    assert final in {sha(d) for d in contents[:-1]}
    # Each restore kept what it replaced: the versions made now and the live file are exactly
    # what was live before plus what the restores wrote.
    now = versions(server, "race.bin")["versions"]
    made = [v["hash"] for v in now if v["id"] > old[0]["id"]]
    assert len(made) == len(done)
    assert Counter([*made, final]) == Counter([sha(contents[-1]), *(v["hash"] for v in done)])
    ops = [op for op in operations(server, before) if "Purge" not in op]
    assert [next(iter(op)) for op in ops] == ["Update"] * len(done)
    assert {op["Update"]["metadata"]["path"] for op in ops} == {"race.bin"}
    # Every version is whole.
    for version in now:
        body = http("GET", f"{server.url}/api/versions/race.bin?version={version['id']}")
        assert body.status == 200 and sha(body.body) == version["hash"]


@contextlib.contextmanager
def slow_download(
    server: RunningQuantum, path: str, version: int
) -> Iterator[httpclient.HTTPResponse]:
    """A version download read by a client with a small receive buffer: the server is still
    sending while the test does something else."""
    connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.connect()
    assert connection.sock is not None
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        connection.request("GET", f"/api/versions/{path}?version={version}")
        response = connection.getresponse()
        assert response.status == 200
        yield response
    finally:
        connection.close()


def test_a_purge_during_a_download_of_that_version(start_quantum: StartQuantum) -> None:
    """Blob collection waits for downloads that are streaming: the download completes with the
    right bytes, and the blobs go once it is over (no copies of live files: the only blobs
    are the version's)."""
    config = file_sync_config(enable_upload=True, history={"copies_below": 0})
    server = start_quantum(config)
    data = random_bytes(32 * MiB, 21)
    put(server, "big.bin", data)
    put(server, "big.bin", b"small now")
    assert settled(server)["stored_bytes"] == len(data)  # compacted: its chunks are blobs
    version = versions(server, "big.bin")["versions"][0]["id"]
    blobs = server.root / HISTORY / "chunks"
    with slow_download(server, "big.bin", version) as response:
        first = response.read(MiB)
        purge = http("DELETE", f"{server.url}/api/versions/big.bin?version={version}")
        assert purge.json() == {"purged": 1}
        assert code(restore(server, "big.bin", version)) == (404, "version_not_found")
        assert any(blobs.glob("??/*"))  # still read by the download
        rest = response.read()
    assert first + rest == data
    wait_until(lambda: not any(blobs.glob("??/*")), 20, what="the blobs collected")
    state = usage(server)
    assert state["stored_bytes"] == 0 and state["versions"]["count"] == 0
    gone = http("GET", f"{server.url}/api/versions/big.bin?version={version}")
    assert code(gone) == (404, "version_not_found")


def test_a_download_while_the_compactor_reduces_that_version(server: RunningQuantum) -> None:
    """A version downloaded just after it was kept is read from its pin; the compactor turns
    it into blobs and drops the pin meanwhile: the download reads the blobs instead."""
    for n in range(3):
        data = random_bytes(32 * MiB, 60 + n)
        put(server, "big.bin", data)
        put(server, "big.bin", f"small {n}".encode())
        version = versions(server, "big.bin")["versions"][0]["id"]
        with slow_download(server, "big.bin", version) as response:
            first = response.read(MiB)
            settled(server)  # compacted while the download is under way
            rest = response.read()
        assert sha(first + rest) == sha(data)


def _tampered(cursor: str, **changes: Any) -> str:
    raw_payload, mac = cursor.split(".")
    payload = json.loads(base64.urlsafe_b64decode(raw_payload + "=" * (-len(raw_payload) % 4)))
    payload.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{encoded.rstrip(b'=').decode()}.{mac}"


def test_forged_and_misused_cursors(start_quantum: StartQuantum) -> None:
    one = start_quantum(file_sync_config(enable_upload=True), name="one")
    two = start_quantum(file_sync_config(enable_upload=True), name="two")
    for server in (one, two):
        for n in range(4):
            put(server, "p.txt", str(n).encode())
        for n in range(3):
            put(server, f"t{n}.txt", b"t")
            http("DELETE", f"{server.url}/api/files/t{n}.txt")
    mine = versions(one, "p.txt", limit=1)["next"]
    theirs = versions(two, "p.txt", limit=1)["next"]
    bin_cursor = trash(one, limit=1)["next"]
    assert mine and theirs and bin_cursor
    assert len(versions(one, "p.txt", limit=1, cursor=mine)["versions"]) == 1
    assert len(trash(one, limit=1, cursor=bin_cursor)["items"]) == 1
    bad = [
        f"/api/versions/p.txt?cursor={_tampered(mine, id=10**6)}",
        f"/api/versions/p.txt?cursor={_tampered(mine, q='versions:other.txt')}",
        f"/api/versions/p.txt?cursor={_tampered(mine, id='1')}",
        f"/api/versions/p.txt?cursor={mine}x",
        f"/api/versions/p.txt?cursor={mine.split('.')[0]}",
        f"/api/versions/p.txt?cursor={mine}.{mine.split('.')[1]}",
        "/api/versions/p.txt?cursor=",
        "/api/versions/p.txt?cursor=%C3%A9.%C3%A9",
        "/api/versions/p.txt?cursor=a=b.c==",
        f"/api/versions/p.txt?cursor={bin_cursor}",  # a trash cursor for versions
        f"/api/trash?cursor={mine}",  # a versions cursor for the trash
        f"/api/trash?prefix=t1.txt&cursor={bin_cursor}",  # another query
        f"/api/trash?since=0&cursor={bin_cursor}",
        f"/api/trash?cursor={_tampered(bin_cursor, id=1)}",
        f"/api/versions/p.txt?cursor={theirs}",  # another server's root
    ]
    for url in bad:
        reply = http("GET", one.url + url)
        assert code(reply) == (400, "bad_cursor"), (url, reply.body)
    reply = http("GET", f"{two.url}/api/versions/p.txt?cursor={mine}")
    assert code(reply) == (400, "bad_cursor")


# -- a full disk --------------------------------------------------------------------------------


def fill(disk: Path, leave: int) -> Path:
    """A file outside the server's root that leaves ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("ab") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def disk(request: pytest.FixtureRequest) -> Path:
    """test_blocks' ``small_disk``: a 24 MiB tmpfs, unmounted at the end."""
    return Path(request.getfixturevalue("small_disk"))


def disk_server(start_quantum: StartQuantum, disk: Path) -> RunningQuantum:
    """A server whose root is on ``disk``; its history cap is far above the disk's size, so
    nothing is purged for the cap while the disk is nearly full (and no copies of live files
    take the little room there is)."""
    config = file_sync_config(
        root=str(disk / "root"),
        enable_upload=True,
        watch=False,
        history={"cap": "1GiB", "copies_below": 0},
    )
    return start_quantum(config)


def test_an_upload_that_does_not_fit_leaves_history_intact(
    start_quantum: StartQuantum, disk: Path
) -> None:
    server = disk_server(start_quantum, disk)
    first, second = random_bytes(4 * MiB, 31), random_bytes(4 * MiB, 32)
    put(server, "doc.bin", first)
    put(server, "doc.bin", second)
    before = settled(server)
    listed = versions(server, "doc.bin")
    seq = head(server)
    filler = fill(disk, 2 * MiB)
    reply = http("PUT", f"{server.url}/api/files/doc.bin", random_bytes(6 * MiB, 33))
    assert code(reply) == (507, "insufficient_storage"), reply.body
    assert (server.root / "doc.bin").read_bytes() == second
    assert versions(server, "doc.bin") == listed
    assert {**usage(server), "cap_bytes": 0} == {**before, "cap_bytes": 0}
    assert head(server) == seq
    body = http("GET", f"{server.url}/api/versions/doc.bin?version={listed['versions'][0]['id']}")
    assert body.body == first
    assert largest_part(server.root / ".quantum") == 0
    filler.unlink()
    put(server, "doc.bin", b"fits again")
    assert [v["hash"] for v in versions(server, "doc.bin")["versions"]] == [sha(second), sha(first)]


def test_compaction_on_a_full_disk_keeps_the_pin_until_there_is_room(
    start_quantum: StartQuantum, disk: Path
) -> None:
    server = disk_server(start_quantum, disk)
    old, new = random_bytes(6 * MiB, 41), random_bytes(4 * MiB, 42)
    put(server, "doc.bin", old)
    settled(server)
    # Room for the upload, not for the blobs of the version it replaces.
    filler = fill(disk, len(new) + MiB + 512 * 1024)
    put(server, "doc.bin", new)
    version = versions(server, "doc.bin")["versions"][0]
    assert version["hash"] == sha(old) and version["complete"]
    wait_until(lambda: "history compaction failed" in server.logs(), 20, what="a failed compaction")
    assert usage(server)["pending"] == 1  # still pinned: nothing of it is lost
    body = http("GET", f"{server.url}/api/versions/doc.bin?version={version['id']}")
    assert body.status == 200 and body.body == old
    full = restore(server, "doc.bin", version["id"])
    assert full.status == 200 or code(full) == (507, "insufficient_storage"), full.body
    if full.status != 200:
        assert (server.root / "doc.bin").read_bytes() == new
    filler.unlink()
    state = settled(server)  # the compactor tries again and now finishes
    assert state["pending"] == 0
    assert not list((server.root / HISTORY / "tmp").iterdir())  # nothing half-written left
    again = restore(server, "doc.bin", version["id"])
    assert again.status == 200, again.body
    assert (server.root / "doc.bin").read_bytes() == old
    listed = versions(server, "doc.bin")["versions"]
    for entry in listed:
        body = http("GET", f"{server.url}/api/versions/doc.bin?version={entry['id']}")
        assert body.status == 200 and sha(body.body) == entry["hash"]
    server.stop()
    assert_history_consistent(server.root)
    restart(server)
    assert versions(server, "doc.bin")["versions"] == listed


# -- kill -9 ------------------------------------------------------------------------------------


def _post_in_background(url: str, body: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json.dumps(body),
            url,
        ]
    )


def test_kill_during_a_large_restore(server: RunningQuantum) -> None:
    piece = random_bytes(4 * MiB, 51)
    big = commit_repeated(server, "doc.bin", piece, 48)  # 192 MiB
    put(server, "doc.bin", b"the small new version")
    small = sha(b"the small new version")
    settled(server)
    version = versions(server, "doc.bin")["versions"][0]
    assert version["hash"] == big
    temp = server.root / ".quantum" / "tmp"
    with _post_in_background(
        f"{server.url}/api/restore", {"path": "doc.bin", "version": version["id"]}
    ) as curl:
        wait_until(lambda: largest_part(temp) > 16 * MiB, 30, what="the restore under way")
        server.kill()
        curl.wait(timeout=10)
    restart(server)
    live = file_hash(server.root / "doc.bin")
    assert live in (small, big)  # never torn
    state = settled(server)
    assert state["pending"] == 0
    assert not list((server.root / HISTORY / "pins").iterdir())
    assert largest_part(temp) == 0
    listed = versions(server, "doc.bin")["versions"]
    expected = [big] if live == small else [small, big]
    assert [v["hash"] for v in listed] == expected
    again = restore(server, "doc.bin", version["id"])
    assert again.status == 200, again.body
    assert file_hash(server.root / "doc.bin") == big
    server.stop()
    assert_history_consistent(server.root)


def test_kill_during_a_large_trash_restore(start_quantum: StartQuantum) -> None:
    files = {f"sync-data/tree/d{n % 20}/f{n}.txt": f"file {n}" for n in range(800)}
    server = start_quantum(file_sync_config(enable_upload=True), files=files)
    tree = server.root / "tree"
    wait_until(lambda: http("GET", f"{server.url}/api/files/tree/d0/f0.txt").status == 200)
    assert http("DELETE", f"{server.url}/api/files/tree").status == 204
    (item,) = trash(server)["items"]
    assert item["files"] == 800
    with _post_in_background(f"{server.url}/api/trash/restore", {"ids": [item["id"]]}) as curl:
        wait_until(
            lambda: tree.exists() and sum(1 for _ in tree.rglob("*.txt")) >= 50,
            30,
            what="the trash restore under way",
        )
        server.kill()
        curl.wait(timeout=10)
    live = {p.relative_to(server.root).as_posix() for p in tree.rglob("*.txt")}
    trashed_dir = server.root / HISTORY / "trash" / str(item["id"])
    trashed = {"tree/" + p.relative_to(trashed_dir).as_posix() for p in trashed_dir.rglob("*.txt")}
    assert not live & trashed and live | trashed == {p[len("sync-data/") :] for p in files}
    restart(server)
    server.stop()
    assert_history_consistent(server.root)
    restart(server)
    left = trash(server)["items"]
    if trashed:
        assert [(i["id"], i["files"]) for i in left] == [(item["id"], len(trashed))]
    reply = http("POST", f"{server.url}/api/trash/restore", json_body={"ids": [item["id"]]})
    if trashed:
        assert reply.json() == {"restored": [{"id": item["id"], "path": "tree"}], "conflicts": []}
    for name, content in files.items():
        assert (server.workdir / name).read_text() == content
    assert trash(server)["items"] == []
    assert not list((server.root / HISTORY / "trash").iterdir())


def test_kill_during_many_concurrent_changes_then_recovery(server: RunningQuantum) -> None:
    stop = threading.Event()
    done = Counter[str]()
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            path = f"d{rng.randrange(3)}/f{rng.randrange(6)}.bin"
            try:
                if rng.random() < 0.7:
                    body = rng.randbytes(rng.randrange(1, 600_000))
                    status = http("PUT", f"{server.url}/api/files/{path}", body).status
                elif rng.random() < 0.8:
                    status = http("DELETE", f"{server.url}/api/files/{path}").status
                else:
                    status = http("DELETE", f"{server.url}/api/files/{path.split('/')[0]}").status
            except OSError:
                return  # the server is gone
            with lock:
                done[str(status)] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: sum(done.values()) >= 150, 60, what="changes under way")
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not set(done) - {"200", "201", "204", "404", "409"}, done
    restart(server)
    settled(server)
    server.stop()
    assert_history_consistent(server.root)
    restart(server)
    rows, items = catalogue(server.root)
    assert rows and items
    for version_id, path, _, digest, complete, in_trash in rows:
        if in_trash is not None:
            continue
        body = http("GET", f"{server.url}/api/versions/{path}?version={version_id}")
        if complete:
            assert body.status == 200 and sha(body.body) == digest, (version_id, path)
        else:
            assert code(body) == (409, "version_incomplete")
    reply = http(
        "POST", f"{server.url}/api/trash/restore", json_body={"since": 0, "prefix": "nowhere"}
    )
    assert reply.json() == {"restored": [], "conflicts": []}
    # Every trashed file can be listed and its item restored somewhere new.
    for item in trash(server)["items"][:5]:
        moved = http(
            "POST",
            f"{server.url}/api/trash/restore",
            json_body={"ids": [item["id"]], "to": f"restored/{item['id']}"},
        ).json()
        assert moved["conflicts"] == [], moved
        assert (server.root / "restored" / str(item["id"])).exists()
