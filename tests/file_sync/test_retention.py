"""Retention (docs/history.md): the thinning rules on their own, then real servers purging.

``retention.to_drop`` and ``retention.slot`` are pure functions, checked with hypothesis; the
end-to-end tests run a real server with a short ``max_age`` or a small ``cap`` and watch the
versions, the trash, ``GET /api/history`` and the ``Purge`` operation (over ``/ws`` too).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quantum_file_sync.retention import (
    DAILY_FOR,
    DAY,
    HOUR,
    HOURLY_FOR,
    KEEP_ALL_FOR,
    WEEK,
    RetentionPolicy,
    slot,
    to_drop,
)

from tests.client.conftest import wait_until
from tests.file_sync.conftest import (
    RunningQuantum,
    StartQuantum,
    file_sync_config,
    http,
    operations,
)
from tests.file_sync.test_history import put, sha, usage, versions

MiB = 1024 * 1024
NOW = 1_800_000_000.0
"""A fixed "now" for the pure rules (any moment works; this one is in 2027)."""

# -- the rules on their own ---------------------------------------------------------------------

ages = st.lists(
    st.floats(min_value=0, max_value=400 * DAY, allow_nan=False, allow_infinity=False),
    max_size=60,
)
policies = st.builds(
    RetentionPolicy,
    keep_at_least=st.integers(min_value=0, max_value=6),
    max_age=st.none() | st.floats(min_value=1, max_value=100 * DAY),
)


def newest_first(found: list[float]) -> list[float]:
    """Replacement times, newest first, from ages."""
    return [NOW - age for age in sorted(found)]


@given(ages, policies)
def test_never_drops_the_newest_keep_at_least(found: list[float], policy: RetentionPolicy) -> None:
    times = newest_first(found)
    dropped = to_drop(times, NOW, policy)
    assert dropped == sorted(set(dropped))
    assert all(0 <= i < len(times) for i in dropped)
    assert not [i for i in dropped if i < policy.keep_at_least]


@given(ages, st.integers(min_value=0, max_value=6))
def test_without_an_age_limit_each_slot_keeps_exactly_its_newest(
    found: list[float], keep_at_least: int
) -> None:
    times = newest_first(found)
    dropped = set(to_drop(times, NOW, RetentionPolicy(keep_at_least, None)))
    kept = [i for i in range(len(times)) if i not in dropped]
    # Everything of the last hour stays.
    assert all(i in kept for i, t in enumerate(times) if NOW - t < KEEP_ALL_FOR)
    by_slot: dict[tuple[str, int], list[int]] = {}
    for i, t in enumerate(times):
        key = slot(t, NOW)
        if key is not None:
            by_slot.setdefault(key, []).append(i)
    for key, members in by_slot.items():
        newest = members[0]
        assert newest in kept, key  # each slot keeps its newest...
        extra = [i for i in members[1:] if i in kept]
        assert all(i < keep_at_least for i in extra), (key, extra)  # ...and only the floor more
    # Past the floor, exactly one per slot.
    floor_free = [i for i in kept if i >= keep_at_least and slot(times[i], NOW) is not None]
    assert len({slot(times[i], NOW) for i in floor_free}) == len(floor_free)


@given(ages, policies)
def test_max_age_drops_everything_older_but_the_floor(
    found: list[float], policy: RetentionPolicy
) -> None:
    times = newest_first(found)
    dropped = set(to_drop(times, NOW, policy))
    for i, t in enumerate(times):
        too_old = policy.max_age is not None and NOW - t > policy.max_age
        if too_old and i >= policy.keep_at_least:
            assert i in dropped
        if i in dropped:
            assert i >= policy.keep_at_least
            # Dropped only for age, or for a slot a newer kept version fills.
            key = slot(t, NOW)
            assert too_old or any(
                j < i and j not in dropped and slot(times[j], NOW) == key for j in range(i)
            )


@settings(max_examples=200)
@given(st.floats(min_value=0, max_value=1000 * DAY, allow_nan=False))
def test_slot_boundaries(age: float) -> None:
    replaced = NOW - age
    key = slot(replaced, NOW)
    if age < KEEP_ALL_FOR:
        assert key is None
    elif age < HOURLY_FOR:
        assert key == ("hour", int(replaced // HOUR))
    elif age < DAILY_FOR:
        assert key == ("day", int(replaced // DAY))
    else:
        assert key == ("week", int(replaced // WEEK))


def test_thinning_examples() -> None:
    policy = RetentionPolicy(keep_at_least=0, max_age=None)
    # Three in one hour two hours ago: the newest stays. Two in one day ten days ago: one.
    hour = (int((NOW - 2 * HOUR) // HOUR)) * HOUR
    day = (int((NOW - 10 * DAY) // DAY)) * DAY
    times = [NOW - 60, NOW - 120, hour + 50, hour + 40, hour + 30, day + 500, day + 100]
    assert to_drop(times, NOW, policy) == [3, 4, 6]
    # The floor keeps the newest N even when they share a slot (and still fills it).
    assert to_drop(times, NOW, RetentionPolicy(keep_at_least=4)) == [4, 6]
    # max_age: older than a day goes, except the floor.
    assert to_drop(times, NOW, RetentionPolicy(keep_at_least=1, max_age=DAY)) == [3, 4, 5, 6]
    assert to_drop(times, NOW, RetentionPolicy(keep_at_least=6, max_age=DAY)) == [6]
    assert to_drop([], NOW, policy) == []


# -- a real server ------------------------------------------------------------------------------


class Subscriber:
    """A client subscribed on ``/ws`` that keeps every operation it is sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.operations: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("type") == "FileOperation":
                    self.operations.append(data["operation"])

    def purges(self) -> list[dict[str, Any]]:
        return [op["Purge"] for op in self.operations if "Purge" in op]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def subscribe(
    session: aiohttp.ClientSession, server: RunningQuantum, client_id: str
) -> Subscriber:
    ws = await session.ws_connect(server.url.replace("http", "ws", 1) + "/ws")
    await ws.send_str(json.dumps({"type": "Subscribe", "client_id": client_id}))
    ack = json.loads(await ws.receive_str(timeout=10))
    assert ack["type"] == "Ack", ack
    return Subscriber(ws)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def until(check: Any, what: str, timeout: float = 30.0) -> None:
    await asyncio.to_thread(wait_until, check, timeout, what)


def purged(server: RunningQuantum) -> list[dict[str, Any]]:
    return [op["Purge"] for op in operations(server) if "Purge" in op]


async def test_max_age_purges_old_versions_and_trash_and_says_so_over_ws(
    start_quantum: StartQuantum, session: aiohttp.ClientSession
) -> None:
    history = {"max_age": "3s", "interval": "1s", "keep_at_least": 1}
    server = start_quantum(file_sync_config(enable_upload=True, history=history))
    watcher = await subscribe(session, server, "watcher")
    try:
        for n in range(4):
            await asyncio.to_thread(put, server, "a.txt", f"a{n}".encode())
        await asyncio.to_thread(put, server, "gone.txt", b"deleted")
        assert (await asyncio.to_thread(http, "DELETE", f"{server.url}/api/files/gone.txt")).status
        await until(lambda: versions(server, "a.txt")["versions"] != [], "a version")

        def aged_out() -> bool:
            left = versions(server, "a.txt")["versions"]
            trash = http("GET", f"{server.url}/api/trash").json()["items"]
            return len(left) == 1 and trash == []

        await until(aged_out, "max_age purging")
        # The newest version survives (keep_at_least 1): the last change can be undone.
        assert versions(server, "a.txt")["versions"][0]["hash"] == sha(b"a2")
        assert (server.root / "a.txt").read_bytes() == b"a3"
        journal = await asyncio.to_thread(purged, server)
        assert {"a.txt", "gone.txt"} <= {p for op in journal for p in op["paths"]}
        assert sum(op["versions"] for op in journal) == 3  # a0, a1 and gone.txt's one file
        assert sum(op["trash"] for op in journal) == 1
        await until(lambda: len(watcher.purges()) == len(journal), "the Purge over /ws")
        assert watcher.purges() == journal
        assert not list((server.root / ".quantum" / "history" / "trash").iterdir())
        state = usage(server)
        assert state["trash"] == {"count": 0, "bytes": 0}
        assert state["versions"]["count"] == 1
    finally:
        await watcher.close()


def test_cap_purges_oldest_first_but_never_the_newest_version_of_a_live_file(
    start_quantum: StartQuantum,
) -> None:
    # No copies of the live files (copies_below): each version then holds exactly the 1 MiB
    # nothing else holds, and the cap is only about versions.
    history = {"cap": "4MiB", "interval": "1s", "copies_below": 0}
    server = start_quantum(file_sync_config(enable_upload=True, history=history))
    made: list[tuple[int, str]] = []  # (version id, path) in the order they were made
    rng = random.Random(7)
    for n in range(14):
        path = "a.bin" if n % 2 == 0 else "b.bin"
        put(server, path, rng.randbytes(MiB))
        if n >= 2:  # from the third write on, each replaces a version
            newest = versions(server, path)["versions"][0]  # never purged: it is the newest
            made.append((newest["id"], path))
    assert [i for i, _ in made] == sorted(i for i, _ in made)

    def under_cap() -> bool:
        state = usage(server)
        return state["pending"] == 0 and state["stored_bytes"] <= state["cap_bytes"]

    wait_until(under_cap, 30, what="history under its cap")
    state = usage(server)
    assert state["cap_bytes"] == 4 * MiB
    # Only as much goes as the cap needs: each version holds 1 MiB nothing else holds.
    assert state["stored_bytes"] > state["cap_bytes"] - MiB, state
    left = {v["id"] for path in ("a.bin", "b.bin") for v in versions(server, path)["versions"]}
    newest = {path: max(i for i, p in made if p == path) for path in ("a.bin", "b.bin")}
    assert set(newest.values()) <= left  # the last change of each live file can be undone
    gone = [i for i, _ in made if i not in left]
    assert gone, "the cap purged nothing"
    others = left - set(newest.values())
    assert others and all(g < min(others) for g in gone)  # oldest first
    assert state["versions"]["count"] == len(left)
    journal = purged(server)
    assert sum(op["versions"] for op in journal) == len(gone)
    assert {p for op in journal for p in op["paths"]} <= {"a.bin", "b.bin"}
    # What is left is whole.
    for path in ("a.bin", "b.bin"):
        for version in versions(server, path)["versions"]:
            body = http("GET", f"{server.url}/api/versions/{path}?version={version['id']}")
            assert body.status == 200 and sha(body.body) == version["hash"]
