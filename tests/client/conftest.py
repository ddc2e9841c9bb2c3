"""Helpers for sync-client tests: the client as a real subprocess, folder snapshots, waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.file_sync.conftest import http, start_quantum  # noqa: F401  (fixture re-export)
from tests.support import waiting
from tests.support.processes import ChildProcess

CLIENT = str(Path(sys.executable).parent / "realtime-sync-client")


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every synced entry below ``root``: path → bytes (``None`` for a directory)."""
    for _ in range(100):
        try:
            return _snapshot(root)
        except (FileNotFoundError, NotADirectoryError):
            continue  # a directory vanished while being walked (a client is busy): look again
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0].startswith(".quantum"):
            continue
        try:
            found[rel] = None if path.is_dir() else path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue  # changing right now: the next snapshot will tell
    return found


def wait_until(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    waiting.wait_until(check, timeout, what)


def converged(*roots: Path) -> Callable[[], bool]:
    def check() -> bool:
        first = snapshot(roots[0])
        return all(snapshot(r) == first for r in roots[1:])

    return check


class SyncClient(ChildProcess):
    """``realtime-sync-client`` as a child process; stderr goes to a log file."""

    def __init__(self, server: str, folder: Path, log: Path, *args: str) -> None:
        self.server = server
        self.folder = folder
        self.log_path = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            CLIENT,
            "--server",
            self.server,
            "--local-path",
            str(self.folder),
            *self.args,
            *extra,
        ]

    def start(self, *extra: str) -> SyncClient:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command("--realtime", *extra), stdout=log, stderr=log, env=_env()
            )
        return self

    def wait_synced(self, timeout: float = 20.0) -> None:
        """Until the first pass of the running client completed."""
        wait_until(
            lambda: "initial sync complete" in self.logs(), timeout, f"{self.folder} initial sync"
        )

    def run_once(self, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*extra), capture_output=True, text=True, timeout=timeout, env=_env()
        )
        with self.log_path.open("a") as log:
            log.write(result.stderr)
        return result


def put_count(server: str) -> int:
    """Uploads the server answered so far (from its Prometheus metrics)."""
    total = 0.0
    for line in http("GET", server + "/metrics").body.decode().splitlines():
        if line.startswith("quantum_http_requests_total{") and 'method="PUT"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("QUANTUM_TOKEN", None)
    return env


@pytest.fixture
def sync_clients(tmp_path: Path) -> Iterator[Callable[..., SyncClient]]:
    """``make(server_url, name, *args)`` → a :class:`SyncClient` on ``tmp_path/name``."""
    made: list[SyncClient] = []

    def make(server: str, name: str, *args: str) -> SyncClient:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        client = SyncClient(server, folder, tmp_path / f"{name}.log", *args)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()


def synced_pair(
    sync_clients: Callable[..., SyncClient], server: str
) -> tuple[SyncClient, SyncClient]:
    """Clients ``a`` and ``b`` running against ``server``, both past their initial sync."""
    a = sync_clients(server, "a").start()
    b = sync_clients(server, "b").start()
    a.wait_synced()
    b.wait_synced()
    return a, b
