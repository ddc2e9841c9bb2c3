"""Initial sync, server → empty folder: ``realtime-sync-client`` next to an rsync daemon.

    .venv/bin/python bench/initial_sync.py [--files 5000] [--file-size 4096] [--big-mib 200]
                                           [--runs 5] [--keep-copies] [--json]

Two trees, each served at the same time by a ``quantum`` file_sync server and by
``rsync --daemon --no-detach --port P --config F`` (a module pointing at the same directory,
Quantum's reserved ``.quantum*`` entries excluded): 5,000 files of 4 KiB in 50 directories, and
one 200 MiB file. Each run copies the tree into a fresh empty folder with
``realtime-sync-client --initial-sync`` (one pass, then exit) and with
``rsync -a rsync://127.0.0.1:P/tree/ DIR/``; both are whole processes, timed from start to
exit, with the source in the page cache. The two tools alternate (rsync, client, rsync, …:
``--runs`` interleaved rounds, so drifting load on a shared machine hits both alike) and the
**median** of each counts; the target is client ≤ 1.2 x rsync. Each process's own CPU time
(user + system, from ``wait4``) is reported too, and the client's import time alone
(``python -c "import quantum_file_sync.client.cli"``, median of the same rounds).

Each copy is deleted after its run, unless ``--keep-copies``: then all copies of a tree are
deleted after its last round. On a filesystem that avoids reusing just-freed inodes (ext4
without a journal scans past each one on every file creation for a minute or more), deleting
5,000 files right before a run makes that run's file creations far slower, by an amount that
depends on where the allocator lands; keeping the copies measures both tools on clean ground.

Prints a markdown table and, as its last line, the results as one JSON object; ``--json`` also
writes ``bench/results/initial_sync.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rsync_daemon, write_results
from sync_latency import client_command, quantum_server

TARGET_RATIO = 1.2


def make_small_tree(root: Path, files: int, size: int) -> None:
    for n in range(files):
        directory = root / f"dir{n % 50:02d}"
        directory.mkdir(exist_ok=True)
        (directory / f"file{n:05d}.bin").write_bytes(os.urandom(size))


def make_big_tree(root: Path, mib: int) -> None:
    block = os.urandom(1024 * 1024)
    with (root / "big.bin").open("wb") as out:
        for n in range(mib):
            out.write(block[n:] + block[:n])  # distinct blocks, cheap to produce


def tree_bytes(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).parts[0].startswith(".quantum")
    }


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float
    """User + system time of the process (and anything it waited for)."""


def timed(command: list[str]) -> Run:
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    with proc.stderr:
        stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own CPU time
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({proc.returncode}):\n{stderr}")
    return Run(elapsed, usage.ru_utime + usage.ru_stime)


IMPORT_COMMAND = [sys.executable, "-c", "import quantum_file_sync.client.cli"]


def compare(
    name: str, build: Callable[[Path], None], runs: int, keep_copies: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="quantum-initial-") as tmp:
        base = Path(tmp)
        root = base / "root"
        root.mkdir()
        build(root)
        expected = tree_bytes(root)
        with quantum_server(root, base) as server, rsync_daemon(root, base) as rsync_url:

            def with_client(target: Path) -> Run:
                target.mkdir()
                return timed(client_command(server, target, "--initial-sync", "--quiet"))

            def with_rsync(target: Path) -> Run:
                return timed(["rsync", "-a", rsync_url, f"{target}/"])

            tools: dict[str, Callable[[Path], Run]] = {"rsync": with_rsync, "client": with_client}
            results: dict[str, list[Run]] = {label: [] for label in tools}
            imports: list[float] = []
            copies: list[Path] = []
            # Round 0 warms both servers (and the page cache) and is not counted.
            for n in range(runs + 1):
                for label, copy in tools.items():
                    target = base / f"{label}-{n}"
                    run = copy(target)
                    if tree_bytes(target) != expected:
                        raise RuntimeError(f"{target} is not a complete copy")
                    if n:
                        results[label].append(run)
                    if keep_copies and n:
                        copies.append(target)
                    else:
                        shutil.rmtree(target)
                if n:
                    imports.append(timed(IMPORT_COMMAND).wall_s)
            for target in copies:
                shutil.rmtree(target, ignore_errors=True)
    rsync_s = statistics.median([r.wall_s for r in results["rsync"]])
    client_s = statistics.median([r.wall_s for r in results["client"]])
    return {
        "tree": name,
        "files": len(expected),
        "bytes": sum(expected.values()),
        "runs": runs,
        "rsync_s": rsync_s,
        "client_s": client_s,
        "ratio": client_s / rsync_s,
        "target_ratio": TARGET_RATIO,
        "rsync_runs_s": [round(r.wall_s, 4) for r in results["rsync"]],
        "client_runs_s": [round(r.wall_s, 4) for r in results["client"]],
        "rsync_cpu_s": statistics.median([r.cpu_s for r in results["rsync"]]),
        "client_cpu_s": statistics.median([r.cpu_s for r in results["client"]]),
        "client_import_s": statistics.median(imports),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--file-size", type=int, default=4096)
    parser.add_argument("--big-mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--keep-copies", action="store_true", help="delete the copies only after the last run"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [
        compare(
            f"{args.files} x {args.file_size // 1024} KiB",
            lambda root: make_small_tree(root, args.files, args.file_size),
            args.runs,
            args.keep_copies,
        ),
        compare(
            f"1 x {args.big_mib} MiB",
            lambda root: make_big_tree(root, args.big_mib),
            args.runs,
            args.keep_copies,
        ),
    ]
    print(f"median of {args.runs} interleaved runs, load average {os.getloadavg()[0]:.2f}")
    print(
        "| tree | rsync daemon | realtime-sync-client | ratio | target | CPU rsync / client "
        "| client imports |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    ok = True
    for r in results:
        passed = r["ratio"] <= TARGET_RATIO
        ok = ok and passed
        print(
            f"| {r['tree']} | {r['rsync_s']:.3f} s | {r['client_s']:.3f} s | {r['ratio']:.2f}x "
            f"| ≤ {TARGET_RATIO}x {'✅' if passed else '❌'} "
            f"| {r['rsync_cpu_s']:.2f} / {r['client_cpu_s']:.2f} s "
            f"| {r['client_import_s']:.3f} s |"
        )
    if args.json:
        write_results("initial_sync", results)
    print(json.dumps({"benchmark": "initial_sync", "results": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
