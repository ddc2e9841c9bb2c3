"""WsClient: the ``/ws`` subscription, kept alive for as long as the client runs.

- ``http(s)://`` server URLs become ``ws(s)://…/ws``;
- every (re)connection sends ``Subscribe`` with ``since`` = the last applied (epoch, seq), so the
  server replays what was missed (``recovered: true``) or says it cannot (``recovered: false``:
  the caller reconciles by listing);
- a ``Ping`` goes out whenever the client has been silent for ``ping_interval``; a connection
  from which nothing arrived for ``dead_after`` is declared dead and dropped;
- reconnection uses exponential backoff with jitter (and honours ``Retry-After`` on 503);
- operations whose paths are unsafe are not delivered as operations but as :class:`Refused`.

:meth:`WsClient.events` yields :data:`WsEvent` values; the caller decides what they mean.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import aiohttp

from quantum_file_sync.client.exit_codes import AuthFailed
from quantum_file_sync.client.remote import event_problem, unknown_kind
from quantum_file_sync.client.state import Cursor
from quantum_file_sync.client.urls import ws_url
from quantum_file_sync.operations import ChangeEvent

ACK_TIMEOUT = 10.0
_PING = json.dumps({"type": "Ping"})
_PONG = json.dumps({"type": "Pong"})


@dataclass(frozen=True, slots=True)
class Connected:
    epoch: str
    seq: int
    recovered: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``Error`` message that did not end the connection (e.g. ``resync_required``)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Refused:
    """An operation the client will not apply (unsafe path): only its seq is used."""

    epoch: str
    seq: int
    reason: str
    known: bool = True
    """False: an operation kind this client does not know, skipped without a warning."""


WsEvent: TypeAlias = Connected | ChangeEvent | Disconnected | ServerError | Refused


class DeadConnection(Exception):
    pass


class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random."""

    def __init__(
        self, base: float = 0.2, cap: float = 30.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return float(delay / 2 + self.rng() * delay / 2)

    def reset(self) -> None:
        self.attempt = 0


class WsClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        server: str,
        client_id: str,
        token: str | None,
        since: Callable[[], Cursor | None],
        *,
        ping_interval: float = 15.0,
        dead_after: float | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.session = session
        self.url = ws_url(server)
        self.client_id = client_id
        self.token = token
        self.since = since
        self.ping_interval = ping_interval
        self.dead_after = dead_after if dead_after is not None else 3 * ping_interval
        self.backoff = backoff or Backoff()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def subscribe_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "Subscribe", "client_id": self.client_id}
        since = self.since()
        if since is not None:
            message["since"] = {"epoch": since.epoch, "seq": since.seq}
        if self.token:
            message["token"] = self.token
        return message

    async def events(self) -> AsyncGenerator[WsEvent, None]:
        """Connect, subscribe and yield events forever; raises AuthFailed when the server
        refuses the token (retrying would not help)."""
        while True:
            retry_after: float | None = None
            try:
                async with self.session.ws_connect(
                    self.url, headers=self.headers, autoping=False, heartbeat=None
                ) as ws:
                    await ws.send_str(json.dumps(self.subscribe_message()))
                    connected = await self._ack(ws)
                    self.backoff.reset()
                    yield connected
                    async for event in self._read(ws):
                        yield event
                    reason = f"closed by the server (code {ws.close_code})"
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401:
                    raise AuthFailed(f"{self.url} refused the token") from None
                reason = f"handshake refused: {exc.status} {exc.message}"
                if exc.status == 503 and exc.headers is not None:
                    retry_after = _seconds(exc.headers.get("Retry-After"))
            except DeadConnection:
                reason = f"no message for {self.dead_after:g}s: connection presumed dead"
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
            delay = self.backoff.next()
            if retry_after is not None:
                delay = max(delay, retry_after)
            yield Disconnected(reason, delay)
            await asyncio.sleep(delay)

    async def _ack(self, ws: aiohttp.ClientWebSocketResponse) -> Connected:
        async with asyncio.timeout(ACK_TIMEOUT):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise aiohttp.ClientConnectionError(f"closed before Ack ({msg.type.name})")
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind == "Ack":
                    return Connected(str(data["epoch"]), int(data["seq"]), bool(data["recovered"]))
                if kind == "Error":
                    self._raise_if_fatal(data)
                    raise aiohttp.ClientConnectionError(f"server error: {data.get('message')}")
                if kind == "Ping":
                    await ws.send_str(_PONG)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[WsEvent]:
        loop = asyncio.get_running_loop()
        last_rx = last_tx = loop.time()
        while True:
            now = loop.time()
            if now - last_rx >= self.dead_after:
                raise DeadConnection
            if now - last_tx >= self.ping_interval:
                await ws.send_str(_PING)
                last_tx = now
            wait = min(last_tx + self.ping_interval, last_rx + self.dead_after) - now
            try:
                msg = await ws.receive(timeout=max(wait, 0.01))
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.PONG):
                    last_rx = loop.time()
                    continue
                return
            last_rx = loop.time()
            data = json.loads(msg.data)
            if not isinstance(data, dict):
                continue
            kind = data.get("type")
            if kind == "FileOperation":
                yield _operation(data)
            elif kind == "Ping":
                await ws.send_str(_PONG)
                last_tx = loop.time()
            elif kind == "Error":
                self._raise_if_fatal(data)
                yield ServerError(str(data.get("code")), str(data.get("message")))

    def _raise_if_fatal(self, data: dict[str, Any]) -> None:
        if data.get("code") == "unauthorized":
            raise AuthFailed(f"{self.url}: {data.get('message') or 'unauthorized'}")


def _operation(data: dict[str, Any]) -> ChangeEvent | Refused | ServerError:
    seq, epoch = data.get("seq"), data.get("epoch")
    if unknown_kind(data) and isinstance(seq, int) and isinstance(epoch, str):
        return Refused(epoch, seq, "unknown operation kind", known=False)
    try:
        event = ChangeEvent.from_message(data)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        if isinstance(seq, int) and isinstance(epoch, str):
            return Refused(epoch, seq, f"malformed operation: {exc!r}")
        return ServerError("invalid_message", f"malformed FileOperation: {exc!r}")
    problem = event_problem(event)
    if problem is not None:
        return Refused(event.epoch, event.seq, f"unsafe path {problem}")
    return event


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
