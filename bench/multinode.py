"""Multi-node benchmark: the Redis broker against the embedded memory broker.

Run: ``.venv/bin/python bench/multinode.py [--quick] [--json]``

Starts its own ``redis-server`` (free port, persistence off) and real ``quantum`` processes, and
drives them with the WebSocket load generator of ``bench/ws_fanout.py`` (``ws_loadgen.py``
workers) and uploads through the HTTP API.

1. CPU per delivered operation: ``workers: 1`` with the memory broker (SQLite journal, the
   embedded default) against ``workers: 2`` with the Redis broker on the same port, N
   subscribers each. Two loads: *paced*, the same number of uploads per second for both (the
   same work, so the CPU per delivery compares like with like: the target, Redis/2 workers <=
   1.15x memory/1 worker), and *flood*, uploads as fast as the server takes them (deliveries/s;
   a saturated server batches more frames per write, so its CPU per delivery drops). Server CPU
   is the utime+stime of the Quantum processes (the supervisor and its workers) from
   ``/proc/<pid>/stat``, from the first upload until every delivery has arrived; redis-server's
   CPU is shown next to it but not counted. On a 2-core machine the load generator competes
   with the server for the cores, so deliveries/s measure the machine as much as Quantum.
2. Propagation latency. Subscribers on node A; each change is an upload stamped with the send
   time in its path, received time taken by the subscribers on the same machine. Compared: one
   node with the memory broker, and two Redis nodes with the upload made on A itself (within a
   node) or on B (across nodes). Target: across nodes adds <= 10 ms at p99.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import stop_process, write_results  # noqa: E402
from ws_fanout import (  # noqa: E402
    Server,
    Workers,
    flood,
    free_port,
    settle,
    trigger,
    wait_for_port,
    workers,
)

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scale:
    subscribers: int
    load_seconds: float
    paced_rate: float
    repeats: int
    latency_subscribers: int
    latency_rounds: int


FULL = Scale(1_000, 6.0, paced_rate=60, repeats=3, latency_subscribers=100, latency_rounds=300)
QUICK = Scale(300, 2.0, paced_rate=60, repeats=1, latency_subscribers=50, latency_rounds=60)


# --- processes -------------------------------------------------------------------------------


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """``(url, pid)`` of a throwaway redis-server."""
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    log.close()
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        stop_process(process, 10)


def quantum_config(port: int, root: Path, broker: dict[str, Any], workers: int) -> dict[str, Any]:
    handler = {
        "handler": "file_sync",
        "root": str(root),
        "enable_upload": True,
        "broker": broker,
        # As in ws_fanout.py: benchmark clients share the cores with the server, and the default
        # send buffer would rightly drop them as slow consumers.
        "limits": {"max_connections": 20_000, "send_buffer": 65_536},
    }
    route = {"match": [{"matcher": "path", "paths": ["/api/*", "/ws"]}], "handle": [handler]}
    server = {"listen": [f"127.0.0.1:{port}"], "routes": [route]}
    return {
        "admin": {"disabled": True},
        "workers": workers,
        "apps": {"http": {"servers": {"bench": server}}},
    }


def start_quantum(
    workdir: Path, name: str, root: Path, broker: dict[str, Any], workers: int = 1
) -> Server:
    port = free_port()
    config_path = workdir / f"{name}.json"
    config_path.write_text(json.dumps(quantum_config(port, root, broker, workers), indent=2))
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    quantum = Path(sys.executable).with_name("quantum")
    process = subprocess.Popen(
        [str(quantum), "--config", str(config_path)], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    wait_for_port(port)
    deadline = time.monotonic() + 30
    while log_path.read_text(errors="replace").count('"event": "serving"') < workers:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{name} did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    return Server(name, process, port, root)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of a ``workers: N`` supervisor)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += process_tree(int(child))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICK


# --- measurements ----------------------------------------------------------------------------


async def paced(server: Server, rate: float, seconds: float, lanes: int = 4) -> int:
    """``rate`` changes per second for ``seconds`` (uploads on a fixed schedule)."""
    sent = 0
    start = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def lane(index: int) -> None:
            nonlocal sent
            for step in itertools.count():
                due = (step * lanes + index) / rate
                if due >= seconds:
                    return
                await asyncio.sleep(max(0.0, start + due - time.monotonic()))
                sent += 1
                await trigger(session, server, f"tp/lane{index}-{step % 16}.txt", sent)

        await asyncio.gather(*(lane(index) for index in range(lanes)))
    return sent


def cpu_per_delivery(
    server: Server,
    group: Workers,
    subscribers: int,
    load: Callable[[], Coroutine[Any, Any, int]],
    redis_pid: int | None,
) -> dict[str, float]:
    """Run ``load`` against ``server`` (``group`` subscribed to it) and account the CPU."""
    pids = process_tree(server.process.pid)
    group.command("reset")
    cpu_before = cpu_seconds(pids)
    redis_before = cpu_seconds([redis_pid]) if redis_pid else 0.0
    changes = asyncio.run(load())
    reports = settle(group, subscribers * changes)
    cpu = cpu_seconds(pids) - cpu_before
    redis_cpu = (cpu_seconds([redis_pid]) - redis_before) if redis_pid else 0.0
    delivered = sum(r["count"] for r in reports)
    first = min(r["first"] for r in reports if r["count"])
    last = max(r["last"] for r in reports if r["count"])
    return {
        "processes": len(pids),
        "changes": changes,
        "deliveries": delivered,
        "deliveries_per_s": delivered / (last - first),
        "server_cpu_s": cpu,
        "redis_cpu_s": redis_cpu,
        "cpu_us_per_delivery": cpu / delivered * 1e6,
    }


async def stamped_uploads(target: Server, rounds: int, gap: float) -> None:
    async with aiohttp.ClientSession() as session:
        for index in range(rounds):
            path = f"lat/lat-{index}-{time.time_ns()}.txt"
            async with session.put(f"{target.url}/api/files/{path}", data=b"x") as reply:
                assert reply.status in (200, 201), await reply.text()
            await asyncio.sleep(gap)


def propagation(group: Workers, target: Server, subscribers: int, rounds: int) -> dict[str, float]:
    group.command("reset")
    asyncio.run(stamped_uploads(target, rounds, gap=0.02))
    reports = settle(group, subscribers * rounds)
    samples = sorted(seconds for r in reports for _, seconds in r["latencies"])
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        "max_ms": samples[-1] * 1000,
        "missing": 1 - len(samples) / (subscribers * rounds),
    }


# --- the run ---------------------------------------------------------------------------------


def cpu_comparison(
    workdir: Path, scale: Scale, setups: dict[str, tuple[dict[str, Any], int, int | None]]
) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with ExitStack() as stack:
        servers: dict[str, tuple[Server, Workers, int | None]] = {}
        for index, (label, (broker, count, redis_pid)) in enumerate(setups.items()):
            root = workdir / f"root-cpu-{index}"
            root.mkdir()
            server = start_quantum(workdir, f"cpu-{index}", root, broker, count)
            stack.callback(server.stop)
            group = stack.enter_context(workers(server, scale.subscribers, subscribe=True))
            servers[label] = (server, group, redis_pid)
            runs[label] = {"paced": [], "flood": []}
        for _ in range(scale.repeats):
            for label, (server, group, redis_pid) in servers.items():
                loads = {
                    "paced": lambda s=server: paced(s, scale.paced_rate, scale.load_seconds),
                    "flood": lambda s=server: flood(s, scale.load_seconds),
                }
                for name, load in loads.items():
                    run = cpu_per_delivery(server, group, scale.subscribers, load, redis_pid)
                    runs[label][name].append(run)
                    print(f"  {label}, {name}: {run['cpu_us_per_delivery']:.2f} us", flush=True)
    results: dict[str, Any] = {}
    for label, by_load in runs.items():
        results[label] = {}
        for name, samples in by_load.items():
            ordered = sorted(samples, key=lambda run: run["cpu_us_per_delivery"])
            median: dict[str, Any] = dict(ordered[len(ordered) // 2])
            median["cpu_us_per_delivery_runs"] = [r["cpu_us_per_delivery"] for r in samples]
            results[label][name] = median
    return results


def run(scale: Scale, parts: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"scale": scale.__dict__}
    with tempfile.TemporaryDirectory(prefix="quantum-multinode-") as tmp:
        workdir = Path(tmp)
        with redis_server(workdir) as (redis_url, redis_pid):
            memory = {"type": "memory"}

            def redis(prefix: str) -> dict[str, Any]:
                return {"type": "redis", "url": redis_url, "key_prefix": prefix}

            # 1. CPU per delivered operation under the same fan-out load. Both servers run side
            # by side and the loads alternate between them, so that whatever else the machine is
            # doing weighs on both alike; each figure is the median of the repeats.
            if "cpu" in parts:
                results |= cpu_comparison(
                    workdir,
                    scale,
                    {
                        "memory, workers: 1": (memory, 1, None),
                        "redis, workers: 2": (redis("cpu:"), 2, redis_pid),
                    },
                )

            # 2. Propagation latency: within one node and across two.
            if "latency" not in parts:
                return results
            root = workdir / "root-latency-memory"
            root.mkdir()
            single = start_quantum(workdir, "single", root, memory)
            try:
                with workers(single, scale.latency_subscribers, subscribe=True) as group:
                    results["latency, one node (memory)"] = propagation(
                        group, single, scale.latency_subscribers, scale.latency_rounds
                    )
            finally:
                single.stop()
            shared = workdir / "root-latency-redis"
            shared.mkdir()
            a = start_quantum(workdir, "node-a", shared, redis("lat:"))
            b = start_quantum(workdir, "node-b", shared, redis("lat:"))
            try:
                with workers(a, scale.latency_subscribers, subscribe=True) as group:
                    for label, target in (("within node A", a), ("across nodes B -> A", b)):
                        results[f"latency, redis, {label}"] = propagation(
                            group, target, scale.latency_subscribers, scale.latency_rounds
                        )
            finally:
                a.stop()
                b.stop()
    return results


def report(results: dict[str, Any]) -> None:
    if "memory, workers: 1" in results:
        report_cpu(results)
    if "latency, one node (memory)" in results:
        report_latency(results)


def report_cpu(results: dict[str, Any]) -> None:
    rate = results["scale"]["paced_rate"]
    print("\nCPU per delivered operation (server processes only)")
    for load, title in (("paced", f"{rate:g} changes/s"), ("flood", "as fast as it goes")):
        memory = results["memory, workers: 1"][load]
        redis = results["redis, workers: 2"][load]
        print(f"  {title}:")
        for label, row in (("memory, workers: 1", memory), ("redis, workers: 2", redis)):
            each = ", ".join(f"{x:.2f}" for x in row["cpu_us_per_delivery_runs"])
            print(
                f"    {label:20} {row['cpu_us_per_delivery']:6.2f} us/delivery  "
                f"{row['deliveries_per_s']:9.0f} deliveries/s  "
                f"({row['deliveries']} deliveries, {row['server_cpu_s']:.2f} s CPU in "
                f"{row['processes']} processes; redis-server {row['redis_cpu_s']:.2f} s; "
                f"runs: {each})"
            )
        ratio = redis["cpu_us_per_delivery"] / memory["cpu_us_per_delivery"]
        verdict = "ok" if ratio <= 1.15 else "MISSED"
        target = f"target <= 1.15x: {verdict}" if load == "paced" else "for information"
        print(f"    ratio redis/memory: {ratio:.2f}x ({target})")


def report_latency(results: dict[str, Any]) -> None:
    print("\nPropagation latency (upload -> subscriber on node A)")
    base = results["latency, one node (memory)"]
    for label in (
        "latency, one node (memory)",
        "latency, redis, within node A",
        "latency, redis, across nodes B -> A",
    ):
        row = results[label]
        print(
            f"  {label.removeprefix('latency, '):28} p50 {row['p50_ms']:6.1f} ms  "
            f"p99 {row['p99_ms']:6.1f} ms  max {row['max_ms']:6.1f} ms  "
            f"missing {row['missing']:.1%}"
        )
    across = results["latency, redis, across nodes B -> A"]
    within = results["latency, redis, within node A"]
    for name, reference in (("one memory node", base), ("within node A", within)):
        added = across["p99_ms"] - reference["p99_ms"]
        verdict = "ok" if added <= 10 else "MISSED"
        print(f"  across nodes vs {name}: p99 adds {added:+.1f} ms (target <= 10 ms: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller load, a few seconds")
    parser.add_argument("--json", action="store_true", help="write bench/results/multinode.json")
    parser.add_argument("--only", choices=["cpu", "latency"], help="run one of the two parts")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    print(f"multinode benchmark ({'quick' if args.quick else 'full'}): {scale}", flush=True)
    results = run(scale, {args.only} if args.only else {"cpu", "latency"})
    report(results)
    if args.json:
        write_results("multinode", results)


if __name__ == "__main__":
    main()
