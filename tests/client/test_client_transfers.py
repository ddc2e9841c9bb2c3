"""How the client talks to a real server: bundled downloads, streamed large files, and
directory deletions that never take unseen files with them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from tests.client.conftest import SyncClient, snapshot
from tests.file_sync.conftest import StartQuantum, file_sync_config, http


def requests_by_method(server: str) -> dict[str, int]:
    """HTTP requests the server answered so far, by method (from its Prometheus metrics)."""
    counts: dict[str, int] = {}
    for line in http("GET", server + "/metrics").body.decode().splitlines():
        if line.startswith("quantum_http_requests_total{"):
            method = line.split('method="', 1)[1].split('"', 1)[0]
            counts[method] = counts.get(method, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_small_files_arrive_in_bundles_large_ones_on_their_own(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    files = {f"d{n % 7}/f{n:03d}.bin": os.urandom(n * 37) for n in range(400)}
    files["large/movie.bin"] = os.urandom(3 * 1024 * 1024 + 5)
    server = start_quantum(
        file_sync_config(), files={f"sync-data/{rel}": data for rel, data in files.items()}
    )
    before = requests_by_method(server.url)
    client = sync_clients(server.url, "a")
    result = client.run_once()
    assert result.returncode == 0, result.stderr
    assert snapshot(client.folder) == {
        **{rel: data for rel, data in files.items()},
        **{f"d{n}": None for n in range(7)},
        "large": None,
    }
    assert '"downloaded": 401' in result.stderr
    after = requests_by_method(server.url)
    bundles = after.get("POST", 0) - before.get("POST", 0)
    gets = after.get("GET", 0) - before.get("GET", 0)
    assert 1 <= bundles <= 3
    assert gets <= 6  # the check, the listing, the large file (and these metrics)
    state = client.folder / ".quantum-sync" / "tmp"
    assert list(state.iterdir()) == []  # every prefetched temp file was installed


def test_a_reconciliation_replaces_changed_files_from_bundles(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    files = {f"sync-data/f{n:02d}.txt": f"version 1 of {n}\n" for n in range(20)}
    server = start_quantum(file_sync_config(enable_upload=True), files=files)
    client = sync_clients(server.url, "a")
    assert client.run_once().returncode == 0
    for n in range(0, 20, 2):
        reply = http("PUT", f"{server.url}/api/files/f{n:02d}.txt", f"version 2 of {n}\n")
        assert reply.status == 200
    (client.folder / "f01.txt").write_text("edited locally too\n")
    before = requests_by_method(server.url)

    result = client.run_once("--initial-sync")  # a full listing merge, not a journal replay
    assert result.returncode == 0, result.stderr
    assert '"downloaded": 10' in result.stderr and '"uploaded": 1' in result.stderr
    assert snapshot(client.folder) == snapshot(server.root)
    assert (client.folder / "f04.txt").read_text() == "version 2 of 4\n"
    assert (server.root / "f01.txt").read_text() == "edited locally too\n"
    after = requests_by_method(server.url)
    assert after.get("POST", 0) - before.get("POST", 0) == 1  # one bundle for the ten files
    assert list((client.folder / ".quantum-sync" / "tmp").iterdir()) == []


def test_a_directory_deleted_locally_keeps_what_the_server_gained_meanwhile(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    # No disk watcher: a file written straight into the server's folder stays unannounced,
    # as if the client's deletion raced its creation.
    files = {"sync-data/d/old.txt": "old", "sync-data/d/sub/deep.txt": "deep"}
    files |= {f"sync-data/other/{n}.txt": str(n) for n in range(10)}
    server = start_quantum(file_sync_config(enable_upload=True, watch=False), files=files)
    client = sync_clients(server.url, "a")
    assert client.run_once().returncode == 0
    (server.root / "d" / "sub" / "new.txt").write_text("created on the server meanwhile")
    shutil.rmtree(client.folder / "d")

    result = client.run_once()
    assert result.returncode == 0, result.stderr
    assert (server.root / "d" / "sub" / "new.txt").read_text() == "created on the server meanwhile"
    assert not (server.root / "d" / "old.txt").exists()
    assert not (server.root / "d" / "sub" / "deep.txt").exists()
    assert snapshot(client.folder) == snapshot(server.root)
    assert (client.folder / "d" / "sub" / "new.txt").exists()


def test_a_directory_holding_unsynced_entries_on_the_server_is_kept(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    files = {"sync-data/d/a.txt": "a"} | {f"sync-data/other/{n}.txt": str(n) for n in range(10)}
    server = start_quantum(file_sync_config(enable_upload=True), files=files)
    client = sync_clients(server.url, "a")
    assert client.run_once().returncode == 0
    (server.root / "d" / "link").symlink_to("../other/0.txt")  # links are never synced
    shutil.rmtree(client.folder / "d")

    result = client.run_once()
    assert result.returncode == 0, result.stderr
    assert "kept directory deleted locally" in result.stderr
    assert not (server.root / "d" / "a.txt").exists()
    assert (server.root / "d" / "link").is_symlink()
    assert (client.folder / "d").is_dir()
    assert snapshot(client.folder) | {"d/link": b"0"} == snapshot(server.root)
    again = client.run_once()
    assert again.returncode == 0, again.stderr
    assert '"deleted_remote": 0' in again.stderr
