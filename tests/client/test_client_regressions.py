"""Deterministic reproductions of what the randomized convergence test found (its seed named)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from tests.client.conftest import SyncClient, converged, snapshot, synced_pair, wait_until
from tests.file_sync.conftest import StartQuantum, file_sync_config


def test_a_directory_replaced_by_another_one_forgets_the_old_content_everywhere(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    """Seed 8: a renamed-away directory whose name another directory took at once. The watcher
    names only the directory, so its old tracked files must be re-checked too."""
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    (a.folder / "d").mkdir()
    (a.folder / "d" / "old.txt").write_bytes(b"old content of d\n")
    (a.folder / "e").mkdir()
    (a.folder / "e" / "new.txt").write_bytes(b"content of e\n")
    wait_until(converged(a.folder, b.folder, server.root), what="d and e everywhere")

    os.rename(a.folder / "d", a.folder.parent / "d-moved-out")
    os.rename(a.folder / "e", a.folder / "d")

    expected = {"d": None, "d/new.txt": b"content of e\n"}
    wait_until(lambda: snapshot(server.root) == expected, what="old d gone from the server")
    wait_until(converged(a.folder, b.folder, server.root), what="the same everywhere")


def test_a_file_in_place_of_a_directory_the_server_changed_becomes_a_conflict_copy(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient]
) -> None:
    """Seed 45: a folder replaced a directory by a file while another client changed a file in
    that directory. The file could not be uploaded (the directory is not empty on the server)
    and the changed file could not be downloaded (its parent is a file): both gave up."""
    server = start_quantum(file_sync_config(enable_upload=True))
    a, b = synced_pair(sync_clients, server.url)
    (a.folder / "d").mkdir()
    (a.folder / "d" / "f.txt").write_bytes(b"first version\n")
    wait_until(converged(a.folder, b.folder, server.root), what="d/f.txt everywhere")
    assert a.stop() == 0
    (b.folder / "d" / "f.txt").write_bytes(b"changed by B meanwhile\n")
    wait_until(lambda: (server.root / "d" / "f.txt").read_bytes().startswith(b"changed"))

    shutil.rmtree(a.folder / "d")
    (a.folder / "d").write_bytes(b"a file now\n")
    a.start()

    wait_until(converged(a.folder, b.folder, server.root), 30, "the same everywhere")
    tree = snapshot(server.root)
    assert tree["d/f.txt"] == b"changed by B meanwhile\n"
    copies = [p for p in tree if p.startswith("d.sync-conflict-")]
    assert len(copies) == 1 and tree[copies[0]] == b"a file now\n"
