"""WebSocket load-generator worker for bench/ws_fanout.py (one process, many connections).

Modes:

- ``--connections K [--subscribe]``: open K connections (sending Subscribe and waiting for the Ack
  when ``--subscribe``), print ``{"ready": K}``, then obey JSON commands on stdin:
  ``{"cmd": "reset"}`` (zero the counters), ``{"cmd": "report"}`` (print counts, first/last
  receive time and the latencies seen since the reset), ``{"cmd": "quit"}``.
- ``--ingest N``: one connection pipelining N ``{"type":"Ping"}`` messages; prints the rate of
  ``{"type":"Pong"}`` answers.

Frames are parsed by hand on an asyncio Protocol so that the client side costs as little as
possible per message: the numbers should be the server's, not this process's. A message carrying
``lat-<id>-<unix ns>`` (a path or a field) yields one latency sample: receive time minus that
timestamp, both taken on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import selectors
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

LATENCY_MARK = re.compile(rb"lat-(\d+)-(\d+)")
PING = b'{"type":"Ping"}'
PONG_FRAME = b'\x81\x0f{"type":"Pong"}'


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame with a zero mask key (valid, no XOR work)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


def upgrade_request(host: str, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[tuple[int, float]] = []
        """(change id, seconds from the trigger's timestamp to receipt)"""


class Client(asyncio.Protocol):
    """One WebSocket connection: handshake, optional Subscribe, then count incoming frames."""

    def __init__(
        self, request: bytes, subscribe: bytes | None, stats: Stats, ready: asyncio.Future[None]
    ) -> None:
        self.request = request
        self.subscribe = subscribe
        self.stats = stats
        self.ready = ready
        self.buffer = b""
        self.upgraded = False
        self.acked = subscribe is None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(buffer[:200].decode(errors="replace")))
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            if self.subscribe is not None:
                assert self.transport is not None
                self.transport.write(self.subscribe)
            else:
                self.ready.set_result(None)
        now = time.time_ns()
        stats = self.stats
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = buffer[pos] & 0x0F
            if opcode == 0x9 and self.transport is not None:  # answer protocol pings
                self.transport.write(client_frame(buffer[start:end], 0xA))
            elif opcode == 0x1:
                if not self.acked:
                    self.acked = True
                    self.ready.set_result(None)
                else:
                    if stats.count == 0:
                        stats.first = now / 1e9
                    stats.count += 1
                    stats.last = now / 1e9
                    mark = LATENCY_MARK.search(buffer, start, end)
                    if mark is not None:
                        change = int(mark.group(1))
                        stats.latencies.append((change, (now - int(mark.group(2))) / 1e9))
            pos = end
        self.buffer = buffer[pos:]


async def run_connections(url: str, count: int, subscribe: bool, prefix: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = upgrade_request(f"{host}:{port}", parts.path or "/ws")
    loop = asyncio.get_running_loop()
    stats = Stats()
    transports: list[asyncio.BaseTransport] = []
    gate = asyncio.Semaphore(100)

    async def open_one(index: int) -> None:
        message = json.dumps({"type": "Subscribe", "client_id": f"{prefix}-{index}"}).encode()
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: Client(request, client_frame(message) if subscribe else None, stats, ready),
                host,
                port,
            )
            transports.append(transport)
            await asyncio.wait_for(ready, 60)

    await asyncio.gather(*(open_one(i) for i in range(count)))
    stats.reset()
    print(json.dumps({"ready": count}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)["cmd"]
        if command == "reset":
            stats.reset()
            print(json.dumps({"ok": True}), flush=True)
        elif command == "report":
            report: dict[str, Any] = {
                "count": stats.count,
                "first": stats.first,
                "last": stats.last,
                "latencies": stats.latencies,
            }
            print(json.dumps(report), flush=True)
        elif command == "quit":
            break
    for transport in transports:
        transport.close()


def run_ingest(url: str, messages: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with socket.create_connection((host, port)) as sock:
        sock.sendall(upgrade_request(f"{host}:{port}", parts.path or "/ws"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        received = head.split(b"\r\n\r\n", 1)[1]
        blob = client_frame(PING) * messages
        expected = len(PONG_FRAME) * messages
        started = time.perf_counter()
        sent = 0
        sock.setblocking(False)
        chunks = [received]
        got = len(received)
        # Write and read at once, without threads: never let either side's buffer deadlock.
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while got < expected:
                for _, events in selector.select(timeout=30):
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(1 << 20)
                        if not chunk:
                            raise ConnectionError("server closed the connection")
                        chunks.append(chunk)
                        got += len(chunk)
                    if events & selectors.EVENT_WRITE and sent < len(blob):
                        with contextlib.suppress(BlockingIOError):
                            sent += sock.send(blob[sent : sent + (1 << 20)])
                        if sent >= len(blob):
                            selector.modify(sock, selectors.EVENT_READ)
        elapsed = time.perf_counter() - started
        pongs = b"".join(chunks).count(PONG_FRAME)
    print(json.dumps({"messages": messages, "pongs": pongs, "seconds": elapsed}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=0)
    parser.add_argument("--subscribe", action="store_true")
    parser.add_argument("--prefix", default="w")
    parser.add_argument("--ingest", type=int, default=0)
    args = parser.parse_args()
    if args.ingest:
        run_ingest(args.url, args.ingest)
    else:
        asyncio.run(run_connections(args.url, args.connections, args.subscribe, args.prefix))


if __name__ == "__main__":
    main()
