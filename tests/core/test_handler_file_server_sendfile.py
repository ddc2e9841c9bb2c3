"""file_server on an event loop without ``sendfile`` (like uvloop): the threaded zero-copy path."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from quantum.handlers.file_server import FileServer
from tests.core.handler_harness import serving

CONTENT = bytes(range(256)) * 4096  # 1 MiB


class LoopWithoutSendfile(asyncio.SelectorEventLoop):
    async def sendfile(self, *args: Any, **kwargs: Any) -> int:
        raise NotImplementedError("this loop has no sendfile, like uvloop")


async def fetch_whole_and_range(root: Path) -> None:
    assert isinstance(asyncio.get_running_loop(), LoopWithoutSendfile)
    async with serving(FileServer({"root": str(root)})) as client:
        for _ in range(2):  # keep-alive: the connection is usable after a threaded transfer
            whole = await client.get("/big.bin")
            assert await whole.read() == CONTENT
        part = await client.get("/big.bin", headers={"Range": "bytes=100000-899999"})
        assert part.status == 206
        assert await part.read() == CONTENT[100000:900000]
    # The bytes went through os.sendfile in the file server's threads, not through the writer.
    assert any(thread.name.startswith("quantum-sendfile") for thread in threading.enumerate())


def test_large_files_still_arrive_whole_and_by_range(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(CONTENT)
    with asyncio.Runner(loop_factory=LoopWithoutSendfile) as runner:
        runner.run(fetch_whole_and_range(tmp_path))
