"""Helpers shared by the benchmarks: free ports, waiting for and stopping servers, file_sync
configs, result files."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
"""Where ``--json`` writes (gitignored)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def file_sync_config(port: int, root: Path, **options: Any) -> dict[str, Any]:
    """The seed's config shape on ``127.0.0.1:port`` with uploads on and extra options."""
    return {
        "admin": {"disabled": True},
        "apps": {
            "http": {
                "servers": {
                    "bench": {
                        "listen": [f"127.0.0.1:{port}"],
                        "routes": [
                            {
                                "match": [{"matcher": "path", "paths": ["/api/*", "/ws"]}],
                                "handle": [
                                    {
                                        "handler": "file_sync",
                                        "root": str(root),
                                        "enable_upload": True,
                                        **options,
                                    }
                                ],
                            }
                        ],
                    }
                }
            }
        },
    }


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited after ``timeout``."""
    process.terminate()
    wait_or_kill(process, timeout)


def wait_or_kill(process: subprocess.Popen[Any], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_sized(
    description: str, prefix: str, measure: Callable[[int, Path], dict[str, Any]]
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The command line of a benchmark over one file of ``--mib`` MiB (``--json``, ``--keep``):
    ``measure(size, workdir)`` runs in a fresh folder under ``/var/tmp`` (same disk as
    ``/tmp``), removed afterwards unless ``--keep`` or the measurement fails."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--json", action="store_true", help="also write bench/results/")
    parser.add_argument("--keep", action="store_true", help="keep the folders and logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        results = measure(args.mib * 1024 * 1024, work)
    except BaseException:
        print(f"failed; the folders and logs are kept in {work}", file=sys.stderr)
        raise
    if args.keep:
        print(f"folders and logs kept in {work}")
    else:
        shutil.rmtree(work)
    return args, results


def write_results(name: str, data: Any) -> Path:
    """``bench/results/NAME.json``; returns its path."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {out}")
    return out


@contextmanager
def rsync_daemon(directory: Path, workdir: Path, *, writable: bool = False) -> Iterator[str]:
    """``rsync --daemon`` serving ``directory`` as module ``tree`` on a free port (Quantum's
    reserved ``.quantum*`` entries excluded); yields the module's URL. ``writable``: clients
    may push into it (as root, so the files keep their owner)."""
    port = free_port()
    config = workdir / "rsyncd.conf"
    access = (
        "    read only = false\n    uid = root\n    gid = root\n"
        if writable
        else ("    read only = true\n")
    )
    config.write_text(
        f"pid file = {workdir / 'rsyncd.pid'}\n"
        "use chroot = false\n"
        f"log file = {workdir / 'rsyncd.log'}\n"
        "[tree]\n"
        f"    path = {directory}\n"
        f"{access}"
        "    exclude = /.quantum*\n"
    )
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", "--port", str(port), "--config", str(config)]
    )
    url = f"rsync://127.0.0.1:{port}/tree/"
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["rsync", url], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("rsync daemon did not start")
            time.sleep(0.05)
        yield url
    finally:
        stop_process(proc, 10)
