from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
from quantum_file_sync.client.state import (
    BaseEntry,
    Cursor,
    FolderInUse,
    StateDB,
    StateDir,
)


def entry(path: str, digest: str | None = "a" * 64, *, is_dir: bool = False) -> BaseEntry:
    return BaseEntry(path, is_dir, None if is_dir else digest, 0 if is_dir else 5, 123, 42, 7)


def test_entries_meta_and_cursor_survive_reopening(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    db.put(entry("a.txt"))
    db.put(entry("d", is_dir=True))
    db.put(entry("d/b.txt"))
    db.set_meta("client_id", "c1")
    db.cursor = Cursor("epoch-1", 41)
    assert db.file_count == 2
    db.close()

    again = StateDB(tmp_path / "s.sqlite3")
    assert again.get("a.txt") == entry("a.txt")
    assert again.get("d") == entry("d", is_dir=True)
    assert again.get_meta("client_id") == "c1"
    assert again.cursor == Cursor("epoch-1", 41)
    assert again.file_count == 2
    assert [e.path for e in again.descendants("d")] == ["d/b.txt"]
    again.close()


def test_uncommitted_writes_are_lost_by_a_crash(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    db.put(entry("kept"))
    db.commit()
    db.put(entry("lost"))
    # A second connection sees only what was committed (as a restarted client would).
    reader = sqlite3.connect(tmp_path / "s.sqlite3")
    assert [r[0] for r in reader.execute("SELECT path FROM entries")] == ["kept"]
    reader.close()
    db.close()


def test_file_count_follows_type_changes_and_removals(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    db.put(entry("x"))
    db.put(entry("x", is_dir=True))
    assert db.file_count == 0
    db.put(entry("x"))
    db.put(entry("y"))
    db.remove("x")
    db.remove("missing")
    assert db.file_count == 1
    db.clear()
    assert db.file_count == 0
    assert len(db) == 0
    db.close()


def test_needs_sync_entries_are_written_only_once_synced(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    db = StateDB(path)
    first = entry("f", "1" * 64)
    db.put(first, needs_sync=True)
    assert db.get("f") == first  # visible at once in memory
    db.commit()
    assert StateDB(path).get("f") is None  # but not durable yet
    newer = dataclasses.replace(first, hash="2" * 64)
    pending = db.take_unsynced()
    db.put(newer)  # superseded before the flush finished: the stale row must not win
    db.write_synced(pending)
    db.close()
    assert StateDB(path).get("f") == newer


def test_state_dir_lock_and_tmp_cleanup(tmp_path: Path) -> None:
    first = StateDir(tmp_path)
    first.claim()
    (first.tmp / "download-x").write_bytes(b"partial")
    second = StateDir(tmp_path)
    with pytest.raises(FolderInUse, match="pid"):
        second.claim()
    assert first.clean_tmp() == 1
    assert list(first.tmp.iterdir()) == []
    first.release()
    second.claim()
    second.release()
