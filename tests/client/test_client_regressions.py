"""Deterministic reproductions of what the randomized convergence test found (its seed named)."""

from __future__ import annotations

import os
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
