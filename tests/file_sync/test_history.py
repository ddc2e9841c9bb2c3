"""File history end to end: versions of every change, the trash, restores, purges, usage.

A real server process on 127.0.0.1; each test checks the files on disk, the journal and the
API's answers (docs/history.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from quantum_file_sync.chunks import Manifest, manifest_of_fd
from quantum_file_sync.history_store import HistoryStore

from tests.client.conftest import wait_until
from tests.file_sync.conftest import (
    RunningQuantum,
    file_sync_config,
    http,
    operations,
    watcher_caught_up,
)

StartQuantum = Callable[..., RunningQuantum]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(server: RunningQuantum, path: str, data: bytes, client: str | None = None) -> None:
    headers = {"X-Quantum-Client": client} if client else {}
    reply = http("PUT", f"{server.url}/api/files/{path}", data, headers)
    assert reply.status in (200, 201), reply.body


def versions(server: RunningQuantum, path: str, **query: Any) -> dict[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    reply = http("GET", f"{server.url}/api/versions/{path}" + (f"?{params}" if params else ""))
    assert reply.status == 200, reply.body
    return dict(reply.json())


def usage(server: RunningQuantum) -> dict[str, Any]:
    return dict(http("GET", f"{server.url}/api/history").json())


def settled(server: RunningQuantum) -> dict[str, Any]:
    """Usage once the compactor has reduced every pinned version."""
    wait_until(lambda: usage(server)["pending"] == 0, what="history compaction")
    return usage(server)


@pytest.fixture
def server(start_quantum: StartQuantum) -> RunningQuantum:
    return start_quantum(file_sync_config(enable_upload=True))


def test_each_update_keeps_the_old_version_newest_first(server: RunningQuantum) -> None:
    for n in range(3):
        put(server, "docs/a.txt", f"version {n}".encode(), client=f"c{n}")
    listed = versions(server, "docs/a.txt")
    assert listed["current"]["hash"] == sha(b"version 2")
    found = listed["versions"]
    assert [v["hash"] for v in found] == [sha(b"version 1"), sha(b"version 0")]
    assert [v["source_client"] for v in found] == ["c2", "c1"]  # who replaced it
    assert all(v["reason"] == "update" and v["origin"] == "api" and v["complete"] for v in found)
    assert listed["next"] is None
    body = http("GET", f"{server.url}/api/versions/docs/a.txt?version={found[1]['id']}")
    assert body.status == 200 and body.body == b"version 0"
    assert body.headers["ETag"] == f'"{sha(b"version 0")}"'


def test_restore_becomes_the_live_version_with_one_update(server: RunningQuantum) -> None:
    put(server, "a.txt", b"old")
    put(server, "a.txt", b"new")
    old = versions(server, "a.txt")["versions"][0]
    head = len(operations(server))
    reply = http(
        "POST", f"{server.url}/api/restore", json_body={"path": "a.txt", "version": old["id"]}
    )
    assert reply.status == 200, reply.body
    assert reply.json()["metadata"]["hash"] == sha(b"old")
    assert (server.root / "a.txt").read_bytes() == b"old"
    ops = operations(server)[head:]
    assert [next(iter(op)) for op in ops] == ["Update"]
    # The version the restore replaced is kept too.
    assert versions(server, "a.txt")["versions"][0]["hash"] == sha(b"new")


def test_restore_to_another_path_never_overwrites(server: RunningQuantum) -> None:
    put(server, "a.txt", b"one")
    put(server, "a.txt", b"two")
    put(server, "b.txt", b"taken")
    old = versions(server, "a.txt")["versions"][0]["id"]
    taken = http(
        "POST",
        f"{server.url}/api/restore",
        json_body={"path": "a.txt", "version": old, "to": "b.txt"},
    )
    assert taken.status == 409 and taken.json()["code"] == "exists"
    assert (server.root / "b.txt").read_bytes() == b"taken"
    fresh = http(
        "POST",
        f"{server.url}/api/restore",
        json_body={"path": "a.txt", "version": old, "to": "c.txt"},
    )
    assert fresh.status == 200
    assert (server.root / "c.txt").read_bytes() == b"one"
    assert (server.root / "a.txt").read_bytes() == b"two"


def test_delete_goes_to_the_trash_and_comes_back(server: RunningQuantum) -> None:
    put(server, "dir/x.txt", b"x")
    put(server, "dir/sub/y.txt", b"y")
    http("POST", f"{server.url}/api/mkdir", json_body={"path": "dir/empty"})
    put(server, "z.txt", b"z")
    assert (
        http("DELETE", f"{server.url}/api/files/dir", headers={"X-Quantum-Client": "me"}).status
        == 204
    )
    assert http("DELETE", f"{server.url}/api/files/z.txt").status == 204
    assert not (server.root / "dir").exists()
    items = http("GET", f"{server.url}/api/trash").json()["items"]
    assert [i["path"] for i in items] == ["z.txt", "dir"]
    directory = items[1]
    assert directory["is_directory"] and directory["files"] == 2 and directory["size"] == 2
    assert directory["source_client"] == "me" and items[0]["hash"] == sha(b"z")
    only = http("GET", f"{server.url}/api/trash?prefix=dir").json()["items"]
    assert [i["path"] for i in only] == ["dir"]

    reply = http("POST", f"{server.url}/api/trash/restore", json_body={"ids": [directory["id"]]})
    assert reply.status == 200, reply.body
    assert reply.json() == {"restored": [{"id": directory["id"], "path": "dir"}], "conflicts": []}
    assert (server.root / "dir/x.txt").read_bytes() == b"x"
    assert (server.root / "dir/sub/y.txt").read_bytes() == b"y"
    assert (server.root / "dir/empty").is_dir()
    assert [i["path"] for i in http("GET", f"{server.url}/api/trash").json()["items"]] == ["z.txt"]
    listed = http("GET", f"{server.url}/api/list").json()["files"]
    assert {"dir/x.txt", "dir/sub/y.txt", "dir/empty"} <= {f["path"] for f in listed}


def test_restore_from_trash_never_overwrites(server: RunningQuantum) -> None:
    put(server, "a.txt", b"deleted")
    http("DELETE", f"{server.url}/api/files/a.txt")
    put(server, "a.txt", b"new one")
    item = http("GET", f"{server.url}/api/trash").json()["items"][0]
    reply = http("POST", f"{server.url}/api/trash/restore", json_body={"ids": [item["id"]]}).json()
    assert reply["restored"] == [] and reply["conflicts"][0]["code"] == "exists"
    assert (server.root / "a.txt").read_bytes() == b"new one"
    moved = http(
        "POST", f"{server.url}/api/trash/restore", json_body={"ids": [item["id"]], "to": "b.txt"}
    ).json()
    assert moved["restored"] == [{"id": item["id"], "path": "b.txt"}]
    assert (server.root / "b.txt").read_bytes() == b"deleted"


def test_versions_follow_moves(server: RunningQuantum) -> None:
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    assert (
        http("POST", f"{server.url}/api/move", json_body={"from": "a.txt", "to": "b.txt"}).status
        == 200
    )
    found = versions(server, "b.txt")["versions"]
    assert [(v["path"], v["recorded_path"]) for v in found] == [("b.txt", "a.txt")]
    assert versions(server, "a.txt")["versions"] == []


def test_paging_and_forged_cursors(server: RunningQuantum) -> None:
    for n in range(7):
        put(server, "p.txt", str(n).encode())
    first = versions(server, "p.txt", limit=4)
    assert len(first["versions"]) == 4 and first["next"]
    second = versions(server, "p.txt", limit=4, cursor=first["next"])
    ids = [v["id"] for v in first["versions"] + second["versions"]]
    assert len(ids) == 6 and ids == sorted(ids, reverse=True) and second["next"] is None
    for forged in ("nonsense", first["next"][:-2] + "AA", "eyJxIjoxfQ.AAAA"):
        reply = http("GET", f"{server.url}/api/versions/p.txt?cursor={forged}")
        assert reply.status == 400 and reply.json()["code"] == "bad_cursor"
    other = http("GET", f"{server.url}/api/versions/q.txt?cursor={first['next']}")
    assert other.status == 400 and other.json()["code"] == "bad_cursor"
    assert http("GET", f"{server.url}/api/versions/p.txt?limit=101").status == 400


def test_purge_is_journaled_and_purged_versions_are_gone(server: RunningQuantum) -> None:
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    version = versions(server, "a.txt")["versions"][0]["id"]
    reply = http("DELETE", f"{server.url}/api/versions/a.txt?version={version}")
    assert reply.status == 200 and reply.json() == {"purged": 1}
    assert operations(server)[-1] == {"Purge": {"paths": ["a.txt"], "versions": 1, "trash": 0}}
    for method, url, body in (
        ("GET", f"/api/versions/a.txt?version={version}", None),
        ("POST", "/api/restore", {"path": "a.txt", "version": version}),
    ):
        gone = http(method, server.url + url, json_body=body)
        assert gone.status == 404 and gone.json()["code"] == "version_not_found"
    # What is left is the copy of the live file (b"2": files up to copies_below are copied).
    wait_until(lambda: settled(server)["stored_bytes"] == 1, what="the purged version's blobs gone")


def test_bad_input(server: RunningQuantum) -> None:
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    put(server, "d/f.txt", b"f")
    version = versions(server, "a.txt")["versions"][0]["id"]
    cases: list[tuple[str, str, Any, int, str]] = [
        ("GET", "/api/versions/../etc/passwd", None, 400, "bad_path"),
        ("GET", "/api/versions/.quantum/history/secret", None, 403, "reserved"),
        ("POST", "/api/restore", {"path": "../x", "version": version}, 400, "bad_path"),
        ("POST", "/api/restore", {"path": ".quantum/x", "version": version}, 403, "reserved"),
        ("POST", "/api/restore", {"path": "a.txt", "version": "1"}, 400, "bad_request"),
        ("POST", "/api/restore", {"path": "b.txt", "version": version}, 404, "version_not_found"),
        ("POST", "/api/restore", {"path": "a.txt", "version": version, "to": "d"}, 409, "exists"),
        ("GET", "/api/versions/a.txt?version=abc", None, 400, "bad_request"),
        ("GET", "/api/trash?since=yesterday", None, 400, "bad_request"),
        ("POST", "/api/trash/restore", {"ids": [999999]}, 404, "trash_not_found"),
        ("POST", "/api/trash/restore", {}, 400, "bad_request"),
        ("POST", "/api/trash/restore", {"ids": "1"}, 400, "bad_request"),
    ]
    for method, url, body, status, code in cases:
        reply = http(method, server.url + url, json_body=body)
        assert (reply.status, reply.json()["code"]) == (status, code), (url, body, reply.body)
    assert (server.root / "a.txt").read_bytes() == b"2"


def test_restore_onto_a_path_that_is_now_a_directory(server: RunningQuantum) -> None:
    put(server, "a", b"1")
    put(server, "a", b"2")
    version = versions(server, "a")["versions"][0]["id"]
    http("DELETE", f"{server.url}/api/files/a")
    http("POST", f"{server.url}/api/mkdir", json_body={"path": "a"})
    reply = http("POST", f"{server.url}/api/restore", json_body={"path": "a", "version": version})
    assert reply.status == 409 and reply.json()["code"] == "is_directory"
    assert (server.root / "a").is_dir()


def test_read_only_server_refuses_restores_and_purges(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=False))
    for method, url, body in (
        ("POST", "/api/restore", {"path": "a", "version": 1}),
        ("DELETE", "/api/versions/a?version=1", None),
        ("POST", "/api/trash/restore", {"ids": [1]}),
        ("DELETE", "/api/trash", None),
    ):
        reply = http(method, server.url + url, json_body=body)
        assert reply.status == 403 and reply.json()["code"] == "forbidden"
    assert http("GET", f"{server.url}/api/trash").status == 200


def test_history_disabled(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, history={"enabled": False}))
    put(server, "a.txt", b"1")
    put(server, "a.txt", b"2")
    http("DELETE", f"{server.url}/api/files/a.txt")
    reply = http("GET", f"{server.url}/api/versions/a.txt")
    assert reply.status == 404 and reply.json()["code"] == "history_disabled"
    assert not (server.root / ".quantum" / "history").exists()


def test_edits_on_disk_keep_what_is_left(server: RunningQuantum) -> None:
    """The watcher hears of a disk edit after the old bytes are gone: a version is recorded
    from the chunk store's manifest, complete when every chunk is still somewhere."""
    big = os.urandom(3 * 1024 * 1024)
    put(server, "same.bin", big)
    put(server, "copy.bin", big)  # the old content stays in another live file
    wait_until(
        lambda: http("GET", f"{server.url}/api/files/same.bin?manifest=true").status == 200,
        what="the manifest",
    )
    (server.root / "same.bin").write_bytes(big[:1000] + b"edited on disk" + big[1000:])
    watcher_caught_up(server)
    found = versions(server, "same.bin")["versions"]
    assert [v["origin"] for v in found] == ["disk"] and found[0]["hash"] == sha(big)
    wait_until(lambda: versions(server, "same.bin")["versions"][0]["complete"], what="settled")
    body = http("GET", f"{server.url}/api/versions/same.bin?version={found[0]['id']}")
    assert body.status == 200 and body.body == big


def test_usage_counts_only_the_changed_chunks(server: RunningQuantum, tmp_path: Path) -> None:
    data = bytearray(random.Random(5).randbytes(8 * 1024 * 1024))
    kept: list[bytes] = []
    put(server, "big.bin", bytes(data))
    for n in range(3):
        kept.append(bytes(data))
        data[4 * 1024 * 1024 + n] ^= 0xFF
        put(server, "big.bin", bytes(data))
    state = settled(server)
    assert state["versions"] == {"count": 3, "bytes": 3 * len(data)}
    # Stored: each distinct chunk of the three old versions that the live file does not hold.
    live = {c.hash for c in cut(tmp_path, bytes(data)).chunks}
    unique = {
        c.hash: c.size for old in kept for c in cut(tmp_path, old).chunks if c.hash not in live
    }
    assert state["stored_bytes"] == sum(unique.values()) < len(data)
    first = versions(server, "big.bin")["versions"][-1]["id"]
    reply = http("GET", f"{server.url}/api/versions/big.bin?version={first}")
    assert sha(reply.body) == sha(kept[0])


def cut(folder: Path, data: bytes) -> Manifest:
    path = folder / "cut.bin"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return manifest_of_fd(fd)[1]
    finally:
        os.close(fd)


def test_usage_shape(server: RunningQuantum) -> None:
    state = usage(server)
    assert set(state) == {"versions", "trash", "stored_bytes", "cap_bytes", "pending"}
    assert state["cap_bytes"] > 0
    json.dumps(state)


def test_small_files_edited_or_deleted_on_disk_can_be_restored(server: RunningQuantum) -> None:
    """Files up to ``copies_below`` (1 MiB) are copied into history once cut, so even an edit
    in place or an ``rm`` behind Quantum's back leaves a complete version."""
    put(server, "notes.txt", b"the original notes")
    put(server, "gone.txt", b"deleted on disk")
    # Both copied: their chunks are blobs now (shown in stored_bytes).
    wait_until(
        lambda: usage(server)["stored_bytes"] >= len(b"the original notes" + b"deleted on disk"),
        what="the copies",
    )
    with open(server.root / "notes.txt", "r+b") as handle:  # in place: the old bytes are gone
        handle.write(b"THE")
    (server.root / "gone.txt").unlink()
    watcher_caught_up(server)
    version = versions(server, "notes.txt")["versions"][0]
    assert version["origin"] == "disk" and version["hash"] == sha(b"the original notes")
    wait_until(lambda: versions(server, "notes.txt")["versions"][0]["complete"], what="settled")
    reply = http(
        "POST",
        f"{server.url}/api/restore",
        json_body={"path": "notes.txt", "version": version["id"]},
    )
    assert reply.status == 200, reply.body
    assert (server.root / "notes.txt").read_bytes() == b"the original notes"
    item = next(
        i for i in http("GET", f"{server.url}/api/trash").json()["items"] if i["path"] == "gone.txt"
    )
    assert item["origin"] == "disk" and item["complete"]
    restored = http("POST", f"{server.url}/api/trash/restore", json_body={"ids": [item["id"]]})
    assert restored.json()["restored"] == [{"id": item["id"], "path": "gone.txt"}]
    assert (server.root / "gone.txt").read_bytes() == b"deleted on disk"


def test_copies_below_zero_turns_copies_off(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True, history={"copies_below": 0}))
    put(server, "notes.txt", b"the original notes")
    wait_until(
        lambda: http("GET", f"{server.url}/api/files/notes.txt?manifest=true").status == 200,
        what="the manifest",
    )
    with open(server.root / "notes.txt", "r+b") as handle:
        handle.write(b"THE")
    watcher_caught_up(server)
    version = versions(server, "notes.txt")["versions"][0]
    wait_until(lambda: usage(server)["pending"] == 0, what="settled")
    assert not versions(server, "notes.txt")["versions"][0]["complete"]
    reply = http(
        "POST",
        f"{server.url}/api/restore",
        json_body={"path": "notes.txt", "version": version["id"]},
    )
    assert reply.status == 409 and reply.json()["code"] == "version_incomplete"
    assert (server.root / "notes.txt").read_bytes() == b"THE original notes"


def test_replaced_times_never_round_up_a_second(tmp_path: Path) -> None:
    """The version list's times come from SQLite: a time just before a whole second keeps its
    second (SQLite rounds to milliseconds before formatting)."""
    store = HistoryStore(tmp_path)
    store.open()
    try:
        for replaced in (1764777711.9996, 1764777711.0000004, 1764777711.5):
            with store._write() as db:
                db.execute("DELETE FROM versions")
                db.execute(
                    "INSERT INTO versions (path, recorded_path, size, mtime_ns, replaced, reason,"
                    " origin) VALUES ('a', 'a', 0, 0, ?, 'update', 'api')",
                    (replaced,),
                )
            ((text, _),) = store.versions_json("a", None, 10)
            shown = datetime.fromisoformat(json.loads(text)["replaced"]).timestamp()
            assert abs(shown - replaced) < 0.000002, (replaced, text)
    finally:
        store.close()


def test_a_pin_is_not_compacted_before_its_replacement_is_renamed_in(tmp_path: Path) -> None:
    """A replaced file is catalogued and linked before its successor is renamed in. A
    compaction in that window sees every chunk of it in the live file (it still *is* the live
    file): it must keep the pin, or the version loses every chunk the successor changes."""
    store = HistoryStore(tmp_path)
    store.open()
    try:
        live = tmp_path / "doc.bin"
        data = random.Random(3).randbytes(2 * 1024 * 1024)
        live.write_bytes(data)
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            version_id = store.pin_replaced(
                fd, "doc.bin", "doc.bin", os.stat(live), None, None, None, "api"
            )
        finally:
            os.close(fd)
        version = store.ensure_manifest(store.pending()[0])

        def everything_live(hashes: list[str]) -> set[str]:
            return set(hashes)  # what the chunk store says: the file at doc.bin holds them

        def no_upload(digest: str) -> Path:
            raise FileNotFoundError(digest)

        assert not store.compact(version, everything_live, no_upload)
        assert [v.id for v in store.pending()] == [version_id]
        live.unlink()
        live.write_bytes(b"the successor")  # now it is replaced: compaction keeps the chunks
        assert store.compact(version, lambda hashes: set(), no_upload)
        assert store.pending() == []
        assert version.manifest is not None
        assert all(store.blob_path(c.hash).exists() for c in version.manifest.chunks)
    finally:
        store.close()
