"""End to end: one real server, real client processes in temp folders."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.client.conftest import (
    SyncClient,
    converged,
    put_count,
    snapshot,
    synced_pair,
    wait_until,
)
from tests.file_sync.conftest import StartQuantum, file_sync_config


def settle_quietly(server: str, seconds: float = 0.6) -> int:
    """The PUT count once it stopped moving (no upload loops)."""
    count = put_count(server)
    time.sleep(seconds)
    again = put_count(server)
    assert again == count, "uploads keep happening: an echo loop"
    return again


def test_changes_flow_both_ways_with_one_upload_each(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    same = converged(a.folder, b.folder, server.root)
    puts = put_count(server.url)

    def step(what: str, uploads: int) -> None:
        nonlocal puts
        wait_until(same, what=what)
        puts += uploads
        assert settle_quietly(server.url, 0.3) == puts, what

    (a.folder / "hello.txt").write_bytes(b"hello from A\n")
    step("create in A", 1)
    (a.folder / "hello.txt").write_bytes(b"hello again from A, longer\n")
    step("modify in A", 1)
    (a.folder / "empty-dir").mkdir()
    (a.folder / "nested" / "deeper").mkdir(parents=True)
    (a.folder / "nested" / "deeper" / "n.bin").write_bytes(os.urandom(100_000))
    step("mkdir and nested file in A", 1)
    (a.folder / "hello.txt").rename(a.folder / "nested" / "hello-moved.txt")
    (a.folder / "nested").rename(a.folder / "renamed-dir")
    step("renames in A", 0)  # moves transfer nothing
    (a.folder / "renamed-dir" / "hello-moved.txt").unlink()
    (a.folder / "empty-dir").rmdir()
    step("deletes in A", 0)

    (b.folder / "from-b.txt").write_bytes(b"B was here\n")
    (b.folder / "b-dir" / "sub").mkdir(parents=True)
    step("create and mkdir in B", 1)
    (b.folder / "from-b.txt").write_bytes(b"B changed it\n")
    step("modify in B", 1)
    (b.folder / "from-b.txt").rename(b.folder / "b-dir" / "from-b-moved.txt")
    step("rename in B", 0)
    (b.folder / "renamed-dir" / "deeper" / "n.bin").unlink()
    (b.folder / "b-dir" / "sub").rmdir()
    step("deletes in B", 0)

    assert snapshot(a.folder) == {
        "b-dir": None,
        "b-dir/from-b-moved.txt": b"B changed it\n",
        "renamed-dir": None,
        "renamed-dir/deeper": None,
    }
    assert a.stop() == 0
    assert b.stop() == 0


def test_initial_sync_of_1000_files_each_way(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a")
    for n in range(1000):
        path = a.folder / f"d{n % 10}" / f"f{n}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"file {n}\n".encode() * (n % 7 + 1))
    upload = a.run_once()
    assert upload.returncode == 0, upload.stderr
    assert snapshot(server.root) == snapshot(a.folder)
    assert put_count(server.url) == 1000

    b = sync_clients(server.url, "b")
    download = b.run_once()
    assert download.returncode == 0, download.stderr
    assert snapshot(b.folder) == snapshot(a.folder)
    assert '"downloaded": 1000' in download.stderr

    # Nothing changed: a second pass transfers nothing.
    again = b.run_once()
    assert again.returncode == 0, again.stderr
    assert '"downloaded": 0' in again.stderr and '"uploaded": 0' in again.stderr
    assert put_count(server.url) == 1000


def test_two_populated_trees_become_their_union(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a")
    b = sync_clients(server.url, "b")
    for folder, own in ((a.folder, b"only in A"), (b.folder, b"only in B")):
        (folder / "shared").mkdir()
        (folder / "shared" / "same.txt").write_bytes(b"identical on both sides\n")
        (folder / "differs.txt").write_bytes(own)
        (folder / folder.name).mkdir()
        (folder / folder.name / "mine.txt").write_bytes(own)
        (folder / f"empty-{folder.name}").mkdir()
    assert a.run_once().returncode == 0
    result = b.run_once()
    assert result.returncode == 0, result.stderr
    assert a.run_once().returncode == 0

    union = snapshot(server.root)
    assert snapshot(a.folder) == union
    assert snapshot(b.folder) == union
    copies = [p for p in union if ".sync-conflict-" in p]
    assert len(copies) == 1, union
    assert copies[0].startswith("differs.sync-conflict-") and copies[0].endswith(".txt")
    # First contact: the server (A's) version keeps the name, B's is kept as the copy.
    assert union["differs.txt"] == b"only in A"
    assert union[copies[0]] == b"only in B"
    for path in ("shared/same.txt", "a/mine.txt", "b/mine.txt", "empty-a", "empty-b"):
        assert path in union
    assert put_count(server.url) == 5  # A: 3 files; B: its own file and the conflict copy


def test_exit_codes_have_one_line_reasons(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient], tmp_path: Path
) -> None:
    unreachable = sync_clients("http://127.0.0.1:9", "u").run_once()
    assert unreachable.returncode == 3
    assert "cannot reach http://127.0.0.1:9" in unreachable.stderr

    server = start_quantum(file_sync_config(enable_upload=True, auth={"tokens": ["s3cret"]}))
    denied = sync_clients(server.url, "denied", "--token", "wrong").run_once()
    assert denied.returncode == 4
    assert "refused the token" in denied.stderr.splitlines()[-1]
    allowed = sync_clients(server.url, "allowed", "--token", "s3cret")
    (allowed.folder / "x").write_text("x")
    assert allowed.run_once().returncode == 0
    assert (server.root / "x").read_text() == "x"

    (tmp_path / "a-file").write_text("not a directory")
    invalid = SyncClient(server.url, tmp_path / "a-file", tmp_path / "i.log").run_once()
    assert invalid.returncode == 5
    assert "is not a directory" in invalid.stderr
    missing = SyncClient(server.url, tmp_path / "no" / "such", tmp_path / "m.log").run_once()
    assert missing.returncode == 5
    elsewhere = sync_clients(server.url + "/not-sync", "elsewhere", "--token", "s3cret")
    wrong = elsewhere.run_once()
    assert wrong.returncode == 8
    assert "does not answer as a file_sync server" in wrong.stderr


def test_ignored_paths_stay_where_they_are(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a", "--ignore", "secret")
    (a.folder / ".quantumignore").write_text("# editor junk\n*.tmp\n")
    (a.folder / "keep.txt").write_text("synced")
    (a.folder / "draft.tmp").write_text("ignored by .quantumignore")
    (a.folder / "secret").mkdir()
    (a.folder / "secret" / "key").write_text("ignored by --ignore")
    assert a.run_once().returncode == 0
    assert snapshot(server.root) == {"keep.txt": b"synced"}

    b = sync_clients(server.url, "b")
    (b.folder / "remote.tmp").write_text("from elsewhere")
    assert b.run_once().returncode == 0
    assert a.run_once().returncode == 0
    assert not (a.folder / "remote.tmp").exists()  # ignored both ways
    assert (a.folder / "draft.tmp").exists() and (a.folder / "secret" / "key").exists()


def test_a_file_replaced_by_a_directory_and_back(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    same = converged(a.folder, b.folder, server.root)
    (a.folder / "thing").write_bytes(b"a file first\n")
    wait_until(same, what="the file")
    (a.folder / "thing").unlink()
    (a.folder / "thing").mkdir()
    (a.folder / "thing" / "inside.txt").write_bytes(b"now a directory\n")
    wait_until(same, what="file -> directory")
    assert snapshot(b.folder) == {"thing": None, "thing/inside.txt": b"now a directory\n"}
    (b.folder / "thing" / "inside.txt").unlink()
    (b.folder / "thing").rmdir()
    (b.folder / "thing").write_bytes(b"a file again\n")
    wait_until(same, what="directory -> file")
    assert snapshot(a.folder) == {"thing": b"a file again\n"}
