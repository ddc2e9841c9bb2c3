"""WebSocket catch-up: Subscribe with ``since`` replays exactly what was missed, then live."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from quantum_file_sync.changelog_sqlite import SqliteChangeLog
from quantum_file_sync.operations import ChangeEvent
from quantum_file_sync.ws import WsSettings

from tests.file_sync.websocket_harness import (
    create,
    operations,
    receive_json,
    serve_ws,
    subscribe,
)


async def test_websocket_resume_replays_exactly_the_missed_changes_then_live(
    tmp_path: Path,
) -> None:
    async with serve_ws(tmp_path) as server:
        for i in range(5):
            await server.changelog.commit(create(f"before-{i}"), None)
        async with server.connect() as ws:
            ack = await subscribe(ws, "laptop")
            assert (ack["seq"], ack["recovered"]) == (5, False)
            await server.changelog.commit(create("seen"), None)
            (seen,) = await operations(ws, 1)
        last = {"epoch": seen["epoch"], "seq": seen["seq"]}
        for i in range(50):
            await server.changelog.commit(create(f"missed-{i}"), "desktop")
        async with server.connect() as ws:
            ack = await subscribe(ws, "laptop", since=last)
            assert (ack["seq"], ack["recovered"]) == (56, True)
            missed = await operations(ws, 50)
            assert [m["seq"] for m in missed] == list(range(7, 57))
            paths = [m["operation"]["Create"]["metadata"]["path"] for m in missed]
            assert paths == [f"missed-{i}" for i in range(50)]
            await server.changelog.commit(create("live"), None)
            (live,) = await operations(ws, 1)
            assert live["seq"] == 57


class SlowReplayChangeLog(SqliteChangeLog):
    """A journal whose replay answers late, as a remote one (Redis) may: changes committed
    meanwhile must reach the resuming client too, once."""

    async def replay(self, epoch: str, since: int) -> Sequence[ChangeEvent] | None:
        events = await super().replay(epoch, since)
        await asyncio.sleep(0.03)
        return events


@pytest.mark.parametrize("journal", [SqliteChangeLog, SlowReplayChangeLog])
async def test_websocket_resume_has_no_gap_or_duplicate_under_concurrent_commits(
    tmp_path: Path, journal: type[SqliteChangeLog]
) -> None:
    async with serve_ws(tmp_path, changelog_type=journal) as server:
        for i in range(100):
            await server.changelog.commit(create(f"old-{i}"), None)
        epoch = server.changelog.epoch
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                await asyncio.gather(
                    *(server.changelog.commit(create(f"new-{i}-{k}"), None) for k in range(5))
                )
                i += 1
                await asyncio.sleep(0.002)

        writing = asyncio.create_task(writer())
        try:
            await asyncio.sleep(0.05)
            connections = [server.connect() for _ in range(5)]
            clients = [await c.__aenter__() for c in connections]
            starts = [10, 30, 50, 70, 90]
            for start, ws in zip(starts, clients, strict=True):
                ack = await subscribe(ws, f"c{start}", since={"epoch": epoch, "seq": start})
                assert ack["recovered"] is True
            await asyncio.sleep(0.2)
        finally:
            stop.set()
            await writing
        head = await server.changelog.head()
        try:
            for start, ws in zip(starts, clients, strict=True):
                received = [m["seq"] for m in await operations(ws, head - start)]
                assert received == list(range(start + 1, head + 1))
        finally:
            for ws in clients:
                await ws.close()


async def test_websocket_resume_larger_than_the_send_buffer_is_not_dropped(tmp_path: Path) -> None:
    async with serve_ws(tmp_path, settings=WsSettings(send_buffer=8)) as server:
        await asyncio.gather(*(server.changelog.commit(create(f"f{i}"), None) for i in range(400)))
        async with server.connect() as ws:
            since = {"epoch": server.changelog.epoch, "seq": 0}
            ack = await subscribe(ws, "c", since=since)
            assert ack["recovered"] is True
            assert [m["seq"] for m in await operations(ws, 400)] == list(range(1, 401))


async def test_websocket_resume_from_another_epoch_or_beyond_retention_is_not_recovered(
    tmp_path: Path,
) -> None:
    async with serve_ws(tmp_path, max_events=10) as server:
        for i in range(30):
            await server.changelog.commit(create(f"f{i}"), None)
        epoch = server.changelog.epoch
        cases = [
            ("some-other-epoch", 25, False),
            (epoch, 5, False),  # trimmed: retention keeps 21..30
            (epoch, 19, False),
            (epoch, 99, False),  # from the future
            (epoch, 20, True),
            (epoch, 30, True),
        ]
        for since_epoch, since_seq, recovered in cases:
            async with server.connect() as ws:
                since = {"epoch": since_epoch, "seq": since_seq}
                ack = await subscribe(ws, "c", since=since)
                assert (ack["seq"], ack["recovered"]) == (30, recovered), since
                if recovered:
                    expected = list(range(since_seq + 1, 31))
                    assert [m["seq"] for m in await operations(ws, len(expected))] == expected
                await ws.send_str('{"type":"Ping"}')
                assert await receive_json(ws) == {"type": "Pong"}  # nothing else was replayed
        async with server.connect() as ws:
            await subscribe(ws, "c", since={"epoch": epoch, "seq": 1})
            await server.changelog.commit(create("live"), None)
            (live,) = await operations(ws, 1)  # not recovered: the stream continues from the head
            assert live["seq"] == 31


async def test_websocket_resume_survives_a_restart_but_not_a_lost_journal(tmp_path: Path) -> None:
    journal = tmp_path / "state" / "journal.sqlite3"
    async with serve_ws(tmp_path, journal=journal) as server:
        for i in range(10):
            await server.changelog.commit(create(f"f{i}"), None)
        first_epoch = server.changelog.epoch
    async with serve_ws(tmp_path, journal=journal) as server:
        assert server.changelog.epoch == first_epoch
        async with server.connect() as ws:
            ack = await subscribe(ws, "c", since={"epoch": first_epoch, "seq": 4})
            assert (ack["seq"], ack["recovered"]) == (10, True)
            assert [m["seq"] for m in await operations(ws, 6)] == list(range(5, 11))
    journal.unlink()
    async with serve_ws(tmp_path, journal=journal) as server:
        assert server.changelog.epoch != first_epoch
        async with server.connect() as ws:
            ack = await subscribe(ws, "c", since={"epoch": first_epoch, "seq": 4})
            assert ack == {
                "type": "Ack",
                "client_id": "c",
                "epoch": server.changelog.epoch,
                "seq": 0,
                "recovered": False,
            }
            await ws.send_str('{"type":"Ping"}')
            assert await receive_json(ws) == {"type": "Pong"}  # nothing was replayed


async def test_websocket_resume_respects_patterns(tmp_path: Path) -> None:
    async with serve_ws(tmp_path) as server:
        for path in ("docs/a", "src/b", "docs/c", "src/d"):
            await server.changelog.commit(create(path), None)
        async with server.connect() as ws:
            since = {"epoch": server.changelog.epoch, "seq": 0}
            await subscribe(ws, "c", since=since, patterns=["docs/*"])
            assert [m["seq"] for m in await operations(ws, 2)] == [1, 3]
            await server.changelog.commit(create("src/e"), None)
            await server.changelog.commit(create("docs/f"), None)
            assert [m["seq"] for m in await operations(ws, 1)] == [6]
