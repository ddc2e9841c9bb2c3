"""Handing written bytes to the disk early, so the ``fsync`` that makes a file durable waits
for its tail only (a 1 GiB file: ~0.5 s instead of up to 1.8 s here).

``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts writeback without waiting and promises
nothing; durability still comes from the ``fsync`` after it. Where libc lacks it, nothing
happens. Shared by the server (files assembled from chunks) and the sync client (downloads).
"""

from __future__ import annotations

import functools
from typing import Any

WRITE_BEHIND = 16 * 1024 * 1024
"""Written bytes are handed to the disk every this many bytes."""
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to disk."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


@functools.cache
def _sync_file_range() -> Any:
    import ctypes

    function = libc_function("sync_file_range")
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


@functools.cache
def libc_function(name: str) -> Any:
    """``name`` from the C library, or ``None`` where it has none."""
    import ctypes  # only once a file is written

    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
