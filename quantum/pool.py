"""Resources shared across handler instances and reloads, reference-counted (Caddy's UsagePool).

During a reload the old and the new handler run side by side until the swap. A resource that
must exist once (a journal, a watcher on a folder, a listening manager of WebSockets) is taken
from the pool by key: the new handler gets the *same* object the old one uses, and the object is
closed when the last user releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class Closable(Protocol):
    async def close(self) -> None: ...


ResourceT = TypeVar("ResourceT", bound=Closable)


@dataclass
class _Entry:
    resource: Any
    users: int


class UsagePool:
    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    async def acquire(
        self, key: Hashable, create: Callable[[], Awaitable[ResourceT]]
    ) -> tuple[ResourceT, bool]:
        """The resource under ``key`` (created by ``create`` when absent) and whether it was
        created now. Every acquire needs one :meth:`release`."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            if entry is not None:
                entry.users += 1
                return entry.resource, False
            resource = await create()
            self._entries[key] = _Entry(resource, 1)
            return resource, True

    async def release(self, key: Hashable) -> None:
        """Drop one use; the last one closes the resource."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users > 0:
                return
            del self._entries[key]
            await entry.resource.close()

    def users(self, key: Hashable) -> int:
        entry = self._entries.get(key)
        return entry.users if entry else 0
