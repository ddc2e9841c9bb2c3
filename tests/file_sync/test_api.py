"""The HTTP API of DESIGN.md against a real ``quantum`` process (uploads: test_upload.py)."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from tests.file_sync.conftest import (
    RunningQuantum,
    StartQuantum,
    changes,
    file_sync_config,
    http,
    operations,
    watcher_caught_up,
)

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=True))


def put(server: RunningQuantum, path: str, data: bytes = b"data") -> dict:
    reply = http("PUT", f"{server.url}/api/files/{path}", data)
    assert reply.status in (200, 201), reply.body
    result: dict = reply.json()
    return result


def listing(server: RunningQuantum, query: str) -> dict:
    reply = http("GET", f"{server.url}/api/list?{query}")
    assert reply.status == 200, reply.body
    result: dict = reply.json()
    return result


def test_list_is_recursive_by_default_and_flat_on_request(server: RunningQuantum) -> None:
    put(server, "tree/a.txt", b"alpha")
    put(server, "tree/sub/b.txt", b"beta")
    body = listing(server, "path=tree")
    assert {"epoch", "seq", "files"} <= body.keys()
    assert [f["path"] for f in body["files"]] == ["tree/a.txt", "tree/sub", "tree/sub/b.txt"]
    a, sub, b = body["files"]
    assert a == {
        "path": "tree/a.txt",
        "size": 5,
        "hash": hashlib.sha256(b"alpha").hexdigest(),
        "modified": a["modified"],
        "is_directory": False,
    }
    assert RFC3339.match(a["modified"])
    assert sub["is_directory"] is True
    assert sub["hash"] is None
    assert b["hash"] == hashlib.sha256(b"beta").hexdigest()
    flat = listing(server, "path=tree&recursive=false")
    assert [f["path"] for f in flat["files"]] == ["tree/a.txt", "tree/sub"]


def test_list_paginates_with_an_opaque_cursor(server: RunningQuantum) -> None:
    for name in ["x-1", "x/1", "x/2/deep", "x/3", "y", "z0", "z1"]:
        put(server, f"pages/{name}", name.encode())
    everything = [f["path"] for f in listing(server, "path=pages")["files"]]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "path=pages&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = listing(server, query)
        pages += 1
        assert len(page["files"]) <= 3
        seen += [f["path"] for f in page["files"]]
        cursor = page.get("next")
        if cursor is None:
            break
    assert seen == everything
    assert len(everything) == 9  # 7 files + directories x and x/2
    assert pages == 3
    bad = http("GET", server.url + "/api/list?path=pages&cursor=%%%")
    assert (bad.status, bad.json()["code"]) == (400, "bad_cursor")


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("path=no/such/dir", 404, "not_found"),
        ("path=tree/a.txt", 409, "not_a_directory"),
        ("path=.quantum", 403, "reserved"),
        ("path=../", 400, "bad_path"),
        ("limit=0", 400, "bad_request"),
        ("limit=ten", 400, "bad_request"),
        ("recursive=maybe", 400, "bad_request"),
    ],
)
def test_list_errors(server: RunningQuantum, query: str, status: int, code: str) -> None:
    put(server, "tree/a.txt", b"alpha")
    reply = http("GET", f"{server.url}/api/list?{query}")
    assert (reply.status, reply.json()["code"]) == (status, code)


def test_list_never_shows_reserved_names(server: RunningQuantum) -> None:
    paths = [f["path"] for f in listing(server, "")["files"]]
    assert paths  # other tests populated the root
    assert not [p for p in paths if p.lower().startswith(".quantum")]
    assert (server.root / ".quantum").is_dir()


def test_download_has_a_content_hash_etag_ranges_and_conditional_get(
    server: RunningQuantum,
) -> None:
    content = bytes(range(256)) * 4
    put(server, "dl/blob.bin", content)
    url = server.url + "/api/files/dl/blob.bin"
    etag = '"' + hashlib.sha256(content).hexdigest() + '"'

    full = http("GET", url)
    assert full.status == 200
    assert full.body == content
    assert full.header("ETag") == etag
    assert full.header("Accept-Ranges") == "bytes"

    part = http("GET", url, headers={"Range": "bytes=10-19"})
    assert part.status == 206
    assert part.body == content[10:20]
    assert part.header("Content-Range") == f"bytes 10-19/{len(content)}"
    assert http("GET", url, headers={"Range": "bytes=-5"}).body == content[-5:]
    assert http("GET", url, headers={"Range": "bytes=1000-"}).body == content[1000:]
    unsatisfiable = http("GET", url, headers={"Range": "bytes=5000-"})
    assert unsatisfiable.status == 416
    assert unsatisfiable.header("Content-Range") == f"bytes */{len(content)}"
    stale = http("GET", url, headers={"Range": "bytes=0-1", "If-Range": '"other"'})
    assert (stale.status, stale.body) == (200, content)

    cached = http("GET", url, headers={"If-None-Match": etag})
    assert (cached.status, cached.body) == (304, b"")
    assert cached.header("ETag") == etag
    assert http("GET", url, headers={"If-None-Match": '"nope"'}).status == 200

    head = http("HEAD", url)
    assert (head.status, head.body) == (200, b"")
    assert head.header("Content-Length") == str(len(content))
    assert head.header("ETag") == etag


def test_download_errors(server: RunningQuantum) -> None:
    put(server, "dl/inner/x.txt")
    missing = http("GET", server.url + "/api/files/dl/missing.txt")
    assert (missing.status, missing.json()["code"]) == (404, "not_found")
    directory = http("GET", server.url + "/api/files/dl/inner")
    assert (directory.status, directory.json()["code"]) == (409, "is_directory")


def test_delete_file_then_directory_with_its_contents(server: RunningQuantum) -> None:
    put(server, "del/one.txt", b"one")
    put(server, "del/sub/two.txt", b"two")
    seq = changes(server)["seq"]
    wrong = http("DELETE", server.url + "/api/files/del/one.txt", headers={"If-Match": '"x"'})
    assert (wrong.status, wrong.json()["code"]) == (412, "precondition_failed")
    etag = '"' + hashlib.sha256(b"one").hexdigest() + '"'
    ok = http("DELETE", server.url + "/api/files/del/one.txt", headers={"If-Match": etag})
    assert ok.status == 204
    assert not (server.root / "del" / "one.txt").exists()
    assert http("DELETE", server.url + "/api/files/del/one.txt").status == 404
    assert http("DELETE", server.url + "/api/files/del").status == 204
    assert not (server.root / "del").exists()
    assert operations(server, seq) == [
        {"Delete": {"path": "del/one.txt", "is_directory": False}},
        {"Delete": {"path": "del", "is_directory": True}},
    ]


def test_non_recursive_delete_only_removes_an_empty_directory(server: RunningQuantum) -> None:
    put(server, "keep/inner/file.txt", b"created by someone else")
    seq = changes(server)["seq"]
    for target in ("keep", "keep/inner"):
        refused = http("DELETE", f"{server.url}/api/files/{target}?recursive=false")
        assert (refused.status, refused.json()["code"]) == (409, "not_empty")
    assert (server.root / "keep" / "inner" / "file.txt").read_bytes() == b"created by someone else"
    file = http("DELETE", server.url + "/api/files/keep/inner/file.txt?recursive=false")
    assert file.status == 204  # a file is just deleted
    assert http("DELETE", server.url + "/api/files/keep/inner?recursive=false").status == 204
    assert http("DELETE", server.url + "/api/files/keep?recursive=0").status == 204
    assert not (server.root / "keep").exists()
    assert operations(server, seq) == [
        {"Delete": {"path": "keep/inner/file.txt", "is_directory": False}},
        {"Delete": {"path": "keep/inner", "is_directory": True}},
        {"Delete": {"path": "keep", "is_directory": True}},
    ]
    bad = http("DELETE", server.url + "/api/files/x?recursive=maybe")
    assert (bad.status, bad.json()["code"]) == (400, "bad_request")


def test_downloads_leave_the_disk_watcher_idle(start_quantum: StartQuantum) -> None:
    """Serving files changes nothing on disk: no access-time update (an inode write, and a
    metadata change the watcher could only take for a possible rewrite), no watcher batch, no
    journal entry."""
    config = {**file_sync_config(enable_upload=True), "logging": {"level": "DEBUG"}}
    server = start_quantum(config)
    put(server, "watched/file.txt", b"read me often")
    put(server, "watched/other.txt", b"and me")
    target = server.root / "watched" / "file.txt"
    watcher_caught_up(server)  # the uploads' own disk events are handled
    wait_until_quiet(server)  # and logged
    atime = target.stat().st_atime_ns
    seq = changes(server)["seq"]
    batches = server.logs().count('"disk changes"')
    for _ in range(25):
        assert http("GET", server.url + "/api/files/watched/file.txt").body == b"read me often"
        paths = {"paths": ["watched/file.txt", "watched/other.txt"]}
        assert http("POST", server.url + "/api/bundle", json_body=paths).status == 200
    wait_until_quiet(server)
    assert server.logs().count('"disk changes"') == batches
    assert target.stat().st_atime_ns == atime
    assert changes(server)["seq"] == seq


def wait_until_quiet(server: RunningQuantum, quiet: float = 0.6, timeout: float = 10.0) -> None:
    """Until the server's log stopped growing for ``quiet`` seconds (the watcher's batches
    come ~50 ms after the events)."""
    deadline = time.monotonic() + timeout
    size, since = len(server.logs()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = len(server.logs())
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError("the server never went quiet")


def test_mkdir_creates_parents_and_is_idempotent(server: RunningQuantum) -> None:
    seq = changes(server)["seq"]
    created = http("POST", server.url + "/api/mkdir", json_body={"path": "mk/a/b"})
    assert created.status == 201
    assert created.json()["path"] == "mk/a/b"
    assert created.json()["is_directory"] is True
    assert (server.root / "mk" / "a" / "b").is_dir()
    again = http("POST", server.url + "/api/mkdir", json_body={"path": "mk/a/b"})
    assert again.status == 200
    created_paths = [op["Create"]["metadata"]["path"] for op in operations(server, seq)]
    assert created_paths == ["mk", "mk/a", "mk/a/b"]
    put(server, "mk/file.txt")
    clash = http("POST", server.url + "/api/mkdir", json_body={"path": "mk/file.txt"})
    assert (clash.status, clash.json()["code"]) == (409, "not_a_directory")


def test_move_renames_and_never_replaces(server: RunningQuantum) -> None:
    put(server, "mv/src.txt", b"moving")
    put(server, "mv/taken.txt", b"taken")
    seq = changes(server)["seq"]
    request = {"from": "mv/src.txt", "to": "mv/new/dst.txt"}
    moved = http("POST", server.url + "/api/move", json_body=request)
    assert moved.status == 200
    assert moved.json()["path"] == "mv/new/dst.txt"
    assert moved.json()["hash"] == hashlib.sha256(b"moving").hexdigest()
    assert (server.root / "mv" / "new" / "dst.txt").read_bytes() == b"moving"
    assert not (server.root / "mv" / "src.txt").exists()
    ops = operations(server, seq)
    assert ops[0]["Create"]["metadata"]["path"] == "mv/new"
    assert ops[1]["Move"]["from"] == "mv/src.txt"
    assert ops[1]["Move"]["metadata"]["path"] == "mv/new/dst.txt"

    def move(source: str, target: str) -> tuple[int, str]:
        reply = http("POST", server.url + "/api/move", json_body={"from": source, "to": target})
        return reply.status, reply.json()["code"]

    assert move("mv/new/dst.txt", "mv/taken.txt") == (409, "exists")
    assert move("mv/absent.txt", "mv/x.txt") == (404, "not_found")
    assert move("mv", "mv/inside") == (409, "conflict")
    assert move("mv/taken.txt", "mv/taken.txt") == (400, "bad_request")
    assert move("mv/taken.txt", ".quantum/x") == (403, "reserved")
    assert (server.root / "mv" / "taken.txt").read_bytes() == b"taken"


def test_move_of_a_directory_is_one_operation(server: RunningQuantum) -> None:
    put(server, "mvd/a/1.txt")
    put(server, "mvd/a/2.txt")
    seq = changes(server)["seq"]
    reply = http("POST", server.url + "/api/move", json_body={"from": "mvd/a", "to": "mvd/b"})
    assert reply.status == 200
    assert operations(server, seq) == [{"Move": {"from": "mvd/a", "metadata": reply.json()}}]
    paths = [f["path"] for f in listing(server, "path=mvd")["files"]]
    assert paths == ["mvd/b", "mvd/b/1.txt", "mvd/b/2.txt"]


def test_changes_replays_in_order_or_asks_to_reconcile(server: RunningQuantum) -> None:
    before = changes(server)
    put(server, "ch/1.txt")
    put(server, "ch/1.txt", b"again")
    after = changes(server, before["seq"])
    assert after["recovered"] is True
    assert after["epoch"] == before["epoch"]
    seqs = [m["seq"] for m in after["operations"]]
    assert seqs == list(range(before["seq"] + 1, before["seq"] + 4))
    assert after["seq"] == seqs[-1]
    assert {m["epoch"] for m in after["operations"]} == {before["epoch"]}
    assert all(m["type"] == "FileOperation" and m["op_id"] for m in after["operations"])
    other = http("GET", f"{server.url}/api/changes?since=0&epoch=another-epoch").json()
    assert other == {
        "epoch": before["epoch"],
        "seq": after["seq"],
        "recovered": False,
        "operations": [],
    }
    bad = http("GET", f"{server.url}/api/changes?since=-1&epoch={before['epoch']}")
    assert bad.status == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/nothing", 404, "not_found"),
        ("POST", "/api/list", 405, "method_not_allowed"),
        ("PATCH", "/api/files/a.txt", 405, "method_not_allowed"),
        ("POST", "/api/mkdir", 400, "invalid_json"),
        ("GET", "/api/files/", 400, "bad_path"),
    ],
)
def test_errors_are_json(
    server: RunningQuantum, method: str, path: str, status: int, code: str
) -> None:
    reply = http(method, server.url + path, b"not json" if method == "POST" else None)
    assert reply.status == status
    assert reply.header("Content-Type").startswith("application/json")
    body = reply.json()
    assert body["code"] == code
    assert isinstance(body["error"], str)
    if status == 405:
        assert reply.header("Allow")


def test_bad_client_id_is_refused(server: RunningQuantum) -> None:
    reply = http("PUT", server.url + "/api/files/c.txt", b"x", {"X-Quantum-Client": "x" * 300})
    assert (reply.status, reply.json()["code"]) == (400, "bad_client_id")


def test_metrics_route_is_contributed_and_counts_operations(server: RunningQuantum) -> None:
    put(server, "metrics/x.txt", b"12345")
    http("GET", server.url + "/api/files/metrics/x.txt")
    text = http("GET", server.url + "/metrics").body.decode()
    assert re.search(r'quantum_file_operations_total\{op="create",origin="api"\} [1-9]', text)
    assert re.search(r"quantum_file_bytes_uploaded_total [1-9]", text)
    assert re.search(r"quantum_file_bytes_downloaded_total [1-9]", text)
    seq = changes(server)["seq"]
    assert f"quantum_journal_seq {float(seq)}" in text or f"quantum_journal_seq {seq}" in text


def test_browser_page_is_contributed_at_root(server: RunningQuantum) -> None:
    reply = http("GET", server.url + "/")
    assert reply.status == 200
    assert reply.header("Content-Type").startswith("text/html")
