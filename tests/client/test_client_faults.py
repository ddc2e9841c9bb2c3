"""Crashes, outages, a wiped folder and files still being written."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tests.client.conftest import (
    SyncClient,
    converged,
    put_count,
    snapshot,
    synced_pair,
    wait_until,
)
from tests.file_sync.conftest import StartQuantum, file_sync_config


def test_kill_9_mid_download_leaves_no_truncated_file(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    seeder = sync_clients(server.url, "seed")
    big = os.urandom(1024 * 1024) * 64
    (seeder.folder / "big.bin").write_bytes(big)
    for n in range(20):
        (seeder.folder / f"small-{n}.txt").write_bytes(b"small %d\n" % n)
    assert seeder.run_once().returncode == 0

    b = sync_clients(server.url, "b").start()
    tmp = b.folder / ".quantum-sync" / "tmp"

    def downloading() -> bool:
        try:
            return tmp.is_dir() and any(p.stat().st_size > 0 for p in tmp.iterdir())
        except FileNotFoundError:  # a temp file renamed into place between listing and stat
            return False

    wait_until(downloading, what="a download in progress")
    b.kill()  # SIGKILL, mid-download
    assert not (b.folder / "big.bin").exists() or (b.folder / "big.bin").read_bytes() == big
    assert any(tmp.iterdir())  # the partial download is in the temp area, not in place

    again = b.run_once()
    assert again.returncode == 0, again.stderr
    assert snapshot(b.folder) == snapshot(server.root)
    assert list(tmp.iterdir()) == []


def test_server_restart_while_clients_run(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a", "--ping-interval", "1").start()
    b = sync_clients(server.url, "b", "--ping-interval", "1").start()
    a.wait_synced()
    b.wait_synced()
    (a.folder / "before.txt").write_bytes(b"before the outage\n")
    wait_until(converged(a.folder, b.folder, server.root), what="first file")

    assert server.stop() == 0
    (a.folder / "during.txt").write_bytes(b"written while the server was down\n")
    (a.folder / "before.txt").write_bytes(b"changed while the server was down\n")
    time.sleep(0.5)
    server.restart()
    wait_until(converged(a.folder, b.folder, server.root), 30, "convergence after restart")
    assert snapshot(b.folder) == {
        "before.txt": b"changed while the server was down\n",
        "during.txt": b"written while the server was down\n",
    }
    (b.folder / "after.txt").write_bytes(b"after the restart\n")
    wait_until(converged(a.folder, b.folder, server.root), what="a change after the restart")
    time.sleep(0.5)
    assert put_count(server.url) == 3  # each change uploaded once: no duplicates
    assert "reconnected" in a.logs() and "reconnected" in b.logs()


def test_emptied_folder_trips_the_mass_delete_guard(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a")
    (a.folder / "docs").mkdir()
    for n in range(30):
        (a.folder / "docs" / f"f{n}.txt").write_bytes(b"%d\n" % n)
    a.start()
    a.wait_synced()
    wait_until(converged(a.folder, server.root), what="upload")
    for path in (a.folder / "docs").iterdir():
        path.unlink()
    assert a.proc is not None
    assert a.proc.wait(15) == 6
    assert "mass-delete guard: 30 of 30 tracked files disappeared" in a.logs()
    assert len(list((server.root / "docs").iterdir())) == 30  # the server is untouched

    again = a.run_once()  # a restart trips too: the deletion is still unconfirmed
    assert again.returncode == 6
    assert "--allow-mass-delete" in again.stderr
    confirmed = a.run_once("--allow-mass-delete")
    assert confirmed.returncode == 0, confirmed.stderr
    assert snapshot(server.root) == {"docs": None}


def test_a_file_being_written_is_synced_with_its_final_bytes(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    chunks = [os.urandom(64 * 1024) for _ in range(12)]
    with (a.folder / "growing.bin").open("wb") as file:
        for chunk in chunks:
            file.write(chunk)
            file.flush()
            time.sleep(0.04)
    final = b"".join(chunks)
    wait_until(lambda: (b.folder / "growing.bin").exists(), what="the file on B")
    wait_until(converged(a.folder, b.folder, server.root), what="final bytes everywhere")
    assert (server.root / "growing.bin").read_bytes() == final
    assert (b.folder / "growing.bin").read_bytes() == final
