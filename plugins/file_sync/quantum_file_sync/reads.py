"""Opening files under root for reading without disturbing them.

Reading a file updates its access time (with ``relatime``: the first read after each change),
an inode write per download that nothing here needs, and a metadata change the disk watcher
could only treat as a possible rewrite. ``O_NOATIME`` avoids it; the kernel only grants it to the
file's owner (or with ``CAP_FOWNER``), so on ``EPERM`` the file is opened without it.
"""

from __future__ import annotations

import os

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
"""Never a final symbolic link; never blocks on a FIFO."""
_NOATIME = getattr(os, "O_NOATIME", 0)


def open_for_reading(
    path: str | os.PathLike[str], *, dir_fd: int | None = None, flags: int = READ_FLAGS
) -> int:
    """``os.open`` for reading, with ``O_NOATIME`` where the kernel allows it. Blocking."""
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME, dir_fd=dir_fd)
        except PermissionError:
            pass  # not the file's owner: O_NOATIME is refused, a plain open may not be
    return os.open(path, flags, dir_fd=dir_fd)
