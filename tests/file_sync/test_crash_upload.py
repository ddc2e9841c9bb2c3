"""``kill -9`` in the middle of a 200 MB upload: after a restart nothing partial is at the
target, the journal never mentions it, and the abandoned temp file is cleaned up."""

from __future__ import annotations

import socket
import time

from tests.file_sync.conftest import (
    StartQuantum,
    changes,
    file_sync_config,
    http,
    watcher_caught_up,
)

SIZE = 200 * 1024 * 1024
CHUNK = b"\xab" * (1024 * 1024)


def test_kill_during_a_large_upload_leaves_no_trace(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(enable_upload=True))
    assert http("PUT", server.url + "/api/files/before.txt", b"before").status == 201
    journal = changes(server)
    temp_area = server.root / ".quantum" / "tmp"

    def partial_files() -> list[int]:
        return [p.stat().st_size for p in temp_area.rglob("*.part")]

    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"PUT /api/files/big/huge.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Content-Length: {SIZE}\r\n\r\n".encode()
        )
        sent = 0
        deadline = time.monotonic() + 20
        # Stream until the server has written a good part of it, then crash it mid-upload.
        while sum(partial_files()) < 20 * 1024 * 1024:
            assert time.monotonic() < deadline, "upload did not progress"
            sock.sendall(CHUNK)
            sent += len(CHUNK)
        assert sent < SIZE
        server.kill()
    assert partial_files(), "the crash should have left a partial temp file behind"
    assert not (server.root / "big" / "huge.bin").exists()

    server.restart()
    assert partial_files() == []  # cleaned at start
    assert not (server.root / "big" / "huge.bin").exists()
    after = changes(server, journal["seq"])
    assert after["epoch"] == journal["epoch"]
    assert after["recovered"] is True
    assert after["operations"] == []
    assert after["seq"] == journal["seq"]
    # The restart's rescan runs after the port answers: once the watcher has caught up it
    # still has found nothing to journal.
    assert watcher_caught_up(server, journal["seq"]) == []
    listed = [f["path"] for f in http("GET", server.url + "/api/list").json()["files"]]
    assert "big/huge.bin" not in listed
    assert http("GET", server.url + "/api/files/before.txt").body == b"before"
