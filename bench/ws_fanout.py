"""WebSocket fan-out benchmark: Quantum's ``/ws`` next to a bare aiohttp broadcast server.

Run: ``.venv/bin/python bench/ws_fanout.py [--quick]``

Both servers run as separate processes and are measured in the same run by the same load
generator (``bench/ws_loadgen.py`` worker processes, at most 2,500 connections each):

- Quantum: the real ``quantum`` process serving a ``file_sync`` root (SQLite journal, disk watcher
  on); changes are made through its HTTP API (``PUT /api/files/...``), so every broadcast pays for
  a real upload, fsync and journal commit before the fan-out.
- bare: one aiohttp process; ``POST /broadcast`` sends the request body to every WebSocket
  (``for ws in clients: await ws.send_str(body)``), and ``{"type":"Ping"}`` is answered with a Pong.

Measured: (a) RSS per idle subscribed connection, (b) deliveries/s fanning out to 1,000
subscribers, (c) p99 latency of one change to 1,000 and 10,000 subscribers (the trigger stamps
the send time into the message, subscribers on the same machine stamp the receive time),
next to the server-side time of that fan-out (Quantum's
``quantum_ws_broadcast_duration_seconds``; the bare server times its own loop), because on a
small machine the client processes draining thousands of sockets dominate the observed latency,
(d) messages/s ingested on one connection (200,000 pipelined Pings, Pongs counted),
(e) upload and download of a 1 GiB file through the API against ``cp`` + ``sha256sum``.
Targets: (a) <= 16 KiB, (b) >= 0.9x bare, (c) p99 <= 25 ms / 250 ms, (d) >= 100,000/s,
(e) >= 0.5x. Quantum's config raises the per-client rate limit (the ingest test sends far more
than the default 50/s) and ``send_buffer`` (benchmark clients share two cores with the server,
and the default would rightly drop them as slow consumers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from common import file_sync_config, free_port, stop_process, wait_for_port, wait_or_kill

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "ws_loadgen.py"
PER_WORKER = 2500
TRIGGER_CONCURRENCY = 8


@dataclass
class Scale:
    idle_connections: int
    fanout_subscribers: int
    fanout_seconds: float
    latency_rounds: int
    ingest_messages: int
    file_size: int


FULL = Scale(10_000, 1_000, 5.0, 40, 200_000, 1 << 30)
QUICK = Scale(2_000, 1_000, 2.0, 15, 50_000, 128 << 20)


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    root: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        stop_process(self.process)


def start_quantum(workdir: Path) -> Server:
    port = free_port()
    root = workdir / "root"
    root.mkdir(parents=True)
    config = file_sync_config(
        port,
        root,
        max_upload_size="4GiB",
        limits={
            "max_connections": 20_000,
            "messages_per_second": 1_000_000_000,
            "message_burst": 1_000_000_000,
            "send_buffer": 65_536,
        },
    )
    config_path = workdir / "quantum.json"
    config_path.write_text(json.dumps(config, indent=2))
    quantum = Path(sys.executable).with_name("quantum")
    log = (workdir / "quantum.log").open("wb")
    process = subprocess.Popen(
        [str(quantum), "--config", str(config_path)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    wait_for_port(port)
    return Server("Quantum", process, port, root)


def start_bare() -> Server:
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)])
    wait_for_port(port)
    return Server("bare aiohttp", process, port)


def serve_bare(port: int) -> None:
    """The baseline: the simplest aiohttp broadcast server, doing nothing else."""
    from aiohttp import WSMsgType, web

    clients: set[web.WebSocketResponse] = set()

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT and message.data == '{"type":"Ping"}':
                    await ws.send_str('{"type":"Pong"}')
        finally:
            clients.discard(ws)
        return ws

    async def broadcast(request: web.Request) -> web.Response:
        body = await request.text()
        started = time.perf_counter()
        for ws in list(clients):
            await ws.send_str(body)
        return web.json_response({"seconds": time.perf_counter() - started})

    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.router.add_post("/broadcast", broadcast)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- load generator workers ------------------------------------------------------------------


@dataclass
class Workers:
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def command(self, cmd: str) -> list[dict[str, Any]]:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(json.dumps({"cmd": cmd}) + "\n")
            process.stdin.flush()
        replies = []
        for process in self.processes:
            assert process.stdout is not None
            replies.append(json.loads(process.stdout.readline()))
        return replies

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    process.stdin.flush()
                except BrokenPipeError:
                    pass
        for process in self.processes:
            wait_or_kill(process, 20)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()


@contextmanager
def workers(server: Server, connections: int, subscribe: bool) -> Iterator[Workers]:
    group = Workers()
    try:
        remaining, index = connections, 0
        while remaining > 0:
            count = min(PER_WORKER, remaining)
            args = [sys.executable, str(LOADGEN), "--url", server.url + "/ws"]
            args += ["--connections", str(count), "--prefix", f"w{index}"]
            if subscribe:
                args.append("--subscribe")
            group.processes.append(
                subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
            remaining -= count
            index += 1
        for process in group.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("a load generator failed to connect")
            assert "ready" in json.loads(line)
        yield group
    finally:
        group.stop()


# --- triggers --------------------------------------------------------------------------------


def bare_message(path: str, seq: int) -> str:
    """A FileOperation of the size Quantum sends, so both servers move the same bytes."""
    metadata = {
        "path": path,
        "size": 5,
        "hash": "0" * 64,
        "modified": "2026-01-01T00:00:00Z",
        "is_directory": False,
    }
    return json.dumps(
        {
            "type": "FileOperation",
            "operation": {"Update": {"metadata": metadata}},
            "source_client": None,
            "seq": seq,
            "epoch": "0" * 32,
            "op_id": "0" * 32,
        },
        separators=(",", ":"),
    )


async def trigger(
    session: aiohttp.ClientSession, server: Server, path: str, seq: int
) -> float | None:
    """Make one change; the bare server also says how long its broadcast loop took."""
    if server.root is not None:
        async with session.put(f"{server.url}/api/files/{path}", data=b"bench") as reply:
            assert reply.status in (200, 201), await reply.text()
            return None
    body = bare_message(path, seq)
    async with session.post(f"{server.url}/broadcast", data=body) as reply:
        assert reply.status == 200
        return float((await reply.json())["seconds"])


async def flood(server: Server, seconds: float) -> int:
    """Changes as fast as the server takes them (a few in flight) for ``seconds``."""
    sent = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def loop(lane: int) -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                sent += 1
                await trigger(session, server, f"tp/lane{lane}-{sent % 16}.txt", sent)

        await asyncio.gather(*(loop(lane) for lane in range(TRIGGER_CONCURRENCY)))
    return sent


async def stamped_changes(server: Server, rounds: int, gap: float) -> float:
    """``rounds`` changes stamped with their send time; returns the server-side time per
    broadcast (bare: its own timing; Quantum: its broadcast-duration histogram)."""
    async with aiohttp.ClientSession() as session:
        before = await broadcast_histogram(session, server)
        loop_seconds = 0.0
        for index in range(rounds):
            taken = await trigger(session, server, f"lat/lat-{index}-{time.time_ns()}.txt", index)
            loop_seconds += taken or 0.0
            await asyncio.sleep(gap)
        after = await broadcast_histogram(session, server)
    if server.root is None:
        return loop_seconds / rounds
    return (after[0] - before[0]) / max(1.0, after[1] - before[1])


async def broadcast_histogram(
    session: aiohttp.ClientSession, server: Server
) -> tuple[float, float]:
    """(sum, count) of quantum_ws_broadcast_duration_seconds; zeros for the bare server."""
    if server.root is None:
        return 0.0, 0.0
    async with session.get(f"{server.url}/metrics") as reply:
        text = await reply.text()
    values = {}
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(f"quantum_ws_broadcast_duration_seconds{suffix} "):
                values[suffix] = float(line.split()[1])
    return values["_sum"], values["_count"]


def settle(group: Workers, expected: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Reports once every expected delivery arrived (or deliveries stopped coming)."""
    deadline = time.monotonic() + timeout
    previous = -1
    while True:
        reports = group.command("report")
        total = sum(r["count"] for r in reports)
        if total >= expected or total == previous or time.monotonic() > deadline:
            return reports
        previous = total
        time.sleep(0.5)


# --- measurements ----------------------------------------------------------------------------


def latency(server: Server, group: Workers, subscribers: int, rounds: int) -> dict[str, float]:
    group.command("reset")
    gap = 0.15 if subscribers <= 1000 else 0.6
    server_side = asyncio.run(stamped_changes(server, rounds, gap))
    reports = settle(group, subscribers * rounds)
    samples = sorted(seconds for r in reports for _, seconds in r["latencies"])
    if not samples:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "missing": 1.0}
    return {
        "server": server_side,
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "max": samples[-1],
        "missing": 1 - len(samples) / (subscribers * rounds),
    }


def fanout_rate(
    server: Server, group: Workers, subscribers: int, seconds: float
) -> dict[str, float]:
    group.command("reset")
    changes = asyncio.run(flood(server, seconds))
    reports = settle(group, subscribers * changes)
    total = sum(r["count"] for r in reports)
    first = min(r["first"] for r in reports if r["count"])
    last = max(r["last"] for r in reports if r["count"])
    return {
        "deliveries_per_s": total / (last - first),
        "changes_per_s": changes / (last - first),
        "missing": 1 - total / (subscribers * changes),
    }


def ingest_rate(server: Server, messages: int) -> float:
    output = subprocess.run(
        [sys.executable, str(LOADGEN), "--url", server.url + "/ws", "--ingest", str(messages)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    result = json.loads(output)
    assert result["pongs"] == messages, result
    return float(messages / result["seconds"])


def big_file(server: Server, workdir: Path, size: int) -> dict[str, float]:
    source = workdir / "big.bin"
    with source.open("wb") as out:
        chunk = os.urandom(1 << 20)
        for index in range(size >> 20):
            out.write(index.to_bytes(8, "big") + chunk[8:])
    copy = workdir / "copy.bin"
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(copy)], check=True)
    expected = subprocess.run(
        ["sha256sum", str(copy)], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    baseline = time.perf_counter() - started
    copy.unlink()
    url = f"{server.url}/api/files/big.bin"
    started = time.perf_counter()
    upload = subprocess.run(
        ["curl", "-sS", "-T", str(source), "-o", "-", url],
        check=True,
        capture_output=True,
        text=True,
    )
    upload_seconds = time.perf_counter() - started
    assert json.loads(upload.stdout)["hash"] == expected, upload.stdout
    downloaded = workdir / "downloaded.bin"
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "-o", str(downloaded), url], check=True)
    download_seconds = time.perf_counter() - started
    got = subprocess.run(
        ["sha256sum", str(downloaded)], check=True, capture_output=True, text=True
    ).stdout.split()[0]
    assert got == expected
    for path in (source, downloaded):
        path.unlink()
    return {"baseline": baseline, "upload": upload_seconds, "download": download_seconds}


# --- the run ---------------------------------------------------------------------------------


def measure(server: Server, scale: Scale) -> dict[str, Any]:
    result: dict[str, Any] = {}
    subscribe = server.root is not None  # the bare server has no Subscribe/Ack
    with workers(server, 200, subscribe):
        pass  # warm-up: the first connections allocate pools that stay
    time.sleep(1.0)
    before = server.rss()
    count = scale.idle_connections
    print(f"[{server.name}] memory with {count:,} idle subscribers", flush=True)
    with workers(server, count, subscribe) as group:
        time.sleep(2.0)
        result["memory"] = (server.rss() - before) / count
        print(f"[{server.name}] latency to {count:,} subscribers", flush=True)
        result["latency_big"] = latency(server, group, count, max(5, scale.latency_rounds // 4))
    time.sleep(2.0)
    count = scale.fanout_subscribers
    with workers(server, count, subscribe) as group:
        print(f"[{server.name}] fan-out to {count:,} subscribers", flush=True)
        result["fanout"] = fanout_rate(server, group, count, scale.fanout_seconds)
        time.sleep(1.0)
        print(f"[{server.name}] latency to {count:,} subscribers", flush=True)
        result["latency_small"] = latency(server, group, count, scale.latency_rounds)
    print(f"[{server.name}] ingest on one connection", flush=True)
    result["ingest"] = ingest_rate(server, scale.ingest_messages)
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(
    quantum: dict[str, Any], bare: dict[str, Any], files: dict[str, float] | None, scale: Scale
) -> str:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    n_idle, n_fan = scale.idle_connections, scale.fanout_subscribers
    rows = [
        "| measurement | Quantum | bare aiohttp | Quantum / bare | target |",
        "|---|---:|---:|---:|---|",
        f"| (a) RSS per idle subscribed connection ({n_idle:,}) | "
        f"{quantum['memory'] / 1024:.1f} KiB | {bare['memory'] / 1024:.1f} KiB | "
        f"{ratio(quantum['memory'], bare['memory'])} | <= 16 KiB |",
        f"| (b) deliveries/s to {n_fan:,} subscribers | "
        f"{quantum['fanout']['deliveries_per_s']:,.0f} | {bare['fanout']['deliveries_per_s']:,.0f} "
        f"| {ratio(quantum['fanout']['deliveries_per_s'], bare['fanout']['deliveries_per_s'])} "
        "| >= 0.9x |",
        f"| (b) changes/s behind it | {quantum['fanout']['changes_per_s']:,.0f} | "
        f"{bare['fanout']['changes_per_s']:,.0f} | | |",
    ]
    for key, count, target in (
        ("latency_small", n_fan, "p99 <= 25 ms"),
        ("latency_big", n_idle, "p99 <= 250 ms" if n_idle >= 10_000 else "(10,000: 250 ms)"),
    ):
        q, b = quantum[key], bare[key]
        rows.append(
            f"| (c) latency of one change to {count:,}: p50 / p99 / max | "
            f"{ms(q['p50'])} / {ms(q['p99'])} / {ms(q['max'])} | "
            f"{ms(b['p50'])} / {ms(b['p99'])} / {ms(b['max'])} | "
            f"{ratio(q['p99'], b['p99'])} (p99) | {target} |"
        )
        rows.append(
            f"| (c) server-side fan-out of one change to {count:,} (mean) | {ms(q['server'])} | "
            f"{ms(b['server'])} | {ratio(q['server'], b['server'])} | |"
        )
    rows.append(
        f"| (d) messages/s ingested on one connection (Ping → Pong) | {quantum['ingest']:,.0f} | "
        f"{bare['ingest']:,.0f} | {ratio(quantum['ingest'], bare['ingest'])} | >= 100,000/s |"
    )
    if files is not None:
        size = f"{scale.file_size / (1 << 30):g} GiB"
        for key in ("upload", "download"):
            rows.append(
                f"| (e) {key} {size} via the API vs cp + sha256sum | {files[key]:.2f} s | "
                f"{files['baseline']:.2f} s (cp + sha256sum) | "
                f"{files['baseline'] / files[key]:.2f}x speed | >= 0.5x |"
            )
    missing = [
        f"{name} {key}: {value[key]['missing']:.1%} of deliveries missing"
        for name, value in (("Quantum", quantum), ("bare", bare))
        for key in ("fanout", "latency_small", "latency_big")
        if value[key]["missing"] > 0
    ]
    return "\n".join(rows + (["", *missing] if missing else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--skip-file", action="store_true", help="skip the 1 GiB file test")
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    scale = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="quantum-ws-bench-"))
    try:
        quantum_server = start_quantum(workdir / "quantum")
        try:
            quantum = measure(quantum_server, scale)
            files = None
            if not args.skip_file:
                print(f"[Quantum] {scale.file_size >> 20} MiB upload/download", flush=True)
                files = big_file(quantum_server, workdir, scale.file_size)
        finally:
            quantum_server.stop()
        bare_server = start_bare()
        try:
            bare = measure(bare_server, scale)
        finally:
            bare_server.stop()
        print()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        print(report(quantum, bare, files, scale))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
