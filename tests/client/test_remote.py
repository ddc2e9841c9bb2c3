"""RemoteClient against a real server: pagination, preconditions, verified transfers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from quantum_file_sync.client.local import FileUnstable, StatKey, TempDownload
from quantum_file_sync.client.remote import HashMismatch, PreconditionFailed, RemoteClient

from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config


@pytest.fixture
def server(start_quantum: StartQuantum) -> RunningQuantum:
    return start_quantum(file_sync_config(enable_upload=True))


@pytest.fixture
async def remote(server: RunningQuantum) -> AsyncIterator[RemoteClient]:
    async with aiohttp.ClientSession() as session:
        yield RemoteClient(session, server.url, "test-client", None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_listing_follows_pages(server: RunningQuantum, remote: RemoteClient) -> None:
    for n in range(7):
        (server.root / f"f{n}").write_bytes(b"%d" % n)
    listing = await remote.list(page_size=3)
    assert sorted(listing.entries) == [f"f{n}" for n in range(7)]
    assert listing.entries["f3"].hash == sha(b"3")


async def test_uploads_carry_preconditions(
    server: RunningQuantum, remote: RemoteClient, tmp_path: Path
) -> None:
    source = tmp_path / "local"
    source.write_bytes(b"first")
    key = StatKey.of(source.stat())
    entry = await remote.upload("doc.txt", str(source), key, sha(b"first"), if_match=None)
    assert entry.hash == sha(b"first")
    with pytest.raises(PreconditionFailed):  # "create only", but it exists now
        await remote.upload("doc.txt", str(source), key, sha(b"first"), if_match=None)
    source.write_bytes(b"second")
    key = StatKey.of(source.stat())
    with pytest.raises(PreconditionFailed):  # based on a version the server no longer has
        await remote.upload("doc.txt", str(source), key, sha(b"second"), if_match="0" * 64)
    await remote.upload("doc.txt", str(source), key, sha(b"second"), if_match=sha(b"first"))
    assert (server.root / "doc.txt").read_bytes() == b"second"


async def test_a_file_changing_during_a_streamed_upload_is_never_committed(
    server: RunningQuantum, remote: RemoteClient, tmp_path: Path
) -> None:
    source = tmp_path / "big"
    data = os.urandom(6 * 1024 * 1024)
    source.write_bytes(data)
    key = StatKey.of(source.stat())
    # The announced digest is not what the file holds (as if it changed while being read):
    # the body is aborted before its last chunk, so the server must discard it.
    with pytest.raises(FileUnstable):
        await remote.upload("big", str(source), key, sha(b"another version"), if_match=None)
    listing = await remote.list()
    assert "big" not in listing.entries
    assert not (server.root / "big").exists()


async def test_downloads_are_verified(
    server: RunningQuantum, remote: RemoteClient, tmp_path: Path
) -> None:
    (server.root / "x").write_bytes(b"content")
    area = tmp_path / "downloads"
    area.mkdir()
    with TempDownload(area) as temp:
        await remote.download("x", sha(b"content"), temp)
        assert temp.hexdigest() == sha(b"content")
    with TempDownload(area) as temp, pytest.raises(HashMismatch):
        await remote.download("x", sha(b"what we expected"), temp)
    assert list(area.iterdir()) == []
