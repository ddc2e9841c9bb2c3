"""``/ws``: WebSocket connections, subscriptions with catch-up, and the broadcast fan-out.

Design notes (the why; the protocol itself is in docs/protocol.md):

- Per connection there is one task, the aiohttp handler running the receive loop. The send path
  is a bounded outbox drained by a writer task that exists only while the outbox is non-empty:
  while the socket keeps up, a frame is written straight to the transport, so an idle connection
  costs no task and no buffer, and a broadcast is one ``transport.write`` per recipient.
- A broadcast encodes the change once — payload *and* WebSocket frame bytes — and hands the same
  bytes object to every matching subscriber without ever awaiting one of them. A subscriber whose
  socket is backed up gets the frame queued; past ``send_buffer`` queued frames it is dropped
  (close 1008 "too_slow") instead of slowing everyone else. Queued frames share the broadcast's
  bytes, so a full outbox costs pointers, not copies.
- Subscribe registers the connection for live events *before* reading the journal head and
  replaying, buffers live events while it replays, and dedupes by seq, so a resuming client gets
  every missed change once, in order, with no gap before the live ones.
- Liveness: any frame from the client counts (including protocol-level pongs). Every
  ``heartbeat_interval`` the server sends a protocol ping to connections it has not heard from
  for that long (browsers answer those by themselves) and closes those silent for
  ``heartbeat_timeout`` (4001 "heartbeat timeout"). Every ``cleanup_interval`` it also sweeps the
  registry for connections whose socket is gone.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import WebSocketError, WSMessage, WSMsgType, web
from prometheus_client import CollectorRegistry

from quantum_file_sync.changelog import ChangeLog
from quantum_file_sync.errors import error_response
from quantum_file_sync.operations import ChangeEvent, operation_paths
from quantum_file_sync.patterns import PathFilter, compile_patterns
from quantum_file_sync.protocol import (
    PONG_TEXT,
    Ack,
    ClientMessage,
    Error,
    ErrorCode,
    Ping,
    ProtocolError,
    Subscribe,
    parse_client_message,
)
from quantum_file_sync.ws_metrics import WsMetrics

CLOSE_REPLACED: Final = 4000
CLOSE_HEARTBEAT_TIMEOUT: Final = 4001
CLOSE_POLICY: Final = 1008
CLOSE_GOING_AWAY: Final = 1001
MAX_AUTH_FAILURES: Final = 5
WRITE_HIGH_WATER: Final = 64 * 1024
"""Above this many bytes waiting in the transport, frames go to the outbox instead."""
_SLOW_CLOSE_WAIT: Final = 0.2
"""How long a client dropped as too slow gets to answer the close frame before the abort."""
_HEARTBEAT_SLICES: Final = 10

Authenticate = Callable[[str | None], bool]


@dataclass(frozen=True, slots=True)
class WsSettings:
    """What the ``limits``, ``heartbeat`` and ``compression`` options say (seconds, bytes)."""

    max_connections: int = 10_000
    messages_per_second: float = 50.0
    message_burst: int = 100
    send_buffer: int = 1024
    max_message_size: int = 64 * 1024
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 90.0
    cleanup_interval: float = 300.0
    compression: bool = False
    close_timeout: float = 5.0
    """How long a close handshake may take before the socket is aborted."""
    retry_after: int = 5
    """``Retry-After`` seconds of the 503 answered past ``max_connections``."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """A snapshot of one connection (times are Unix timestamps)."""

    client_id: str | None
    peer: str | None
    connected_since: float
    last_seen: float
    patterns: tuple[str, ...] | None
    subscribed: bool


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final WebSocket text frame (RFC 6455 §5.2): server → client."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


_PING_FRAME: Final = b"\x89\x00"
_PONG_PAYLOAD: Final = PONG_TEXT.encode()
_PONG_WIRE: Final = text_frame(_PONG_PAYLOAD)

_Pending = list[tuple[int, bytes, bytes]]


class _Connection:
    """Per-connection state. Kept small: at 10,000 idle connections every byte counts."""

    __slots__ = (
        "auth_failures",
        "client_id",
        "close_request",
        "closing",
        "connected_at",
        "cork",
        "direct",
        "filter",
        "hard_tokens",
        "last_seen",
        "last_seq",
        "outbox",
        "pending",
        "soft_tokens",
        "task",
        "transport",
        "writer",
        "ws",
    )

    def __init__(self, ws: web.WebSocketResponse, burst: float) -> None:
        self.ws = ws
        self.transport: asyncio.Transport | None = None
        self.direct = False
        self.client_id: str | None = None
        self.filter: PathFilter | None = None
        self.closing = False
        self.close_request: tuple[int, str] | None = None
        self.task: asyncio.Task[Any] | None = None
        """The aiohttp handler task running the receive loop (cancelled to close from outside)."""
        self.connected_at = time.time()
        self.last_seen = time.monotonic()
        self.last_seq = 0
        self.pending: _Pending | None = None
        """While a Subscribe replays the journal: live events wait here."""
        self.outbox: deque[bytes] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.cork: list[tuple[bytes, bytes]] | None = None
        """Replies produced while reading one burst of messages, written together."""
        self.soft_tokens = burst
        self.hard_tokens = 2 * burst
        self.auth_failures = 0

    @property
    def peer(self) -> str | None:
        """The client's address (looked up on demand rather than stored per connection)."""
        peername = None if self.transport is None else self.transport.get_extra_info("peername")
        return str(peername[0]) if peername else None

    def info(self, now_wall: float, now_mono: float) -> ConnectionInfo:
        return ConnectionInfo(
            client_id=self.client_id,
            peer=self.peer,
            connected_since=self.connected_at,
            last_seen=now_wall - (now_mono - self.last_seen),
            patterns=None if self.filter is None else self.filter.patterns,
            subscribed=self.client_id is not None and not self.closing,
        )


class WsManager:
    """Owns every ``/ws`` connection of one file_sync handler."""

    def __init__(
        self,
        changelog: ChangeLog,
        settings: WsSettings,
        registry: CollectorRegistry,
        logger: Any,
        authenticate: Authenticate,
    ) -> None:
        self._changelog = changelog
        self._settings = settings
        self._log = logger if logger is not None else structlog.get_logger(__name__)
        self._authenticate = authenticate
        self._metrics = WsMetrics.create(registry)
        self._sent_ack = self._metrics.sent.labels(type="Ack")
        self._sent_pong = self._metrics.sent.labels(type="Pong")
        self._sent_operation = self._metrics.sent.labels(type="FileOperation")
        self._sent_error = self._metrics.sent.labels(type="Error")
        self._received = {
            kind: self._metrics.received.labels(type=kind)
            for kind in ("Subscribe", "Ping", "Pong", "invalid")
        }
        self._connections: dict[_Connection, None] = {}
        """Every open connection (a dict: at 10,000 entries it is half the size of a set)."""
        self._subscribers: dict[str, _Connection] = {}
        self._deferred_counts: dict[Any, int] = {}
        self._burst: list[ChangeEvent] = []
        self._unlisten: Callable[[], None] | None = None
        self._unlisten_epoch: Callable[[], None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._epoch = ""
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._epoch = self._changelog.epoch
        self._unlisten = self._changelog.listen(self._on_event)
        self._unlisten_epoch = self._changelog.on_epoch_change(self._epoch_changed)
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name="quantum-ws-heartbeat"
        )

    async def close(self) -> None:
        """Stop broadcasting and close every connection with 1001."""
        if self._closed:
            return
        self._closed = True
        if self._unlisten is not None:
            self._unlisten()
        if self._unlisten_epoch is not None:
            self._unlisten_epoch()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for conn in tuple(self._connections):
            self._terminate(conn, CLOSE_GOING_AWAY, "server shutting down")
        handlers = [conn.task for conn in self._connections if conn.task is not None]
        if handlers:
            await asyncio.wait(handlers, timeout=self._settings.close_timeout + 2.0)
        if self._heartbeat is not None:
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    def connections(self) -> list[ConnectionInfo]:
        now_wall, now_mono = time.time(), time.monotonic()
        return [conn.info(now_wall, now_mono) for conn in self._connections]

    # --- one connection ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade ``request`` and serve the connection until it closes.

        The receive loop lives here rather than in a helper coroutine: every suspended frame
        is kept for the life of the connection, and there may be 10,000 of them."""
        settings = self._settings
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(
            compress=settings.compression,
            max_msg_size=settings.max_message_size,
            autoping=False,
            timeout=settings.close_timeout,
        )
        if not ws.can_prepare(request).ok:
            return error_response(
                426,
                "upgrade_required",
                "this endpoint speaks WebSocket: send an upgrade request",
                {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
            )
        conn = _Connection(ws, float(settings.message_burst))
        self._connections[conn] = None
        self._metrics.connections.inc()
        try:
            await ws.prepare(request)
            conn.transport = request.transport
            conn.direct = not ws.compress
            conn.task = task = asyncio.current_task()
            assert task is not None
            try:
                while conn.close_request is None:
                    message = await ws.receive()
                    kind = message.type
                    if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.PING:
                        subscribe = self._on_message(conn, message)
                        if subscribe is not None:
                            await self._subscribe(conn, subscribe, request)
                        elif kind is WSMsgType.PING and conn.close_request is None:
                            await ws.pong(message.data)
                    elif kind is WSMsgType.PONG:
                        self._touch(conn, time.monotonic())
                    else:
                        if kind is WSMsgType.ERROR and isinstance(message.data, WebSocketError):
                            # e.g. 1009 (frame too big) or 1007 (invalid UTF-8), closed by aiohttp
                            self._metrics.dropped.labels(reason="protocol_error").inc()
                        break
            except asyncio.CancelledError:
                # _terminate cancels us to close; anyone else's cancel (shutdown) wins.
                if conn.close_request is None or task.uncancel() > 0:
                    raise
            if conn.close_request is not None:
                await self._close(conn, *conn.close_request)
        finally:
            conn.task = None
            self._forget(conn)
            self._metrics.connections.dec()
        return ws

    def _refusal(self, request: web.Request) -> web.Response | None:
        settings = self._settings
        retry = {"Retry-After": str(settings.retry_after)}
        if self._closed:
            return error_response(503, "unavailable", "the server is shutting down", retry)
        if len(self._connections) >= settings.max_connections:
            limit = settings.max_connections
            return error_response(
                503,
                "too_many_connections",
                f"too many WebSocket connections (limit {limit})",
                retry,
            )
        return None

    def _on_message(self, conn: _Connection, message: WSMessage) -> Subscribe | None:
        """Handle one text, binary or ping frame; a Subscribe is returned to be awaited."""
        if not self._admit(conn, time.monotonic()):
            return None
        kind = message.type
        if kind is WSMsgType.TEXT:
            parsed = _parse(message.data)
            if type(parsed) is Ping:
                self._count(self._received["Ping"])
                self._reply(conn, _PONG_PAYLOAD, _PONG_WIRE)
                self._count(self._sent_pong)
            elif isinstance(parsed, ProtocolError):
                self._count(self._received["invalid"])
                self._send_error(conn, parsed.code, parsed.message)
            elif isinstance(parsed, Subscribe):
                self._count(self._received["Subscribe"])
                return parsed
            else:
                self._count(self._received["Pong"])
        elif kind is WSMsgType.BINARY:
            self._count(self._received["invalid"])
            self._send_error(
                conn, ErrorCode.INVALID_MESSAGE, "binary frames are not accepted; send JSON text"
            )
        return None

    def _touch(self, conn: _Connection, now: float) -> None:
        """Record a sign of life at ``now``, refilling the rate-limit buckets up to it
        (``last_seen`` doubles as the buckets' clock)."""
        settings = self._settings
        elapsed = now - conn.last_seen
        if elapsed > 0:
            rate, burst = settings.messages_per_second, settings.message_burst
            conn.hard_tokens = min(2.0 * burst, conn.hard_tokens + elapsed * 2.0 * rate)
            conn.soft_tokens = min(float(burst), conn.soft_tokens + elapsed * rate)
        conn.last_seen = now

    def _admit(self, conn: _Connection, now: float) -> bool:
        """Token buckets: past ``messages_per_second``/``message_burst`` a message is refused
        with ``rate_limited``; past twice that the connection is closed."""
        self._touch(conn, now)
        conn.hard_tokens = hard = conn.hard_tokens - 1.0
        soft = conn.soft_tokens
        if hard < 0:
            self._metrics.dropped.labels(reason="rate_limited").inc()
            self._send_error(conn, ErrorCode.RATE_LIMITED, "too many messages; closing")
            self._terminate(conn, CLOSE_POLICY, "rate_limited")
            return False
        if soft >= 1.0:
            conn.soft_tokens = soft - 1.0
            return True
        rate, burst = self._settings.messages_per_second, self._settings.message_burst
        self._send_error(
            conn,
            ErrorCode.RATE_LIMITED,
            f"rate limit of {rate:g} messages/s (burst {burst}) exceeded; message ignored",
        )
        return False

    # --- subscribe and catch-up --------------------------------------------------------------

    async def _subscribe(self, conn: _Connection, message: Subscribe, request: web.Request) -> None:
        if not self._authorized(message.token, request):
            conn.auth_failures += 1
            self._send_error(conn, ErrorCode.UNAUTHORIZED, "missing or invalid token")
            if conn.auth_failures >= MAX_AUTH_FAILURES:
                self._metrics.dropped.labels(reason="unauthorized").inc()
                self._terminate(conn, CLOSE_POLICY, "unauthorized")
            return
        if conn.client_id is not None and self._subscribers.get(conn.client_id) is conn:
            del self._subscribers[conn.client_id]
        client_id = message.client_id
        previous = self._subscribers.get(client_id)
        if previous is not None and previous is not conn:
            self._metrics.dropped.labels(reason="replaced").inc()
            self._terminate(previous, CLOSE_REPLACED, "replaced")
        conn.client_id = client_id
        conn.filter = compile_patterns(message.patterns) if message.patterns else None
        conn.pending = []
        self._subscribers[client_id] = conn
        try:
            if conn.writer is not None:  # a re-subscribe: earlier frames go out first
                await asyncio.wait({conn.writer})
            epoch = self._changelog.epoch
            head = await self._changelog.head()
            replay = None
            if message.since is not None and message.since.epoch == epoch:
                replay = await self._changelog.replay(epoch, message.since.seq)
            ack = Ack(client_id, epoch, head, recovered=replay is not None).encode().encode()
            await self._send_now(conn, ack)
            self._sent_ack.inc()
            if replay is None:
                conn.last_seq = head
            else:
                conn.last_seq = message.since.seq if message.since is not None else 0
                path_filter = conn.filter
                for event in replay:
                    if conn.closing:
                        break
                    if event.seq <= conn.last_seq:
                        continue
                    if path_filter is None or path_filter.matches_any(
                        operation_paths(event.operation)
                    ):
                        await self._send_now(conn, event.frame.encode())
                        self._sent_operation.inc()
                        self._touch(conn, time.monotonic())  # it is reading: not stale
                    conn.last_seq = event.seq
        except (ConnectionError, RuntimeError):
            return  # the socket went away while we replayed; the receive loop ends next
        finally:
            pending, conn.pending = conn.pending, None
        if conn.closing:
            return
        for seq, payload, wire in pending or ():
            if seq > conn.last_seq:
                conn.last_seq = seq
                self._send(conn, payload, wire)

    def _authorized(self, token: str | None, request: web.Request) -> bool:
        """The Subscribe token if given, else ``?token=``, else ``Authorization: Bearer``.
        The request is only looked at when needed: its parsed query would otherwise stay
        cached for the life of the connection."""
        if token is not None or self._authenticate(None):
            return self._authenticate(token)
        return self._authenticate(request.query.get("token") or _bearer(request))

    async def _send_now(self, conn: _Connection, payload: bytes) -> None:
        """Write with backpressure (catch-up: only this client waits)."""
        if conn.cork is not None:
            self._uncork(conn)
        transport = conn.transport
        if conn.ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        if conn.direct and transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            transport.write(text_frame(payload))
        else:
            await conn.ws.send_frame(payload, WSMsgType.TEXT)

    # --- broadcast ---------------------------------------------------------------------------

    def _on_event(self, event: ChangeEvent) -> None:
        """Listener of the change log: collect the events of one loop iteration (a group
        commit hands over several at once) and broadcast them together right after."""
        burst = self._burst
        burst.append(event)
        if len(burst) == 1:
            asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        events, self._burst = self._burst, []
        started = time.perf_counter()
        if all(event.epoch == self._epoch for event in events):
            sent = self._deliver(events)
        else:
            sent = 0
            for event in events:
                if event.epoch != self._epoch:
                    self._epoch_changed(event.epoch)
                sent += self._deliver([event])
        if sent:
            self._sent_operation.inc(sent)
        self._metrics.broadcast_duration.observe(time.perf_counter() - started)

    def _deliver(self, events: list[ChangeEvent]) -> int:
        """Hand ``events`` (in seq order) to every matching subscriber: frames are encoded once,
        and a subscriber that can take them now gets all of its frames in one write."""
        payloads = [event.frame.encode() for event in events]
        wires = [text_frame(payload) for payload in payloads]
        everything = wires[0] if len(wires) == 1 else b"".join(wires)
        first_seq, last_seq = events[0].seq, events[-1].seq
        selections: dict[PathFilter, tuple[list[int], bytes]] = {}
        high_water = WRITE_HIGH_WATER
        sent = 0
        for conn in tuple(self._subscribers.values()):
            path_filter = conn.filter
            if path_filter is None:
                chosen: list[int] | None = None
                frames = everything
                count = len(events)
            else:
                selection = selections.get(path_filter)
                if selection is None:
                    picked = [
                        index
                        for index, event in enumerate(events)
                        if path_filter.matches_any(operation_paths(event.operation))
                    ]
                    selection = (picked, b"".join([wires[index] for index in picked]))
                    selections[path_filter] = selection
                chosen, frames = selection
                count = len(chosen)
                if not count:
                    continue
            transport = conn.transport
            if (
                conn.last_seq < first_seq
                and conn.pending is None
                and conn.outbox is None
                and conn.cork is None
                and conn.direct
                and transport is not None
                and not conn.closing
                and not conn.ws.closed
                and not transport.is_closing()
                and transport.get_write_buffer_size() <= high_water
            ):
                transport.write(frames)
                conn.last_seq = last_seq
                sent += count
                continue
            for index in range(len(events)) if chosen is None else chosen:
                sent += self._deliver_one(conn, events[index].seq, payloads[index], wires[index])
        return sent

    def _deliver_one(self, conn: _Connection, seq: int, payload: bytes, wire: bytes) -> int:
        """The careful path: a subscriber catching up, backed up, or seeing a seq again."""
        pending = conn.pending
        if pending is not None:
            if len(pending) >= self._settings.send_buffer:
                self._drop_slow(conn)
            else:
                pending.append((seq, payload, wire))
            return 0
        if seq <= conn.last_seq:
            return 0
        conn.last_seq = seq
        self._send(conn, payload, wire)
        return 1

    def _epoch_changed(self, epoch: str) -> None:
        """The journal was reset under live connections: seq restarts, clients must resync."""
        if epoch == self._epoch:
            return
        self._epoch = epoch
        for conn in tuple(self._subscribers.values()):
            conn.last_seq = 0
            self._send_error(
                conn,
                ErrorCode.RESYNC_REQUIRED,
                f"the journal changed (new epoch {epoch}); reconcile by listing",
            )

    # --- send path ---------------------------------------------------------------------------

    def _send(self, conn: _Connection, payload: bytes, wire: bytes) -> None:
        """Queue one message without waiting; drops the client if its outbox is full."""
        if conn.closing:
            return
        if conn.cork is not None:
            self._uncork(conn)
        outbox = conn.outbox
        if outbox is None:
            transport = conn.transport
            if transport is None or conn.ws.closed or transport.is_closing():
                return
            if conn.direct and transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
                transport.write(wire)
                return
            outbox = conn.outbox = deque()
        elif len(outbox) >= self._settings.send_buffer:
            self._drop_slow(conn)
            return
        outbox.append(payload)
        if conn.writer is None:
            conn.writer = asyncio.get_running_loop().create_task(self._drain(conn))

    def _reply(self, conn: _Connection, payload: bytes, wire: bytes) -> None:
        """Send a reply from the receive loop; replies to one burst of reads share one write."""
        cork = conn.cork
        if cork is None:
            conn.cork = [(payload, wire)]
            asyncio.get_running_loop().call_soon(self._uncork, conn)
        else:
            cork.append((payload, wire))
            if len(cork) >= 256:
                self._uncork(conn)

    def _uncork(self, conn: _Connection) -> None:
        cork, conn.cork = conn.cork, None
        if not cork or conn.closing:
            return
        transport = conn.transport
        if (
            len(cork) > 1
            and conn.outbox is None
            and conn.direct
            and transport is not None
            and not conn.ws.closed
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_HIGH_WATER
        ):
            transport.write(b"".join([wire for _, wire in cork]))
            return
        for payload, wire in cork:
            self._send(conn, payload, wire)

    def _count(self, counter: Any) -> None:
        """Increment a counter child soon: one ``inc`` per burst instead of one per message."""
        deferred = self._deferred_counts
        if not deferred:
            asyncio.get_running_loop().call_soon(self._flush_counts)
        deferred[counter] = deferred.get(counter, 0) + 1

    def _flush_counts(self) -> None:
        deferred, self._deferred_counts = self._deferred_counts, {}
        for counter, amount in deferred.items():
            counter.inc(amount)

    async def _drain(self, conn: _Connection) -> None:
        ws = conn.ws
        try:
            while conn.outbox:
                await ws.send_frame(conn.outbox.popleft(), WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            pass  # closed under us; the receive loop sees it too
        finally:
            conn.outbox = None
            conn.writer = None

    def _send_error(self, conn: _Connection, code: ErrorCode, message: str) -> None:
        payload = Error(message, code).encode().encode()
        self._reply(conn, payload, text_frame(payload))
        self._sent_error.inc()
        self._metrics.errors.labels(code=str(code)).inc()

    def _drop_slow(self, conn: _Connection) -> None:
        if conn.closing:
            return
        self._metrics.dropped.labels(reason="slow").inc()
        self._log.info("dropping slow websocket client", client_id=conn.client_id, peer=conn.peer)
        conn.outbox = conn.cork = None  # release what it could not read
        if conn.writer is not None:
            conn.writer.cancel()
        transport = conn.transport
        if transport is not None and not transport.is_closing() and not conn.ws.closed:
            error = Error("too many unsent messages; reconnect and resume", ErrorCode.TOO_SLOW)
            transport.write(text_frame(error.encode().encode()))  # best effort, behind its backlog
            self._sent_error.inc()
            self._metrics.errors.labels(code=str(ErrorCode.TOO_SLOW)).inc()
        self._terminate(conn, CLOSE_POLICY, "too_slow")

    # --- closing -----------------------------------------------------------------------------

    def _detach(self, conn: _Connection) -> None:
        """Stop delivering to ``conn`` (it is about to be closed); flush its last replies."""
        if conn.cork is not None:
            self._uncork(conn)
        conn.closing = True
        if conn.client_id is not None and self._subscribers.get(conn.client_id) is conn:
            del self._subscribers[conn.client_id]

    def _forget(self, conn: _Connection) -> None:
        self._detach(conn)
        self._connections.pop(conn, None)
        if conn.writer is not None:
            conn.writer.cancel()
        conn.outbox = None

    def _terminate(self, conn: _Connection, code: int, reason: str) -> None:
        """Have ``conn``'s own handler task close it with ``code``: interrupted if it is waiting,
        or on its way out of the receive loop if it is the caller. Closing from the handler task
        keeps aiohttp's close handshake intact (the client's close reply is awaited)."""
        if conn.closing:
            return
        self._detach(conn)
        conn.close_request = (code, reason)
        task = conn.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        transport = conn.transport
        # A client dropped for not reading will not answer the close frame queued behind its
        # backlog any time soon: do not hold its buffers for the whole close timeout.
        wait = _SLOW_CLOSE_WAIT if reason == "too_slow" else self._settings.close_timeout + 1.0
        try:
            async with asyncio.timeout(wait):
                await conn.ws.close(code=code, message=reason.encode(), drain=False)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            # A peer that stopped reading never lets a graceful close flush: cut it off.
            if transport is not None and transport.get_write_buffer_size() > 0:
                transport.abort()

    # --- heartbeat and cleanup ---------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Each connection is checked once per round (``heartbeat_interval``, or a third of the
        timeout if shorter); a round is spread over ``_HEARTBEAT_SLICES`` ticks so that 10,000
        connections are not all pinged, and do not all answer, at the same moment."""
        settings = self._settings
        round_time = min(settings.heartbeat_interval, settings.heartbeat_timeout / 3.0)
        next_cleanup = time.monotonic() + settings.cleanup_interval
        tick = 0
        while True:
            await asyncio.sleep(round_time / _HEARTBEAT_SLICES)
            now = time.monotonic()
            self._check_heartbeats(now, tick % _HEARTBEAT_SLICES)
            tick += 1
            if now >= next_cleanup:
                next_cleanup = now + settings.cleanup_interval
                self._cleanup()

    def _check_heartbeats(self, now: float, part: int) -> None:
        interval, timeout = self._settings.heartbeat_interval, self._settings.heartbeat_timeout
        for conn in tuple(self._connections)[part::_HEARTBEAT_SLICES]:
            transport = conn.transport
            if conn.closing or transport is None:
                continue
            quiet = now - conn.last_seen
            if quiet >= timeout:
                self._metrics.dropped.labels(reason="stale").inc()
                self._log.info("closing silent websocket client", client_id=conn.client_id)
                self._terminate(conn, CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout")
            elif quiet >= interval and not conn.ws.closed and not transport.is_closing():
                transport.write(_PING_FRAME)

    def _cleanup(self) -> None:
        """Forget connections whose socket is gone but whose handler has not noticed."""
        gone = [
            conn
            for conn in self._connections
            if conn.transport is not None and conn.transport.is_closing() and conn.writer is None
        ]
        for conn in gone:
            self._forget(conn)
        self._log.debug(
            "websocket cleanup",
            connections=len(self._connections),
            subscribed=len(self._subscribers),
            removed=len(gone),
        )


def _parse(data: str) -> ClientMessage | ProtocolError:
    try:
        return parse_client_message(data)
    except ProtocolError as exc:
        return exc


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None
