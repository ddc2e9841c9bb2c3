"""Never lose data: concurrent edits while one client is offline."""

from __future__ import annotations

from collections.abc import Callable

from tests.client.conftest import SyncClient, converged, snapshot, wait_until
from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config


def synced_pair(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> tuple[RunningQuantum, SyncClient, SyncClient]:
    """A server and two realtime clients that agree on ``doc.txt`` = b"v0"."""
    server = start_quantum(file_sync_config(enable_upload=True))
    a = sync_clients(server.url, "a", "--client-id", "alice")
    b = sync_clients(server.url, "b", "--client-id", "bob")
    (a.folder / "doc.txt").write_bytes(b"v0\n")
    assert a.run_once().returncode == 0
    a.start()
    b.start()
    a.wait_synced()
    b.wait_synced()
    wait_until(converged(a.folder, b.folder, server.root), what="first agreement")
    return server, a, b


def test_offline_edit_against_online_edit_keeps_both(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server, a, b = synced_pair(start_quantum, sync_clients)
    assert a.stop() == 0
    (b.folder / "doc.txt").write_bytes(b"online edit by B\n")
    wait_until(lambda: (server.root / "doc.txt").read_bytes() == b"online edit by B\n")
    (a.folder / "doc.txt").write_bytes(b"offline edit by A\n")
    a.start()
    wait_until(converged(a.folder, b.folder, server.root), what="convergence after conflict")
    everywhere = snapshot(server.root)
    copies = {p: data for p, data in everywhere.items() if ".sync-conflict-" in p}
    assert everywhere["doc.txt"] == b"online edit by B\n"
    assert list(copies.values()) == [b"offline edit by A\n"]
    (name,) = copies
    assert name.startswith("doc.sync-conflict-") and name.endswith("-alice.txt")
    assert "conflict" in a.logs()


def test_identical_offline_edits_are_not_a_conflict(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server, a, b = synced_pair(start_quantum, sync_clients)
    assert a.stop() == 0
    (b.folder / "doc.txt").write_bytes(b"the same edit\n")
    wait_until(lambda: (server.root / "doc.txt").read_bytes() == b"the same edit\n")
    (a.folder / "doc.txt").write_bytes(b"the same edit\n")
    result = a.run_once()
    assert result.returncode == 0, result.stderr
    assert '"conflicts": 0' in result.stderr
    assert '"adopted": 1' in result.stderr  # recorded as agreed, nothing transferred
    assert snapshot(server.root) == {"doc.txt": b"the same edit\n"}
    assert snapshot(a.folder) == snapshot(server.root)


def test_offline_delete_loses_against_an_online_modification(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server, a, b = synced_pair(start_quantum, sync_clients)
    assert a.stop() == 0
    (b.folder / "doc.txt").write_bytes(b"modified by B\n")
    wait_until(lambda: (server.root / "doc.txt").read_bytes() == b"modified by B\n")
    (a.folder / "doc.txt").unlink()
    a.start()
    wait_until(converged(a.folder, b.folder, server.root), what="convergence")
    assert snapshot(a.folder) == {"doc.txt": b"modified by B\n"}


def test_online_delete_loses_against_an_offline_modification(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    server, a, b = synced_pair(start_quantum, sync_clients)
    assert b.stop() == 0
    (b.folder / "doc.txt").write_bytes(b"modified by B while offline\n")
    (a.folder / "doc.txt").unlink()
    wait_until(lambda: not (server.root / "doc.txt").exists(), what="online delete")
    b.start()
    wait_until(converged(a.folder, b.folder, server.root), what="convergence")
    assert snapshot(server.root) == {"doc.txt": b"modified by B while offline\n"}
