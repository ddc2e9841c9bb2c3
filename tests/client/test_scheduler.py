from __future__ import annotations

import asyncio

import pytest
from quantum_file_sync.client.scheduler import PathScheduler

from tests.support.waiting import eventually


async def test_one_worker_per_path_and_a_rerun_for_changes_during_work() -> None:
    running: set[str] = set()
    runs: list[str] = []
    gate = asyncio.Event()

    async def work(path: str) -> None:
        assert path not in running
        running.add(path)
        runs.append(path)
        if len(runs) == 1:
            await gate.wait()
        running.discard(path)

    scheduler = PathScheduler(work, concurrency=4)
    scheduler.start()
    scheduler.add("a", seq=5)
    await eventually(lambda: "a" in running)
    scheduler.add("a", seq=6)  # while running: once more afterwards
    scheduler.add("a", seq=7)  # coalesced with the previous one
    scheduler.add("b")
    assert scheduler.pending_seq_floor() == 5
    gate.set()
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert sorted(runs) == ["a", "a", "b"]
    assert scheduler.pending_seq_floor() is None
    await scheduler.close()


async def test_delayed_work_and_busy_below() -> None:
    done: list[str] = []

    async def work(path: str) -> None:
        done.append(path)

    scheduler = PathScheduler(work, concurrency=2)
    scheduler.start()
    scheduler.add_later("d/x", 0.05, seq=3)
    assert scheduler.busy_below("d")
    assert not scheduler.busy_below("d/x")
    assert scheduler.pending_seq_floor() == 3
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert done == ["d/x"]
    await scheduler.close()


async def test_exclusive_waits_for_running_work_and_holds_new_work() -> None:
    log: list[str] = []
    release = asyncio.Event()

    async def work(path: str) -> None:
        log.append(f"start {path}")
        if path == "slow":
            await release.wait()
        log.append(f"end {path}")

    scheduler = PathScheduler(work, concurrency=2)
    scheduler.start()
    scheduler.add("slow")
    await eventually(lambda: log == ["start slow"])

    async def exclusive() -> None:
        async with scheduler.exclusive():
            log.append("exclusive")
            scheduler.add("later")
            await asyncio.sleep(0.02)
            log.append("exclusive done")

    task = asyncio.create_task(exclusive())
    await asyncio.sleep(0.02)
    release.set()
    await task
    await asyncio.wait_for(scheduler.wait_idle(), 2)
    assert log == [
        "start slow",
        "end slow",
        "exclusive",
        "exclusive done",
        "start later",
        "end later",
    ]
    await scheduler.close()


async def test_an_unhandled_error_is_reported() -> None:
    async def work(path: str) -> None:
        raise ValueError(path)

    scheduler = PathScheduler(work, concurrency=1)
    scheduler.start()
    scheduler.add("boom")
    with pytest.raises(ValueError, match="boom"):
        raise await asyncio.wait_for(scheduler.failed(), 2)
    await scheduler.close()
