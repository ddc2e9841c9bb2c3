"""The Redis change log: several nodes share one journal and one broadcast.

Layout under ``key_prefix`` (default ``quantum:``):

- ``epoch``  the journal's epoch (created once, atomically, by whichever node needs it first);
- ``seq``    the shared sequence (``INCR``);
- ``stream`` the journal, a Stream whose entry ids are ``<seq>-0`` so replay is a direct ``XRANGE``
  (fields ``f``: the ``FileOperation`` frame, ``t``: commit time in ms), trimmed to
  ``stream_maxlen`` and, by the lease holder, to ``max_age``;
- ``events`` the pub/sub channel carrying every frame;
- ``lease:disk-watch`` which node publishes what the disk watcher sees (see :mod:`.lease`);
- ``state``, ``state:*`` the tree as the journal describes it (see :mod:`.journaled_state`).

A commit is one Lua script (epoch check, ``INCR``, ``XADD``, ``PUBLISH``, and the change applied
to the journaled state), so seqs are strictly increasing, frames are published in seq order and
the state never disagrees with the journal. Each node's listener task follows the channel
and delivers every event to local listeners exactly once and in order: anything at or below the
last delivered seq is a duplicate, a jump means the subscription missed messages (a reconnect) and
the missing range is read back from the stream first.

Outages: when Redis is unreachable the node keeps serving. ``commit`` raises
:class:`ChangeLogUnavailable` (a stopped server refuses at once), ``replay`` answers ``None``
(clients get ``recovered: false``), and a supervisor reconnects with backoff. A change that
could not be journaled leaves a hole that no client could replay, so the node that lost it starts
a new epoch when Redis is back; a Redis restarted without persistence has lost its epoch and gets
a new one anyway. Either way clients reconcile by listing instead of trusting an incomplete journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from quantum.metrics import get_or_create
from quantum_file_sync.changelog import (
    ChangeLog,
    ChangeLogUnavailable,
    EpochListener,
    Listener,
)
from quantum_file_sync.index import EntryLookup
from quantum_file_sync.journaled_state import STATE_FUNCTIONS, JournaledState
from quantum_file_sync.lease import (
    DiskWatchLease,
    cancel_and_wait,
    reraise_lost_cancellation,
)
from quantum_file_sync.operations import ChangeEvent, Operation, operation_from_json

StreamEntry = tuple[bytes, dict[bytes, bytes]]

# KEYS: epoch, seq, stream, then the journaled state's state, tree, seed, dirty.
# ARGV: candidate epoch, frame head, frame tail, maxlen, channel, then the state change's
# change, path, from, entry (JournaledState.change_args).
# The frame is assembled here because only the script knows seq and epoch; its layout is the one
# of ChangeEvent.to_message (type, operation, source_client, seq, epoch, op_id).
_COMMIT = (
    STATE_FUNCTIONS
    + """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local seq = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local frame = ARGV[2] .. seq .. ',"epoch":"' .. epoch .. ARGV[3]
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], seq .. '-0', 'f', frame, 't', ms)
redis.call('PUBLISH', ARGV[5], frame)
apply_change(KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return {epoch, seq, frame}
"""
)

# KEYS: epoch, seq, stream.  ARGV: "1" to abandon the current epoch, candidate epoch, channel.
# A new epoch is announced on the channel so idle nodes move to it without waiting for an event.
_SYNC = """
local epoch = redis.call('GET', KEYS[1])
if (not epoch) or ARGV[1] == '1' then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('PUBLISH', ARGV[3], '{"type":"NewEpoch","epoch":"' .. epoch .. '"}')
end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""

_FRAME_HEAD = '{"type":"FileOperation","operation":'
_NEW_EPOCH_HEAD = b'{"type":"NewEpoch"'
_COMPACT = (",", ":")
_OFFLINE_EPOCH_PREFIX = "offline-"


class _SessionBroken(Exception):
    """A commit failed although the subscription looked healthy: start over."""


class _Backoff:
    """Exponential reconnect delay with jitter: 50 ms doubling up to ``cap``."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay * random.uniform(0.8, 1.2)


def _new_epoch() -> str:
    return uuid.uuid4().hex


def _event_from_frame(frame: bytes | str) -> ChangeEvent:
    text = frame.decode() if isinstance(frame, bytes) else frame
    message = json.loads(text)
    return ChangeEvent(
        operation=operation_from_json(message["operation"]),
        source_client=message["source_client"],
        epoch=message["epoch"],
        seq=int(message["seq"]),
        op_id=message["op_id"],
        frame=text,
    )


class RedisChangeLog(ChangeLog):
    """Journal in a Redis Stream, broadcast through Redis pub/sub, shared by every node."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "quantum:",
        stream_maxlen: int = 100_000,
        max_age: float = 7 * 86400.0,
        node_id: str,
        registry: CollectorRegistry | None = None,
        logger: Any = None,
        lease_ttl: float = 5.0,
        heartbeat_interval: float = 1.0,
        command_timeout: float = 5.0,
        delivery_wait: float = 1.0,
    ) -> None:
        if stream_maxlen < 1:
            raise ValueError("stream_maxlen must be at least 1")
        self._url = url
        self._prefix = key_prefix
        self._stream_maxlen = stream_maxlen
        self._max_age = max_age
        self._node_id = node_id
        self._lease_ttl = lease_ttl
        self._heartbeat_interval = heartbeat_interval
        self._command_timeout = command_timeout
        self._delivery_wait = delivery_wait
        self._log = (logger if logger is not None else structlog.get_logger(__name__)).bind(
            broker="redis", node_id=node_id
        )
        self._keys = [key_prefix + "epoch", key_prefix + "seq", key_prefix + "stream"]
        self._channel = key_prefix + "events"

        self._up_gauge: Gauge | None = None
        self._outages: Counter | None = None
        self._refilled: Counter | None = None
        self._owner_gauge: Gauge | None = None
        if registry is not None:
            self._up_gauge = get_or_create(
                registry, Gauge, "quantum_redis_up", "1 while the Redis broker is reachable"
            )
            self._up_gauge.set(0)
            self._outages = get_or_create(
                registry, Counter, "quantum_redis_outages_total", "Redis broker outages seen"
            )
            self._refilled = get_or_create(
                registry,
                Counter,
                "quantum_redis_refilled_events_total",
                "Events missed by the subscription and read back from the stream",
            )
            self._owner_gauge = get_or_create(
                registry,
                Gauge,
                "quantum_disk_watch_owner",
                "1 while this node holds the lease to publish what its disk watcher sees",
            )
            self._owner_gauge.set(0)

        self._redis: Redis | None = None
        self._state: JournaledState | None = None
        self._state_lookup: EntryLookup | None = None
        self._lease: DiskWatchLease | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._backoff = _Backoff()
        self._broken = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._ever_connected = False
        self._down_since: float | None = None
        self._lease_held_at_outage = False
        self._lost_changes = False

        self._epoch = ""
        self._last_seq = 0
        self._listeners: tuple[Listener, ...] = ()
        self._epoch_listeners: tuple[EpochListener, ...] = ()
        self._lease_listeners: tuple[Callable[[bool], None], ...] = ()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and start following the channel. An unreachable Redis is not an error: the
        node starts degraded (an ``offline-…`` epoch nobody can resume) and keeps retrying."""
        self._redis = Redis.from_url(
            self._url,
            socket_timeout=self._command_timeout,
            socket_connect_timeout=min(self._command_timeout, 2.0),
            # No silent retries: a retried commit script could run twice.
            retry=Retry(NoBackoff(), 0),
        )
        self._commit_script = self._redis.register_script(_COMMIT)
        self._sync_script = self._redis.register_script(_SYNC)
        self._state = JournaledState(self._redis, self._prefix)
        self._lease = DiskWatchLease(
            self._redis,
            self._prefix + "lease:disk-watch",
            self._node_id,
            ttl=self._lease_ttl,
            on_change=self._on_lease_change,
            logger=self._log,
        )
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-changelog")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), timeout=self._command_timeout)
        if not self._ever_connected:
            self._log.warning("redis_unavailable_at_start", url=_redact(self._url))
            self._epoch = _OFFLINE_EPOCH_PREFIX + _new_epoch()
        await self._lease.start()

    async def close(self) -> None:
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            self._supervisor = None
        if self._lease is not None:
            await self._lease.close()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        self._release_waiters(lambda epoch, seq: True)

    # -- the ChangeLog interface -----------------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    async def head(self) -> int:
        """The newest seq delivered to this node's listeners: every later event is still to come
        through :meth:`listen`, so (epoch, head) is a consistent resume point."""
        return self._last_seq

    async def commit(self, operation: Operation, source_client: str | None) -> ChangeEvent:
        redis = self._require_open()
        # Even while the subscription is down the commit is tried: commands may still get
        # through, and a dead server refuses the connection at once.
        op_id = uuid.uuid4().hex
        head = (
            _FRAME_HEAD
            + json.dumps(operation.to_json(), separators=_COMPACT)
            + ',"source_client":'
            + json.dumps(source_client)
            + ',"seq":'
        )
        tail = '","op_id":' + json.dumps(op_id) + "}"
        try:
            epoch_raw, seq, frame = await self._commit_script(
                keys=[*self._keys, *self.journaled_state.keys],
                args=[
                    _new_epoch(),
                    head,
                    tail,
                    self._stream_maxlen,
                    self._channel,
                    *self.journaled_state.change_args(operation, self._state_lookup),
                ],
                client=redis,
            )
        except (RedisError, OSError) as exc:
            # The script may or may not have run: the journal can no longer vouch for this change.
            self._lost_changes = True
            self._broken.set()
            raise ChangeLogUnavailable(f"the Redis broker is unavailable: {exc}") from exc
        event = ChangeEvent(
            operation=operation,
            source_client=source_client,
            epoch=epoch_raw.decode(),
            seq=int(seq),
            op_id=op_id,
            frame=frame.decode(),
        )
        # Read-your-writes: once commit returns, local listeners (this node's WebSocket clients)
        # have the event and head() includes it.
        await self._wait_delivered(event.epoch, event.seq)
        return event

    async def replay(self, epoch: str, since: int) -> Sequence[ChangeEvent] | None:
        if self._redis is None or self._down_since is not None or since < 0:
            return None
        if epoch == self._epoch and since > self._last_seq:
            # A client coming from a node that is a little ahead of this one.
            await self._wait_delivered(epoch, since)
        if epoch != self._epoch or since > self._last_seq:
            return None
        head = self._last_seq
        if since == head:
            return []
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._keys[0])
                pipe.time()
                pipe.xrange(self._keys[2], min=f"{since + 1}-0", max=f"{head}-0")
                current, (now_s, now_us), raw_entries = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._log.warning("redis_replay_failed", error=str(exc))
            return None
        entries = cast(list[StreamEntry], raw_entries)
        if current is None or current.decode() != epoch or len(entries) != head - since:
            return None  # another epoch, or trimmed by stream_maxlen
        _, first_fields = entries[0]
        now_ms = now_s * 1000 + now_us // 1000
        if now_ms - int(first_fields[b"t"]) > self._max_age * 1000:
            return None
        return [_event_from_frame(fields[b"f"]) for _, fields in entries]

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def owns_disk_watch(self) -> bool:
        if self._down_since is not None:
            if self._lease_held_at_outage:
                # The watcher asks because it saw a change it cannot publish now.
                self._lost_changes = True
            return False
        return self._lease is not None and self._lease.owned

    # -- extras ----------------------------------------------------------------------------------

    @property
    def journaled_state(self) -> JournaledState:
        """The tree as the journal describes it (see :mod:`.journaled_state`)."""
        if self._state is None:
            raise RuntimeError("RedisChangeLog is not open")
        return self._state

    def track_state(self, lookup: EntryLookup, *, root_dev: int) -> None:
        """Keep the journaled state with every commit: ``lookup(path)`` is the committing
        node's index entry for the path, already updated when ``commit`` is called;
        ``root_dev`` is the device number of root on this node."""
        self.journaled_state.root_dev = root_dev
        self._state_lookup = lookup

    def on_epoch_change(self, listener: EpochListener) -> Callable[[], None]:
        """Call ``listener(new_epoch)`` when this node moves to another epoch (Redis lost its
        data, or a node abandoned an epoch with unjournaled changes). Clients of the old epoch
        missed changes that cannot be replayed and must resync."""
        self._epoch_listeners = (*self._epoch_listeners, listener)

        def unsubscribe() -> None:
            self._epoch_listeners = tuple(x for x in self._epoch_listeners if x is not listener)

        return unsubscribe

    def on_disk_watch_change(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``listener(owned)`` when this node gains or loses the disk-watch lease. A node
        that gains it should re-check the disk: changes made while no node held the lease (the
        previous holder died) were published by nobody."""
        self._lease_listeners = (*self._lease_listeners, listener)

        def unsubscribe() -> None:
            self._lease_listeners = tuple(x for x in self._lease_listeners if x is not listener)

        return unsubscribe

    def _on_lease_change(self, owned: bool) -> None:
        if self._owner_gauge is not None:
            self._owner_gauge.set(1 if owned else 0)
        for listener in self._lease_listeners:
            try:
                listener(owned)
            except Exception:
                self._log.exception("changelog_lease_listener_failed")

    @property
    def available(self) -> bool:
        return self._down_since is None and self._ever_connected

    # -- connection supervision ------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._mark_down(exc)
                self._first_attempt.set()
                reraise_lost_cancellation()
            await asyncio.sleep(self._backoff.next())

    async def _session(self) -> None:
        redis = self._require_open()
        pubsub = redis.pubsub()
        try:
            # Subscribe before reading the head so that nothing falls between the two.
            await pubsub.subscribe(self._channel)
            await self._resync()
            reraise_lost_cancellation()
            self._mark_up()
            # Not a TaskGroup: on 3.11 a failing child leaves the parent with a pending
            # cancellation request behind, which would then stop the supervisor itself.
            loops = [
                asyncio.create_task(self._pump(pubsub)),
                asyncio.create_task(self._heartbeat()),
                asyncio.create_task(self._watch_broken()),
            ]
            try:
                await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for loop_task in loops:
                    if not loop_task.done():
                        await cancel_and_wait(loop_task)
            # Retrieve every failure (several loops may fail together), raise the first.
            failures = [t.exception() for t in loops if t.done() and not t.cancelled()]
            for failure in failures:
                if failure is not None:
                    raise failure
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _resync(self) -> None:
        """Agree on the epoch with Redis (abandoning it if this node lost changes) and catch up
        on whatever the subscription missed."""
        redis = self._require_open()
        abandon = self._lost_changes
        epoch_raw, seq = await self._sync_script(
            keys=self._keys,
            args=["1" if abandon else "", _new_epoch(), self._channel],
            client=redis,
        )
        if abandon:
            self._lost_changes = False
            self._log.warning("changelog_epoch_abandoned", reason="changes lost during an outage")
        epoch, head = epoch_raw.decode(), int(seq)
        if not self._ever_connected:
            self._ever_connected = True
            self._switch_epoch(epoch, start_at=head, notify=bool(self._epoch))
            return
        if epoch != self._epoch:
            self._switch_epoch(epoch, start_at=0, notify=True)
        if head > self._last_seq:
            await self._refill(head)

    async def _pump(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None and message["type"] == "message":
                await self._on_frame(message["data"])
            reraise_lost_cancellation()

    async def _heartbeat(self) -> None:
        """Notice a Redis that stopped answering without closing the connection, and keep the
        stream within ``max_age`` (the lease holder's job, so it happens once)."""
        redis = self._require_open()
        loop = asyncio.get_running_loop()
        prune_every = min(max(self._max_age / 4, 1.0), 60.0)
        next_prune = loop.time()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            await redis.ping()
            if self._lease is not None and self._lease.owned and loop.time() >= next_prune:
                next_prune = loop.time() + prune_every
                await self._prune_expired()
            reraise_lost_cancellation()

    async def _watch_broken(self) -> None:
        self._broken.clear()
        await self._broken.wait()
        raise _SessionBroken

    def _mark_up(self) -> None:
        self._backoff.reset()
        self._first_attempt.set()
        if self._down_since is not None:
            self._log.info(
                "redis_available",
                outage_seconds=round(asyncio.get_running_loop().time() - self._down_since, 3),
            )
            self._down_since = None
        if self._up_gauge is not None:
            self._up_gauge.set(1)

    async def _mark_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            if self._lease is not None:
                self._lease_held_at_outage = self._lease.owned
                self._lease.suspend()
            if self._outages is not None:
                self._outages.inc()
            if self._up_gauge is not None:
                self._up_gauge.set(0)
            if isinstance(exc, RedisError | OSError | _SessionBroken):
                self._log.warning("redis_unavailable", error=repr(exc))
            else:
                self._log.error("redis_session_failed", exc_info=exc)
        if self._redis is not None:
            # Drop pooled connections to the old server; commands reconnect on demand.
            with contextlib.suppress(RedisError, OSError):
                await self._redis.connection_pool.disconnect()

    # -- delivery --------------------------------------------------------------------------------

    async def _on_frame(self, frame: bytes) -> None:
        if frame.startswith(_NEW_EPOCH_HEAD):
            epoch = json.loads(frame)["epoch"]
            if epoch != self._epoch and await self._is_current_epoch(epoch):
                self._switch_epoch(epoch, start_at=0, notify=True)
            return
        try:
            event = _event_from_frame(frame)
        except (ValueError, KeyError, TypeError) as exc:
            self._log.warning("redis_bad_frame", error=repr(exc))
            return
        if event.epoch != self._epoch:
            if not await self._is_current_epoch(event.epoch):
                return  # a straggler of an abandoned epoch
            self._switch_epoch(event.epoch, start_at=0, notify=True)
        if event.seq <= self._last_seq:
            return
        if event.seq > self._last_seq + 1:
            await self._refill(event.seq - 1)
        self._deliver(event)

    async def _is_current_epoch(self, epoch: str) -> bool:
        current = cast(bytes | None, await self._require_open().get(self._keys[0]))
        return current is not None and current.decode() == epoch

    async def _refill(self, upto: int) -> None:
        """Deliver the events after the last delivered one up to ``upto`` from the stream."""
        first = self._last_seq + 1
        entries = await self._xrange(f"{first}-0", f"{upto}-0")
        delivered = 0
        for _, fields in entries:
            event = _event_from_frame(fields[b"f"])
            if event.epoch == self._epoch and event.seq > self._last_seq:
                self._deliver(event)
                delivered += 1
        if self._refilled is not None:
            self._refilled.inc(delivered)
        missing = upto - first + 1 - delivered
        if missing:
            self._log.warning("changelog_events_unrecoverable", count=missing, after=first - 1)
            self._last_seq = max(self._last_seq, upto)

    def _deliver(self, event: ChangeEvent) -> None:
        self._last_seq = event.seq
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self._log.exception("changelog_listener_failed", seq=event.seq)
        if self._waiters:
            self._release_waiters(lambda epoch, seq: epoch == event.epoch and seq <= event.seq)

    def _switch_epoch(self, epoch: str, *, start_at: int, notify: bool) -> None:
        self._epoch = epoch
        self._last_seq = start_at
        self._release_waiters(lambda waited_epoch, seq: waited_epoch != epoch or seq <= start_at)
        if notify:
            self._log.warning("changelog_new_epoch", epoch=epoch)
            for listener in self._epoch_listeners:
                try:
                    listener(epoch)
                except Exception:
                    self._log.exception("changelog_epoch_listener_failed")

    async def _wait_delivered(self, epoch: str, seq: int) -> None:
        """Wait (bounded) until the listener task has delivered ``seq`` of ``epoch``."""
        if self._epoch == epoch and self._last_seq >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (epoch, seq, future)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=self._delivery_wait)
        except TimeoutError:
            self._log.debug("changelog_delivery_slow", seq=seq)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _release_waiters(self, done: Callable[[str, int], bool]) -> None:
        for epoch, seq, future in self._waiters:
            if done(epoch, seq) and not future.done():
                future.set_result(None)

    # -- retention -------------------------------------------------------------------------------

    async def _prune_expired(self) -> None:
        redis = self._require_open()
        now_s, now_us = await redis.time()
        cutoff = now_s * 1000 + now_us // 1000 - int(self._max_age * 1000)
        start = "-"
        while True:
            entries = await self._xrange(start, "+", count=500)
            for entry_id, fields in entries:
                if int(fields[b"t"]) >= cutoff:
                    if start != "-" or entry_id != entries[0][0]:
                        await redis.xtrim(self._keys[2], minid=entry_id, approximate=False)
                    return
            if len(entries) < 500:
                if entries:  # everything has expired
                    last_seq = int(entries[-1][0].split(b"-")[0])
                    await redis.xtrim(self._keys[2], minid=f"{last_seq + 1}-0", approximate=False)
                return
            start = "(" + entries[-1][0].decode()

    async def _xrange(self, start: str, end: str, count: int | None = None) -> list[StreamEntry]:
        entries = await self._require_open().xrange(self._keys[2], min=start, max=end, count=count)
        return cast(list[StreamEntry], entries or [])

    def _require_open(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("RedisChangeLog is not open")
        return self._redis


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
