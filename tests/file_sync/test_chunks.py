"""Content-defined chunking and manifests (quantum_file_sync.chunks)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from quantum_file_sync.chunks import (
    MAX_CHUNK,
    MIN_CHUNK,
    RECORD_HEADER_MAX,
    Manifest,
    ManifestError,
    manifest_of_file,
    missing_from,
    parse_record_header,
    record_header,
)


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_manifest_describes_the_file(tmp_path: Path) -> None:
    data = random_bytes(9 * 1024 * 1024 + 17, 1)
    _, manifest = manifest_of_file(write(tmp_path / "f", data))
    assert manifest.hash == hashlib.sha256(data).hexdigest()
    assert manifest.size == len(data)
    assert manifest.chunks[0].offset == 0
    for before, after in zip(manifest.chunks, manifest.chunks[1:], strict=False):
        assert after.offset == before.end
    assert manifest.chunks[-1].end == len(data)
    for ref in manifest.chunks:
        piece = data[ref.offset : ref.end]
        assert hashlib.sha256(piece).hexdigest() == ref.hash
        assert ref.size <= MAX_CHUNK
    assert all(ref.size >= MIN_CHUNK for ref in manifest.chunks[:-1])


def test_empty_and_small_files(tmp_path: Path) -> None:
    _, empty = manifest_of_file(write(tmp_path / "e", b""))
    assert empty == Manifest(hashlib.sha256().hexdigest(), 0, ())
    _, small = manifest_of_file(write(tmp_path / "s", b"hello"))
    assert [c.size for c in small.chunks] == [5]


def test_an_insert_in_the_middle_changes_at_most_two_chunks(tmp_path: Path) -> None:
    data = random_bytes(32 * 1024 * 1024, 2)
    middle = len(data) // 2
    _, before = manifest_of_file(write(tmp_path / "a", data))
    _, after = manifest_of_file(write(tmp_path / "b", data[:middle] + b"!" + data[middle:]))
    assert len(missing_from(after, {c.hash for c in before.chunks})) <= 2


def test_json_round_trip() -> None:
    data = random_bytes(3 * 1024 * 1024, 3)
    digest = hashlib.sha256(data).hexdigest()
    body = {
        "hash": digest,
        "size": 10,
        "chunks": [{"hash": "a" * 64, "size": 4}, {"hash": "b" * 64, "size": 6}],
    }
    manifest = Manifest.from_json(body, max_size=100)
    assert [c.offset for c in manifest.chunks] == [0, 4]
    again = Manifest.from_json(manifest.to_json("x"), max_size=100)
    assert again == manifest


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"hash": "A" * 64, "size": 1, "chunks": []}, "64 lowercase hex"),
        ({"hash": "a" * 63, "size": 1, "chunks": []}, "64 lowercase hex"),
        ({"hash": "a" * 64, "size": -1, "chunks": []}, "non-negative"),
        ({"hash": "a" * 64, "size": 1000, "chunks": []}, "over the limit"),
        ({"hash": "a" * 64, "size": 4, "chunks": {}}, "must be a list"),
        ({"hash": "a" * 64, "size": 4, "chunks": [{"hash": "b" * 64, "size": 0}]}, "between"),
        (
            {"hash": "a" * 64, "size": 4, "chunks": [{"hash": "b" * 65, "size": 4}]},
            "chunks[0].hash",
        ),
        (
            {
                "hash": "a" * 64,
                "size": 8,
                "chunks": [
                    {"hash": "b" * 64, "size": 4, "offset": 0},
                    {"hash": "c" * 64, "size": 4, "offset": 2},
                ],
            },
            "in order",
        ),
        (
            {
                "hash": "a" * 64,
                "size": 8,
                "chunks": [
                    {"hash": "b" * 64, "size": 4, "offset": 4},
                    {"hash": "c" * 64, "size": 4, "offset": 0},
                ],
            },
            "in order",
        ),
        ({"hash": "a" * 64, "size": 8, "chunks": [{"hash": "b" * 64, "size": 4}]}, "add up to 4"),
        ({"hash": "a" * 64, "size": 2, "chunks": [{"hash": "b" * 64, "size": 4}]}, "more than"),
        ({"hash": "a" * 64, "size": 4, "chunks": [{"hash": "b" * 64, "size": True}]}, "integer"),
    ],
)
def test_bad_manifests_are_refused(body: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Manifest.from_json(body, max_size=100)


def test_record_headers_round_trip() -> None:
    digest = "c" * 64
    assert parse_record_header(record_header(digest, 42)) == (digest, 42)
    assert len(record_header(digest, MAX_CHUNK)) <= RECORD_HEADER_MAX


@pytest.mark.parametrize(
    "line",
    [
        b"c" * 64 + b" 42",
        b"c" * 63 + b" 42\n",
        b"c" * 64 + b" 0\n",
        b"c" * 64 + b" -1\n",
        b"c" * 64 + b" 99999999\n",
        b"c" * 64 + b"\n",
        b"\xff" * 64 + b" 1\n",
    ],
)
def test_bad_record_headers_are_refused(line: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_record_header(line)
