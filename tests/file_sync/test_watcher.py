"""Changes made directly on disk are journaled exactly once; the API's own changes are not
journaled a second time by the watcher."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.file_sync.conftest import (
    RunningQuantum,
    StartQuantum,
    changes,
    file_sync_config,
    http,
    operations,
    watcher_caught_up,
)
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True))


def head(server: RunningQuantum) -> int:
    seq: int = changes(server)["seq"]
    return seq


def wait_for_ops(server: RunningQuantum, since: int, count: int) -> list:
    """Wait until ``count`` operations exist after ``since`` and the watcher has handled every
    change made so far (so a late duplicate would be there too); return them all."""
    wait_until(
        lambda: len(operations(server, since)) >= count, what=f"{count} journaled operations"
    )
    return watcher_caught_up(server, since)


def kinds(ops: list[dict[str, Any]]) -> list[str]:
    return [next(iter(op)) for op in ops]


def test_create_modify_rename_delete_each_journal_once(server: RunningQuantum) -> None:
    seq = head(server)
    (server.root / "w1").mkdir()
    assert kinds(wait_for_ops(server, seq, 1)) == ["Create"]  # the directory itself

    seq = head(server)
    target = server.root / "w1" / "note.txt"
    target.write_text("first")
    [create] = wait_for_ops(server, seq, 1)
    assert create == {
        "Create": {
            "metadata": {
                "path": "w1/note.txt",
                "size": 5,
                "hash": hashlib.sha256(b"first").hexdigest(),
                "modified": create["Create"]["metadata"]["modified"],
                "is_directory": False,
            }
        }
    }

    seq = head(server)
    target.write_text("second, longer")
    [update] = wait_for_ops(server, seq, 1)
    assert update["Update"]["metadata"]["hash"] == hashlib.sha256(b"second, longer").hexdigest()

    seq = head(server)
    target.rename(server.root / "w1" / "renamed.txt")
    [move] = wait_for_ops(server, seq, 1)
    assert move["Move"]["from"] == "w1/note.txt"
    assert move["Move"]["metadata"]["path"] == "w1/renamed.txt"
    assert move["Move"]["metadata"]["hash"] == hashlib.sha256(b"second, longer").hexdigest()

    seq = head(server)
    (server.root / "w1" / "renamed.txt").unlink()
    assert wait_for_ops(server, seq, 1) == [
        {"Delete": {"path": "w1/renamed.txt", "is_directory": False}}
    ]


def test_delete_then_create_of_another_file_is_not_a_move(server: RunningQuantum) -> None:
    seq = head(server)
    (server.root / "old.txt").write_text("old content")
    wait_for_ops(server, seq, 1)
    seq = head(server)
    (server.root / "old.txt").unlink()  # its inode number is likely reused right away:
    (server.root / "new.txt").write_text("different")
    ops = wait_for_ops(server, seq, 2)
    assert sorted(kinds(ops)) == ["Create", "Delete"]


def test_same_size_rewrite_in_one_tick_is_still_an_update(server: RunningQuantum) -> None:
    path = server.root / "tick.txt"
    seq = head(server)
    path.write_text("aaaa")
    wait_for_ops(server, seq, 1)
    seq = head(server)
    with path.open("r+") as handle:  # same inode, same size, likely the same mtime tick
        handle.write("bbbb")
    [update] = wait_for_ops(server, seq, 1)
    assert update["Update"]["metadata"]["hash"] == hashlib.sha256(b"bbbb").hexdigest()


def test_touch_without_content_change_journals_nothing(server: RunningQuantum) -> None:
    path = server.root / "touched.txt"
    seq = head(server)
    path.write_text("same")
    wait_for_ops(server, seq, 1)
    seq = head(server)
    os.utime(path, None)
    path.write_text("same")
    assert watcher_caught_up(server, seq) == []


def test_api_upload_is_journaled_once_even_after_the_watcher_saw_it(
    server: RunningQuantum,
) -> None:
    seq = head(server)
    assert http("PUT", server.url + "/api/files/via-api.txt", b"api").status == 201
    assert http("PUT", server.url + "/api/files/via-api.txt", b"api 2").status == 200
    assert http("POST", server.url + "/api/mkdir", json_body={"path": "api-dir/x"}).status == 201
    request = {"from": "via-api.txt", "to": "api-dir/v.txt"}
    moved = http("POST", server.url + "/api/move", json_body=request)
    assert moved.status == 200
    assert http("DELETE", server.url + "/api/files/api-dir").status == 204
    assert kinds(watcher_caught_up(server, seq)) == [
        "Create",  # via-api.txt
        "Update",
        "Create",  # api-dir
        "Create",  # api-dir/x
        "Move",
        "Delete",
    ]


def test_directory_moved_in_from_outside_announces_its_contents(
    server: RunningQuantum,
) -> None:
    outside = server.workdir / "staging"
    (outside / "inner").mkdir(parents=True)
    (outside / "top.txt").write_text("top")
    (outside / "inner" / "deep.txt").write_text("deep")
    seq = head(server)
    os.rename(outside, server.root / "arrived")
    ops = wait_for_ops(server, seq, 4)
    assert kinds(ops) == ["Create"] * 4
    paths = [op["Create"]["metadata"]["path"] for op in ops]
    assert paths[0] == "arrived"
    assert sorted(paths) == [
        "arrived",
        "arrived/inner",
        "arrived/inner/deep.txt",
        "arrived/top.txt",
    ]


def test_directory_rename_is_one_move_and_delete_is_one_delete(server: RunningQuantum) -> None:
    seq = head(server)
    (server.root / "d1" / "sub").mkdir(parents=True)
    (server.root / "d1" / "a.txt").write_text("a")
    (server.root / "d1" / "sub" / "b.txt").write_text("b")
    assert len(wait_for_ops(server, seq, 4)) == 4

    seq = head(server)
    (server.root / "d1").rename(server.root / "d2")
    [move] = wait_for_ops(server, seq, 1)
    assert move["Move"]["from"] == "d1"
    assert move["Move"]["metadata"]["path"] == "d2"
    assert move["Move"]["metadata"]["is_directory"] is True
    listed = http("GET", server.url + "/api/list?path=d2").json()["files"]
    assert [f["path"] for f in listed] == ["d2/a.txt", "d2/sub", "d2/sub/b.txt"]

    seq = head(server)
    shutil.rmtree(server.root / "d2")
    assert wait_for_ops(server, seq, 1) == [{"Delete": {"path": "d2", "is_directory": True}}]


def test_reserved_names_are_never_journaled(server: RunningQuantum) -> None:
    seq = head(server)
    (server.root / ".quantum-sync").mkdir(exist_ok=True)
    (server.root / ".quantum-sync" / "state.db").write_text("client state")
    (server.root / ".QuantumX").write_text("reserved, whatever the case")
    (server.root / ".quantum" / "extra.txt").write_text("server area")
    assert watcher_caught_up(server, seq) == []


def test_a_disk_write_is_journaled_quickly(server: RunningQuantum) -> None:
    seq = head(server)
    started = time.monotonic()
    (server.root / "fast.txt").write_text("now")
    while not operations(server, seq):
        assert time.monotonic() - started < 2.0, "disk change not journaled within 2 s"
        time.sleep(0.01)
    # ~50 ms debounce + hashing + journal; generous bound for a loaded 2-core machine.
    assert time.monotonic() - started < 1.0


def test_changes_made_while_stopped_are_journaled_at_the_next_start(
    start_quantum: StartQuantum,
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    assert http("PUT", server.url + "/api/files/kept.txt", b"kept").status == 201
    assert http("PUT", server.url + "/api/files/edited.txt", b"old").status == 201
    assert http("PUT", server.url + "/api/files/removed.txt", b"bye").status == 201
    assert http("PUT", server.url + "/api/files/renamed.txt", b"rename me").status == 201
    seq = head(server)
    assert server.stop() == 0  # graceful: the index snapshot is written

    (server.root / "edited.txt").write_text("new content")
    (server.root / "removed.txt").unlink()
    (server.root / "renamed.txt").rename(server.root / "now-here.txt")
    (server.root / "added.txt").write_text("added while stopped")
    server.restart()

    ops = wait_for_ops(server, seq, 4)
    summary = sorted(
        (kind, body.get("path") or body["metadata"]["path"])
        for op in ops
        for kind, body in op.items()
    )
    assert summary == [
        ("Create", "added.txt"),
        ("Delete", "removed.txt"),
        ("Move", "now-here.txt"),
        ("Update", "edited.txt"),
    ]


def test_a_crash_before_the_first_snapshot_still_journals_what_changed_meanwhile(
    start_quantum: StartQuantum,
) -> None:
    """Convergence seed 9: a first run killed before any periodic snapshot left none, so the
    next start took the disk as it found it and journaled nothing of what had changed."""
    server = start_quantum(file_sync_config(enable_upload=True))
    assert http("PUT", server.url + "/api/files/journaled.txt", b"journaled").status == 201
    seq = head(server)
    server.kill()  # no graceful stop, long before SNAPSHOT_EVERY

    (server.root / "written-meanwhile.txt").write_text("the watcher never saw this")
    server.restart()

    wait_until(
        lambda: any(
            body["metadata"]["path"] == "written-meanwhile.txt"
            for op in operations(server, seq)
            for kind, body in op.items()
            if kind == "Create"
        ),
        what="the file written while the server was down, journaled",
    )


def test_a_file_journaled_after_the_snapshot_and_deleted_during_a_crash_is_journaled_deleted(
    start_quantum: StartQuantum,
) -> None:
    """Convergence seed 13: the disk and the (older) snapshot agreed that the file did not
    exist, so the rescan found nothing, though the journal announced it: clients kept it."""
    server = start_quantum(file_sync_config(enable_upload=True))
    assert http("PUT", server.url + "/api/files/doomed.txt", b"after the snapshot").status == 201
    seq = head(server)
    server.kill()

    (server.root / "doomed.txt").unlink()
    server.restart()

    ops = wait_for_ops(server, seq, 1)
    assert ops == [{"Delete": {"path": "doomed.txt", "is_directory": False}}]


def test_a_directory_renamed_away_and_made_again_at_once_journals_its_old_files_deleted(
    server: RunningQuantum, tmp_path: Path
) -> None:
    """Convergence seed 57: the directory existed again when its event was handled, and the
    watcher names only the directory, so the files that had left with it stayed announced."""
    seq = head(server)
    (server.root / "again").mkdir()
    (server.root / "again" / "old.txt").write_text("left with the directory")
    wait_for_ops(server, seq, 2)
    seq = head(server)

    (server.root / "again").rename(tmp_path / "moved-out")
    (server.root / "again").mkdir()

    gone = [
        {"Delete": {"path": "again/old.txt", "is_directory": False}},
        {"Delete": {"path": "again", "is_directory": True}},
    ]
    wait_until(
        lambda: any(op in gone for op in operations(server, seq)),
        what="the old file journaled deleted",
    )
    listed = [f["path"] for f in http("GET", server.url + "/api/list").json()["files"]]
    assert "again/old.txt" not in listed
