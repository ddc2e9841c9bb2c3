"""Sync latency: a file written in folder A → identical content in folder B.

    .venv/bin/python bench/sync_latency.py [--writes 60] [--size 4096] [--json]

One ``quantum`` server (file_sync, in-memory broker, SQLite journal) and two
``realtime-sync-client --realtime`` processes, all real processes on 127.0.0.1. Each write goes to
a new file in A (written in place, as an editor without atomic save would); the clock stops when
B holds exactly those bytes. Reports p50/p95/max over all writes; target p95 <= 300 ms. Prints a
markdown table; ``--json`` also writes ``bench/results/sync_latency.json`` (gitignored).

The helpers (server, clients, free port) are shared with ``bench/initial_sync.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import file_sync_config, free_port, stop_process, write_results

BIN = Path(sys.executable).parent
TARGET_P95_MS = 300.0


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def quantum_server(root: Path, workdir: Path, **options: Any) -> Iterator[str]:
    """A file_sync server on a free port serving ``root`` (extra handler ``options``); yields
    its URL."""
    port = free_port()
    config = file_sync_config(port, root, **options)
    config_path = workdir / "quantum.json"
    config_path.write_text(json.dumps(config))
    with (workdir / "quantum.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "quantum"), "--config", str(config_path)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/list?recursive=false&limit=1", timeout=120)
        yield url
    finally:
        stop_process(proc, 20)


def client_command(server: str, folder: Path, *args: str) -> list[str]:
    return [
        str(BIN / "realtime-sync-client"),
        "--server",
        server,
        "--local-path",
        str(folder),
        *args,
    ]


@contextmanager
def realtime_client(server: str, folder: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``--realtime`` client, yielded once its initial sync completed."""
    folder.mkdir(exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(client_command(server, folder, "--realtime"), stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "initial sync complete" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"client on {folder} did not start:\n{log.read_text()}")
            time.sleep(0.02)
        yield proc
    finally:
        stop_process(proc, 20)


def wait_for_content(path: Path, data: bytes, timeout: float) -> float:
    """Poll (1 ms) until ``path`` holds ``data``; returns the time it did."""
    deadline = time.perf_counter() + timeout
    size = len(data)
    while True:
        now = time.perf_counter()
        try:
            if os.stat(path).st_size == size and path.read_bytes() == data:
                return now
        except FileNotFoundError:
            pass
        if now > deadline:
            raise TimeoutError(f"{path} never got the expected content")
        time.sleep(0.001)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def measure(writes: int, size: int, pause: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quantum-latency-") as tmp:
        base = Path(tmp)
        root = base / "root"
        root.mkdir()
        with (
            quantum_server(root, base) as server,
            realtime_client(server, base / "a", base / "a.log"),
            realtime_client(server, base / "b", base / "b.log"),
        ):
            latencies: list[float] = []
            for n in range(writes):
                data = os.urandom(size)
                start = time.perf_counter()
                (base / "a" / f"latency-{n:04d}.bin").write_bytes(data)
                seen = wait_for_content(base / "b" / f"latency-{n:04d}.bin", data, 30)
                latencies.append((seen - start) * 1000)
                time.sleep(pause)
    return {
        "writes": writes,
        "size": size,
        "p50_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 0.95),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "target_p95_ms": TARGET_P95_MS,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--size", type=int, default=4096, help="bytes per write")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between writes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(max(args.writes, 50), args.size, args.pause)
    ok = result["p95_ms"] <= TARGET_P95_MS
    print("| writes | size | p50 | p95 | max | target p95 |")
    print("|---:|---:|---:|---:|---:|---|")
    print(
        f"| {result['writes']} | {result['size']} B | {result['p50_ms']:.0f} ms "
        f"| {result['p95_ms']:.0f} ms | {result['max_ms']:.0f} ms "
        f"| ≤ {TARGET_P95_MS:.0f} ms {'✅' if ok else '❌'} |"
    )
    if args.json:
        write_results("sync_latency", result)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
