"""Hostile paths over real HTTP: refused with 400/403 (or 404 where the core's router already
refuses to route them), nothing outside root read or written, the server stays up.

Requests are sent as raw bytes so that no client library normalises ``..`` or ``%2e%2e`` away.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.file_sync.conftest import (
    RunningQuantum,
    StartQuantum,
    changes,
    file_sync_config,
    http,
    operations,
    raw_http,
    watcher_caught_up,
)
from tests.support.waiting import wait_until

SECRET = b"TOP SECRET - must never be served"
BAD = {400}
RESERVED = {403}
UNROUTED_OR_BAD = {400, 404}  # the core may clean the path before routing it elsewhere


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    server = start_module_quantum(file_sync_config(enable_upload=True))
    outside = server.workdir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (server.root / "ok.txt").write_bytes(b"harmless")
    os.symlink(outside, server.root / "escape")
    os.symlink(outside / "secret.txt", server.root / "secret-link.txt")
    os.symlink(server.root / ".quantum", server.root / "into-reserved")
    # The disk watcher journals ok.txt some time after the write: the tests must not start (and
    # read a baseline seq) before its final content is journaled.
    harmless = hashlib.sha256(b"harmless").hexdigest()
    wait_until(lambda: _journaled_hash(server, "ok.txt") == harmless, what="ok.txt to be journaled")
    return server


def _journaled_hash(server: RunningQuantum, path: str) -> str | None:
    """The hash of the last Create/Update of ``path`` in the journal."""
    found = None
    for operation in operations(server):
        for kind in ("Create", "Update"):
            metadata = operation.get(kind, {}).get("metadata", {})
            if metadata.get("path") == path:
                found = metadata["hash"]
    return found


def request_bytes(method: str, target: str, body: bytes | None = None) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def j(**fields: object) -> bytes:
    return json.dumps(fields).encode()


LONG_NAME = "a" * 256
LONG_PATH = "a/" * 2100 + "a"

CASES: list[tuple[str, str, bytes | None, set[int]]] = [
    # reads
    ("GET", "/api/files/../outside/secret.txt", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/%2e%2e/%2e%2e/outside/secret.txt", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/..%2f..%2foutside%2fsecret.txt", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/..%5c..%5coutside%5csecret.txt", None, BAD),
    ("GET", "/api/files/%2fetc%2fpasswd", None, BAD),
    ("GET", "/api/files//etc/passwd", None, BAD),
    ("GET", "/api/files/a%00b", None, BAD),
    ("GET", "/api/files/%c0%ae%c0%ae/%c0%ae%c0%ae/outside/secret.txt", None, BAD),
    ("GET", "/api/files/%ff%fe", None, BAD),
    ("GET", "/api/files/escape/secret.txt", None, BAD),
    ("GET", "/api/files/secret-link.txt", None, BAD),
    ("GET", "/api/files/.quantum/journal.sqlite3", None, RESERVED),
    ("GET", "/api/files/.QUANTUM/journal.sqlite3", None, RESERVED),
    ("GET", "/api/files/into-reserved/journal.sqlite3", None, RESERVED),
    ("GET", "/api/files/ok.txt/.", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/a/./b", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/a//b", None, BAD),
    ("GET", "/api/files/%0a", None, UNROUTED_OR_BAD),
    ("GET", "/api/files/x%7f", None, BAD),
    ("GET", "/api/files/%c2%85", None, BAD),  # C1 control (NEL)
    ("GET", "/api/files/" + LONG_NAME, None, BAD),
    ("GET", "/api/files/" + LONG_PATH, None, BAD),
    ("GET", "/api/list?path=../", None, BAD),
    ("GET", "/api/list?path=escape", None, BAD),
    ("GET", "/api/list?path=%2Fetc", None, BAD),
    ("GET", "/api/list?path=.quantum", None, RESERVED),
    ("GET", "/api/list?path=into-reserved", None, BAD),
    ("HEAD", "/api/files/%2e%2e%2foutside%2fsecret.txt", None, UNROUTED_OR_BAD),
    # writes
    ("PUT", "/api/files/../evil.txt", b"evil", UNROUTED_OR_BAD),
    ("PUT", "/api/files/%2e%2e%2fevil.txt", b"evil", BAD),
    ("PUT", "/api/files/escape/evil.txt", b"evil", BAD),
    ("PUT", "/api/files/escape/secret.txt", b"overwritten", BAD),
    ("PUT", "/api/files/.quantum/evil", b"evil", RESERVED),
    ("PUT", "/api/files/into-reserved/evil", b"evil", BAD),
    ("PUT", "/api/files/a%5c..%5c..%5cevil.txt", b"evil", BAD),
    ("DELETE", "/api/files/escape/secret.txt", None, BAD),
    ("DELETE", "/api/files/..%2foutside", None, BAD),
    ("DELETE", "/api/files/.quantum", None, RESERVED),
    ("DELETE", "/api/files/into-reserved/journal.sqlite3", None, BAD),
    ("POST", "/api/mkdir", j(path="../evil"), BAD),
    ("POST", "/api/mkdir", j(path="/tmp/evil"), BAD),
    ("POST", "/api/mkdir", j(path="escape/newdir"), BAD),
    ("POST", "/api/mkdir", j(path=".quantum/x"), RESERVED),
    ("POST", "/api/mkdir", j(path="a\\..\\evil"), BAD),
    ("POST", "/api/mkdir", j(path=5), BAD),
    ("POST", "/api/mkdir", b'{"path": "\\ud800"}', BAD),
    ("POST", "/api/mkdir", j(path="ok\u0000x"), BAD),
    ("POST", "/api/move", j(**{"from": "../outside/secret.txt", "to": "stolen.txt"}), BAD),
    ("POST", "/api/move", j(**{"from": "escape/secret.txt", "to": "stolen.txt"}), {400, 404}),
    ("POST", "/api/move", j(**{"from": "ok.txt", "to": "../outside/pwned.txt"}), BAD),
    ("POST", "/api/move", j(**{"from": "ok.txt", "to": "escape/pwned.txt"}), BAD),
    ("POST", "/api/move", j(**{"from": ".quantum/journal.sqlite3", "to": "j"}), RESERVED),
    ("POST", "/api/move", j(**{"from": "ok.txt", "to": ".quantum-sync/x"}), RESERVED),
]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


def test_hostile_paths_are_refused_and_touch_nothing(server: RunningQuantum) -> None:
    outside = server.workdir / "outside"
    before_outside = snapshot(outside)
    before_seq = changes(server)["seq"]
    journal = server.root / ".quantum" / "journal.sqlite3"
    assert journal.exists()
    failures = []
    for method, target, body, expected in CASES:
        reply = raw_http(server.port, request_bytes(method, target, body))
        if reply.status not in expected:
            failures.append((method, target[:60], reply.status, reply.body[:120]))
        assert SECRET not in reply.body, (method, target)
        if reply.status in (400, 403) and method != "HEAD":
            assert reply.json()["code"] in ("bad_path", "reserved", "bad_request"), target
    assert failures == []
    assert snapshot(outside) == before_outside
    assert sorted(p.name for p in server.workdir.iterdir()) == sorted(
        ["outside", "sync-data", "quantum.json", "quantum.log"]
    )
    assert (server.root / "ok.txt").read_bytes() == b"harmless"
    assert journal.exists()
    assert os.path.islink(server.root / "escape")
    assert changes(server)["seq"] == before_seq  # nothing was journaled
    assert watcher_caught_up(server, before_seq) == []  # nor found on disk afterwards
    assert http("GET", server.url + "/api/files/ok.txt").body == b"harmless"


def test_links_never_leak_into_listings(server: RunningQuantum) -> None:
    paths = [f["path"] for f in http("GET", server.url + "/api/list").json()["files"]]
    assert "escape" not in paths
    assert "secret-link.txt" not in paths
    assert not [p for p in paths if p.startswith(("escape/", "into-reserved"))]


def test_uploading_over_a_link_replaces_the_link_not_its_target(server: RunningQuantum) -> None:
    os.symlink(server.workdir / "outside" / "secret.txt", server.root / "link2.txt")
    reply = http("PUT", server.url + "/api/files/link2.txt", b"replacement")
    assert reply.status == 201
    assert not os.path.islink(server.root / "link2.txt")
    assert (server.root / "link2.txt").read_bytes() == b"replacement"
    assert (server.workdir / "outside" / "secret.txt").read_bytes() == SECRET


def test_a_link_inside_root_may_be_read(server: RunningQuantum) -> None:
    os.symlink(server.root / "ok.txt", server.root / "alias.txt")
    assert http("GET", server.url + "/api/files/alias.txt").body == b"harmless"
