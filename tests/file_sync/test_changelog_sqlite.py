"""SqliteChangeLog: epochs, seq assignment, durability, retention, replay bounds, listeners."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from quantum_file_sync import changelog_sqlite
from quantum_file_sync.changelog_sqlite import SqliteChangeLog
from quantum_file_sync.operations import ChangeEvent

from tests.file_sync.websocket_harness import create, delete, move, update


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteChangeLog]:
    changelog = SqliteChangeLog(tmp_path / "j" / "journal.sqlite3", max_events=1000)
    await changelog.open()
    yield changelog
    await changelog.close()


async def test_commit_assigns_seq_op_id_and_calls_listeners_in_order(
    journal: SqliteChangeLog,
) -> None:
    assert len(journal.epoch) == 32
    uuid.UUID(hex=journal.epoch)
    assert await journal.head() == 0
    heard: list[tuple[int, int]] = []
    unsubscribe = journal.listen(lambda e: heard.append((e.seq, 1)))
    journal.listen(lambda e: heard.append((e.seq, 2)))
    first = await journal.commit(create("a.txt"), "c1")
    assert (first.seq, first.source_client, first.epoch) == (1, "c1", journal.epoch)
    assert heard == [(1, 1), (1, 2)]  # before commit returned, in registration order
    second = await journal.commit(move("a.txt", "b.txt"), None)
    assert second.seq == 2 and second.op_id != first.op_id
    assert await journal.head() == 2
    unsubscribe()
    await journal.commit(delete("b.txt"), None)
    assert heard[-1] == (3, 2)
    assert ChangeEvent.from_message(json.loads(second.frame)) == second


async def test_concurrent_commits_are_grouped_and_ordered(journal: SqliteChangeLog) -> None:
    heard: list[int] = []
    journal.listen(lambda e: heard.append(e.seq))
    events = await asyncio.gather(
        *(journal.commit(update(f"f{i % 7}"), f"c{i}") for i in range(500))
    )
    # Each caller gets its own event; seq follows the order the commits were made in.
    assert [e.seq for e in events] == list(range(1, 501))
    assert [e.source_client for e in events] == [f"c{i}" for i in range(500)]
    assert heard == list(range(1, 501))
    replayed = await journal.replay(journal.epoch, 0)
    assert replayed is not None
    assert [e.op_id for e in replayed] == [e.op_id for e in events]
    assert [e.frame for e in replayed] == [e.frame for e in events]


async def test_a_failing_listener_does_not_break_commit(journal: SqliteChangeLog) -> None:
    heard: list[int] = []

    def broken(event: ChangeEvent) -> None:
        raise RuntimeError("listener bug")

    journal.listen(broken)
    journal.listen(lambda e: heard.append(e.seq))
    assert (await journal.commit(create("x"), None)).seq == 1
    assert heard == [1]


async def test_replay_bounds(journal: SqliteChangeLog) -> None:
    for i in range(5):
        await journal.commit(create(f"f{i}"), None)
    assert await journal.replay("another-epoch", 2) is None
    assert await journal.replay(journal.epoch, 6) is None
    assert await journal.replay(journal.epoch, -1) is None
    assert await journal.replay(journal.epoch, 5) == []
    replayed = await journal.replay(journal.epoch, 2)
    assert replayed is not None
    assert [e.seq for e in replayed] == [3, 4, 5]
    assert replayed[0].operation == create("f2")


async def test_epoch_survives_restart_and_journal_loss_starts_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    first = SqliteChangeLog(path)
    await first.open()
    for i in range(3):
        await first.commit(create(f"f{i}"), None)
    epoch = first.epoch
    await first.close()

    again = SqliteChangeLog(path)
    await again.open()
    assert (again.epoch, await again.head()) == (epoch, 3)
    assert (await again.commit(create("next"), None)).seq == 4
    replayed = await again.replay(epoch, 1)
    assert replayed is not None and [e.seq for e in replayed] == [2, 3, 4]
    await again.close()

    path.unlink()
    fresh = SqliteChangeLog(path)
    await fresh.open()
    assert fresh.epoch != epoch
    assert await fresh.head() == 0
    assert await fresh.replay(epoch, 1) is None
    await fresh.close()


async def test_corrupt_journal_is_moved_aside_and_starts_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database, just garbage " * 200)
    changelog = SqliteChangeLog(path)
    await changelog.open()
    try:
        assert await changelog.head() == 0
        assert (await changelog.commit(create("a"), None)).seq == 1
        aside = list(tmp_path.glob("journal.sqlite3.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b"this is not a database")
    finally:
        await changelog.close()


async def test_retention_by_count(tmp_path: Path) -> None:
    changelog = SqliteChangeLog(tmp_path / "j.sqlite3", max_events=10)
    await changelog.open()
    try:
        for i in range(25):
            await changelog.commit(create(f"f{i}"), None)
        assert await changelog.replay(changelog.epoch, 14) is None
        kept = await changelog.replay(changelog.epoch, 15)
        assert kept is not None and [e.seq for e in kept] == list(range(16, 26))
        with sqlite3.connect(changelog.path) as db:
            assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 10
        db.close()
    finally:
        await changelog.close()


async def test_retention_by_age_keeps_the_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The journal's clock, moved by hand: how long the commits take on a busy machine
    # does not matter (with a real clock, a slow first commit could already be too old).
    now = [1_000_000.0]
    monkeypatch.setattr(changelog_sqlite, "time", SimpleNamespace(time=lambda: now[0]))
    path = tmp_path / "j.sqlite3"
    changelog = SqliteChangeLog(path, max_age=0.2)
    await changelog.open()
    for i in range(5):
        await changelog.commit(create(f"f{i}"), None)
    assert await changelog.replay(changelog.epoch, 0) is not None
    now[0] += 0.3
    await changelog.commit(create("young"), None)  # trims the five old ones on the way
    assert await changelog.replay(changelog.epoch, 4) is None
    young = await changelog.replay(changelog.epoch, 5)
    assert young is not None and [e.seq for e in young] == [6]
    await changelog.close()

    now[0] += 0.3
    reopened = SqliteChangeLog(path, max_age=0.2)
    await reopened.open()  # trims on open; the head (and so the next seq) is remembered
    try:
        assert await reopened.head() == 6
        assert await reopened.replay(reopened.epoch, 6) == []
        assert await reopened.replay(reopened.epoch, 5) is None
        assert (await reopened.commit(create("later"), None)).seq == 7
    finally:
        await reopened.close()


async def test_failed_write_consumes_no_seq(
    journal: SqliteChangeLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.commit(create("a"), None)
    real_write = journal._write

    def failing_write(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(journal, "_write", failing_write)
    with pytest.raises(sqlite3.OperationalError):
        await journal.commit(create("b"), None)
    monkeypatch.setattr(journal, "_write", real_write)
    assert await journal.head() == 1
    assert (await journal.commit(create("c"), None)).seq == 2


async def test_journal_uses_wal(journal: SqliteChangeLog) -> None:
    await journal.commit(create("a"), None)
    with sqlite3.connect(journal.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_commit_after_close_is_refused(tmp_path: Path) -> None:
    changelog = SqliteChangeLog(tmp_path / "j.sqlite3")
    await changelog.open()
    await changelog.close()
    with pytest.raises(RuntimeError):
        await changelog.commit(create("a"), None)


def test_committed_changes_survive_a_killed_process(tmp_path: Path) -> None:
    """Every commit that returned is on disk, even if the process is SIGKILLed right after."""
    path = tmp_path / "journal.sqlite3"
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from quantum_file_sync.changelog_sqlite import SqliteChangeLog
        from quantum_file_sync.operations import Create, FileMetadata

        async def main():
            journal = SqliteChangeLog(Path({str(path)!r}))
            await journal.open()
            print(journal.epoch, flush=True)
            async def one(i):
                meta = FileMetadata(f"f{{i}}", 1, None, "2024-01-01T00:00:00Z", False)
                event = await journal.commit(Create(meta), None)
                print(event.seq, flush=True)
            i = 0
            while True:
                await asyncio.gather(*(one(i + k) for k in range(10)))
                i += 10

        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        epoch = child.stdout.readline().strip()
        acknowledged = 0
        while acknowledged < 300:
            acknowledged = max(acknowledged, int(child.stdout.readline()))
        child.kill()
        child.wait()
    with sqlite3.connect(path) as db:
        (newest,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
        (stored_epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        seqs = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    db.close()
    assert stored_epoch == epoch
    assert newest >= acknowledged
    assert seqs == list(range(1, newest + 1))
