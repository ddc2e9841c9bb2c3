"""POST /api/bundle: many files in one streamed response, against a real ``quantum`` process;
the bundle format and the server's file reader, in process."""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import os
from pathlib import Path

import pytest
from quantum_file_sync.bundle import (
    MAX_PATHS,
    BundleDecoder,
    BundleError,
    BundleReader,
    EndRecord,
    ErrorRecord,
    FileRecord,
    LargeFile,
    Record,
    end_record,
    error_record,
    file_header,
)
from quantum_file_sync.metadata import HashCache, StatKey
from quantum_file_sync.paths import SafeRoot

from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config, http

TOKEN = "bundle-token"


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    return start_module_quantum(file_sync_config(enable_upload=False))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle(server: RunningQuantum, paths: object, headers: dict[str, str] | None = None) -> bytes:
    reply = http("POST", server.url + "/api/bundle", json_body={"paths": paths}, headers=headers)
    assert reply.status == 200, reply.body
    assert reply.header("Content-Type") == "application/x-quantum-bundle"
    return reply.body


def records(body: bytes) -> list[Record]:
    decoder = BundleDecoder(max_file_size=1 << 30)
    found = decoder.feed(body)
    decoder.finish()
    return found


def test_files_arrive_in_order_with_the_hash_of_exactly_their_bytes(
    server: RunningQuantum,
) -> None:
    files = {
        "b/two.bin": os.urandom(5000),
        "a.txt": b"alpha\n",
        "b/deeper/r\u00e9sum\u00e9 #1.txt": "unicode \u2603".encode(),
        "empty": b"",
        "b/big.bin": os.urandom(3 * 1024 * 1024),  # past the streaming threshold
    }
    for rel, data in files.items():
        path = server.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    order = list(files)
    got = records(bundle(server, order))
    assert got == [FileRecord(rel, sha(data), data) for rel, data in files.items()] + [
        EndRecord(files=5, errors=0)
    ]
    listing = {f["path"]: f["hash"] for f in http("GET", server.url + "/api/list").json()["files"]}
    assert all(listing[rel] == sha(data) for rel, data in files.items())


def test_missing_and_unsendable_files_get_error_records(server: RunningQuantum) -> None:
    (server.root / "ok.txt").write_bytes(b"fine")
    (server.root / "folder").mkdir()
    (server.root / "inside-link").symlink_to(server.root / "ok.txt")
    outside = server.workdir / "outside-secret.txt"
    outside.write_bytes(b"secret")
    (server.root / "outside-link").symlink_to(outside)
    got = records(
        bundle(server, ["nope.txt", "ok.txt", "folder", "inside-link", "outside-link", "ok.txt"])
    )
    assert [type(r).__name__ for r in got] == [
        "ErrorRecord",
        "FileRecord",
        "ErrorRecord",
        "FileRecord",
        "ErrorRecord",
        "EndRecord",
    ]  # a repeated path is sent once
    missing, ok, folder, inside, escape, end = got
    assert isinstance(missing, ErrorRecord) and missing.code == "not_found"
    assert ok == FileRecord("ok.txt", sha(b"fine"), b"fine")
    assert isinstance(folder, ErrorRecord) and folder.code == "is_directory"
    assert inside == FileRecord("inside-link", sha(b"fine"), b"fine")  # links inside root: ok
    assert isinstance(escape, ErrorRecord) and escape.code == "bad_path"
    assert end == EndRecord(files=2, errors=3)
    assert b"secret" not in bundle(server, ["outside-link"])


@pytest.mark.parametrize(
    "path", ["../escape", "/etc/passwd", "a/../../b", "a//b", "nul\x00byte", "back\\slash", ""]
)
def test_hostile_paths_refuse_the_whole_request(server: RunningQuantum, path: str) -> None:
    (server.root / "fine.txt").write_bytes(b"fine")
    reply = http("POST", server.url + "/api/bundle", json_body={"paths": ["fine.txt", path]})
    assert reply.status == 400
    assert reply.json()["code"] == "bad_path"
    assert b"fine" not in reply.body


def test_reserved_names_are_forbidden(server: RunningQuantum) -> None:
    for path in (".quantum/journal.sqlite3", ".Quantum-sync/state.sqlite3"):
        reply = http("POST", server.url + "/api/bundle", json_body={"paths": [path]})
        assert reply.status == 403
        assert reply.json()["code"] == "reserved"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"files": []}', "bad_request"),
        (b'{"paths": "a.txt"}', "bad_request"),
        (b'{"paths": [1]}', "bad_path"),
        (json.dumps({"paths": ["x"] * (MAX_PATHS + 1)}).encode(), "bad_request"),
    ],
)
def test_malformed_requests(server: RunningQuantum, body: bytes, code: str) -> None:
    reply = http("POST", server.url + "/api/bundle", body, {"Content-Type": "application/json"})
    assert reply.status == 400, reply.body
    assert reply.json()["code"] == code


def test_an_oversized_request_body_is_413(server: RunningQuantum) -> None:
    body = b'{"paths": ["' + b"a" * (5 * 1024 * 1024) + b'"]}'
    reply = http("POST", server.url + "/api/bundle", body, {"Content-Type": "application/json"})
    assert reply.status == 413
    assert reply.json()["code"] == "too_large"


def test_only_post_is_allowed(server: RunningQuantum) -> None:
    reply = http("GET", server.url + "/api/bundle")
    assert reply.status == 405
    assert reply.header("Allow") == "POST"


def test_a_big_file_is_streamed_not_held_in_memory(server: RunningQuantum) -> None:
    size = 192 * 1024 * 1024
    with (server.root / "huge.bin").open("wb") as out:
        out.truncate(size)  # sparse: cheap to make, full size to send
    pid = server.process.proc.pid if server.process.proc else 0
    peak_before = _peak_rss(pid)
    connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        payload = json.dumps({"paths": ["huge.bin"]})
        connection.request("POST", "/api/bundle", payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        header = json.loads(response.readline())
        assert header == {"path": "huge.bin", "size": size, "hash": header["hash"]}
        digest, remaining = hashlib.sha256(), size
        while remaining:
            chunk = response.read(min(remaining, 1 << 20))
            assert chunk
            digest.update(chunk)
            remaining -= len(chunk)
        assert json.loads(response.readline()) == {"end": True, "files": 1, "errors": 0}
        assert response.read() == b""
    finally:
        connection.close()
    assert digest.hexdigest() == header["hash"] == sha(bytes(1 << 20) * 192)
    assert _peak_rss(pid) - peak_before < 64 * 1024 * 1024


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_auth_and_origins_apply(start_quantum: StartQuantum) -> None:
    server = start_quantum(
        file_sync_config(auth={"tokens": [TOKEN]}), files={"sync-data/a.txt": "a"}
    )
    url = server.url + "/api/bundle"
    refused = http("POST", url, json_body={"paths": ["a.txt"]})
    assert refused.status == 401
    assert refused.json()["code"] == "unauthorized"
    assert http("POST", url, json_body={"paths": ["a.txt"]}, headers=_bearer("wrong")).status == 401
    assert records(bundle(server, ["a.txt"], _bearer(TOKEN)))[0] == FileRecord(
        "a.txt", sha(b"a"), b"a"
    )
    cross_site = {**_bearer(TOKEN), "Origin": "https://evil.example"}
    reply = http("POST", url, json_body={"paths": ["a.txt"]}, headers=cross_site)
    assert reply.status == 403
    assert reply.json()["code"] == "forbidden_origin"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- in process: the format and the reader ----------------------------------------------------


def test_the_decoder_accepts_any_split_of_the_stream() -> None:
    body = (
        file_header("a", 3, sha(b"abc"))
        + b"abc"
        + error_record("b", "not_found", "gone")
        + file_header("c", 0, sha(b""))
        + end_record(2, 1)
    )
    expected = [
        FileRecord("a", sha(b"abc"), b"abc"),
        ErrorRecord("b", "not_found", "gone"),
        FileRecord("c", sha(b""), b""),
        EndRecord(2, 1),
    ]
    for split in range(len(body) + 1):
        decoder = BundleDecoder(max_file_size=10)
        assert decoder.feed(body[:split]) + decoder.feed(body[split:]) == expected
        decoder.finish()


@pytest.mark.parametrize(
    "body",
    [
        b"not json\n",
        b"[1]\n",
        b'{"size": 1, "hash": "' + b"0" * 64 + b'"}\n',
        b'{"path": "a", "size": -1, "hash": "' + b"0" * 64 + b'"}\n',
        b'{"path": "a", "size": 11, "hash": "' + b"0" * 64 + b'"}\n',  # more than asked for
        b'{"path": "a", "size": 1, "hash": "XYZ"}\n',
        b'{"path": "a", "error": 5}\n',
        end_record(0, 0) + b"trailing",
        b"x" * 70_000,  # a header line that never ends
    ],
)
def test_the_decoder_refuses_malformed_bundles(body: bytes) -> None:
    with pytest.raises(BundleError):
        BundleDecoder(max_file_size=10).feed(body)


@pytest.mark.parametrize(
    "path", ["dir/a b.txt", 'quote"d', "back\\slash", "caf\u00e9", "tab\there", "del\x7f", "\u2028"]
)
def test_file_headers_are_the_json_line_of_their_fields(path: str) -> None:
    header = file_header(path, 12, "ab" * 32)
    assert header.endswith(b"\n") and b"\n" not in header[:-1]
    assert json.loads(header) == {"path": path, "size": 12, "hash": "ab" * 32}
    assert header == (
        json.dumps({"path": path, "size": 12, "hash": "ab" * 32}, separators=(",", ":")).encode()
        + b"\n"
    )


@pytest.mark.parametrize(
    "path", ["dir/a b.txt", 'quote"d', "back\\slash", "caf\u00e9", "tab\there", "", "[x]~"]
)
def test_the_decoder_reads_every_header_the_server_writes(path: str) -> None:
    digest = sha(b"abc")
    body = file_header(path, 3, digest) + b"abc" + end_record(1, 0)
    assert BundleDecoder(3).feed(body) == [FileRecord(path, digest, b"abc"), EndRecord(1, 0)]
    with pytest.raises(BundleError, match="larger"):
        BundleDecoder(2).feed(body)


@pytest.mark.parametrize(
    "header",
    [
        b'{"path":"a","size":03,"hash":"' + b"a" * 64 + b'"}',
        b'{"path":"a","size":3,"hash":"' + b"A" * 64 + b'"}',
        b'{"path":"a","size":-3,"hash":"' + b"a" * 64 + b'"}',
    ],
)
def test_the_decoder_refuses_near_miss_headers(header: bytes) -> None:
    with pytest.raises(BundleError):
        BundleDecoder(10).feed(header + b"\nabc")


def test_a_bundle_without_its_end_record_was_cut_short() -> None:
    decoder = BundleDecoder(max_file_size=10)
    assert decoder.feed(file_header("a", 3, sha(b"abc")) + b"ab") == []
    with pytest.raises(BundleError):
        decoder.finish()


def test_the_reader_batches_caps_and_hands_over_large_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for n in range(6):
        (root / f"f{n}").write_bytes(b"%d" % n * 100)
    (root / "large").write_bytes(b"L" * (2 * 1024 * 1024))
    hashes = HashCache()
    reader = BundleReader(
        SafeRoot(root),
        hashes,
        ["f0", "f1", "large", "f2", "f3", "f4", "f5"],
        max_bytes=2 * 1024 * 1024 + 500,  # f5 no longer fits
        batch_files=2,
    )
    batches = []
    try:
        while not reader.done:
            batches.append(reader.next_batch())
    finally:
        reader.close()
    assert len(batches) == 4
    assert [r.path for r in records(batches[0].data + end_record(0, 0))[:-1]] == ["f0", "f1"]
    assert batches[1].data == file_header("large", 2 * 1024 * 1024, sha(b"L" * 2 * 1024 * 1024))
    assert [r.path for r in records(batches[2].data + end_record(0, 0))[:-1]] == ["f2", "f3"]
    large = batches[1].large
    assert isinstance(large, LargeFile)
    try:
        assert (large.path, large.size) == ("large", 2 * 1024 * 1024)
        assert large.digest == sha(b"L" * (2 * 1024 * 1024))
        assert os.pread(large.fd, 4, 0) == b"LLLL"
    finally:
        os.close(large.fd)
    tail = records(batches[3].data + end_record(0, 0))
    assert [type(r).__name__ for r in tail] == ["FileRecord", "ErrorRecord", "EndRecord"]
    assert isinstance(tail[1], ErrorRecord) and tail[1].code == "over_limit"
    assert (reader.files, reader.errors) == (6, 1)
    # Hashes computed while reading are cached for listings and single downloads.
    assert hashes.get(StatKey.of((root / "f0").stat())) == sha(b"0" * 100)
