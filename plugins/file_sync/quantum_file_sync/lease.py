"""The disk-watch lease: one node per shared root publishes changes seen on disk.

Every node watches the shared ``root``, but only the node holding this lease turns what its watcher
sees into operations; the others would only produce duplicates. The lease is a Redis key holding
the node id with a TTL (``SET key node NX PX ttl``), renewed by a compare-and-pexpire script. A
node that dies stops renewing, the key expires and another node takes over (failover within about
``ttl + ttl/3``); a node that shuts down cleanly deletes the key so the takeover is immediate.

Ownership is judged locally and conservatively: a node owns the lease until ``ttl`` after the
moment it *sent* its last successful renewal, which is never later than the key's expiry in Redis,
so two nodes never both believe they own it (barring a paused process or a flushed Redis, which
:meth:`DiskWatchLease.suspend` covers on outages).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

# Acquire when free, renew when already ours: one script, so a holder never loses a lease that
# it could have renewed because of a race between GET and PEXPIRE.
_ACQUIRE_OR_RENEW = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

OwnershipCallback = Callable[[bool], None]


def reraise_lost_cancellation() -> None:
    """Raise ``CancelledError`` if the current task was cancelled but is still running.

    redis-py's asyncio client sometimes swallows a cancellation that lands while a command is
    in flight (redis/redis-py#2028, #2665): the command returns normally. A long-running loop
    that awaits Redis calls this after each command so that ``task.cancel()`` still stops it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has stopped, cancelling again if a cancellation got
    lost (see :func:`reraise_lost_cancellation`). An exception it ended with is left on the task
    for the caller to look at."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


class DiskWatchLease:
    """Holds (or waits for) the lease ``key`` on behalf of ``node_id``."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        node_id: str,
        *,
        ttl: float = 5.0,
        on_change: OwnershipCallback | None = None,
        logger: Any = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self._redis = redis
        self._key = key
        self._node_id = node_id
        self._ttl = ttl
        self._on_change = on_change
        self._log = logger if logger is not None else structlog.get_logger(__name__)
        self._acquire_or_renew = redis.register_script(_ACQUIRE_OR_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._owned_until = 0.0
        self._was_owned = False
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        return self._key

    @property
    def owned(self) -> bool:
        owned = asyncio.get_running_loop().time() < self._owned_until
        if owned != self._was_owned:
            self._set_owned(owned)
        return owned

    async def start(self) -> None:
        """Try once now (so a lone node owns the lease as soon as it starts), then keep trying."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name=f"lease:{self._key}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._owned_until:
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self._key], args=[self._node_id])
        self._owned_until = 0.0
        if self._was_owned:
            self._set_owned(False)

    def suspend(self) -> None:
        """Give up ownership locally at once (Redis unreachable: whoever holds the key when it
        comes back, possibly a restarted Redis without our key, decides)."""
        self._owned_until = 0.0
        if self._was_owned:
            self._set_owned(False)

    async def refresh(self) -> bool:
        """Acquire or renew now; returns whether this node owns the lease afterwards."""
        sent_at = asyncio.get_running_loop().time()
        try:
            ok = await self._acquire_or_renew(
                keys=[self._key], args=[self._node_id, int(self._ttl * 1000)]
            )
        except (RedisError, OSError) as exc:
            # Keep what we have until it runs out: a short blip must not cause a failover.
            # (Debug: the change log reports the outage itself, once.)
            self._log.debug("lease_refresh_failed", key=self._key, error=str(exc))
            return self.owned
        self._owned_until = sent_at + self._ttl if ok else 0.0
        return self.owned

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            await self.refresh()
            reraise_lost_cancellation()

    def _set_owned(self, owned: bool) -> None:
        self._was_owned = owned
        self._log.info(
            "disk_watch_lease_acquired" if owned else "disk_watch_lease_lost",
            key=self._key,
            node_id=self._node_id,
        )
        if self._on_change is not None:
            self._on_change(owned)
