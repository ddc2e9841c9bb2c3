"""The one safe path resolver: every client-supplied path goes through here.

A *relative path* (``rel``) is the canonical form used everywhere (API, WebSocket patterns,
journal, index): segments joined by ``/``, no leading or trailing slash, ``""`` for the root.
:func:`validate` refuses anything that could name a file outside ``root`` or a reserved one
before the filesystem is touched; :class:`SafeRoot` then resolves a valid path against the disk:
reads may follow symbolic links that stay inside ``root``; writes never follow a link at all
(every directory of the chain is opened with ``O_NOFOLLOW``, relative to its parent's descriptor).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
RESERVED_PREFIX = ".quantum"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# C0 controls, DEL and C1 controls: never part of a name a user means to sync.
_FORBIDDEN_CHARS = frozenset(
    [chr(c) for c in range(0x20)] + [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)] + ["\\"]
)


class PathError(ValueError):
    """A path that must be refused: 400 ``bad_path``, or 403 ``reserved`` for Quantum's names."""

    def __init__(self, message: str, *, reserved: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reserved = reserved

    @property
    def status(self) -> int:
        return 403 if self.reserved else 400

    @property
    def code(self) -> str:
        return "reserved" if self.reserved else "bad_path"


def is_reserved_name(name: str) -> bool:
    """Whether a top-level entry of root belongs to Quantum (``.quantum``, ``.quantum-sync``...).

    Case-insensitive, so a case-insensitive filesystem cannot be used to reach them."""
    return name.lower().startswith(RESERVED_PREFIX)


def is_reserved(rel: str) -> bool:
    """Whether a canonical relative path lies in the reserved area."""
    return is_reserved_name(rel.split("/", 1)[0]) if rel else False


def name_problem(segment: str) -> str | None:
    """Why one path segment is refused, or ``None`` when it is a valid name."""
    if not segment:
        return "empty path segment"
    if segment in (".", ".."):
        return "'.' and '..' segments are not allowed"
    try:
        size = len(segment.encode("utf-8"))
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if size > MAX_NAME_BYTES:
        return f"a name is longer than {MAX_NAME_BYTES} bytes"
    if any(char in _FORBIDDEN_CHARS for char in segment):
        return "name contains a control character or a backslash"
    return None


def validate(path: object, *, allow_root: bool = False) -> str:
    """Return ``path`` as a canonical relative path or raise :class:`PathError`.

    ``allow_root`` accepts ``""`` (and ``"/"``) as the root itself, for listings."""
    if not isinstance(path, str):
        raise PathError("path must be a string")
    if allow_root and path in ("", "/"):
        return ""
    if not path:
        raise PathError("empty path")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise PathError("path is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise PathError(f"path longer than {MAX_PATH_BYTES} bytes")
    if any(char in _FORBIDDEN_CHARS for char in path):
        raise PathError("path contains a control character or a backslash")
    if path.startswith("/"):
        raise PathError("absolute paths are not allowed")
    segments = path.split("/")
    for segment in segments:
        problem = name_problem(segment)
        if problem:
            raise PathError(problem)
    if is_reserved_name(segments[0]):
        raise PathError(f"names starting with {RESERVED_PREFIX!r} are reserved", reserved=True)
    return path


def decode_url_path(raw: str) -> str:
    """Percent-decode a raw URL path strictly: invalid or overlong UTF-8 is refused, not kept
    escaped (aiohttp's decoded ``request.path`` keeps such bytes as ``%XX``)."""
    try:
        return unquote_to_bytes(raw).decode("utf-8", "strict")
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise PathError("path is not valid UTF-8") from None


def parent(rel: str) -> str:
    return rel.rpartition("/")[0]


def name(rel: str) -> str:
    return rel.rpartition("/")[2]


def join(directory: str, child: str) -> str:
    return f"{directory}/{child}" if directory else child


def is_within(rel: str, ancestor: str) -> bool:
    """``rel`` is ``ancestor`` or lies below it (``""`` contains everything)."""
    return not ancestor or rel == ancestor or rel.startswith(ancestor + "/")


def ancestors(rel: str) -> list[str]:
    """Proper ancestors of ``rel``, outermost first (the root excluded)."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass
class OpenedDirectory:
    """A directory opened without following links; ``created`` lists the directories made on
    the way (outermost first), each already durable in its parent."""

    fd: int
    created: list[str] = field(default_factory=list)


class SafeRoot:
    """``root`` on disk, with resolution that never leaves it."""

    def __init__(self, root: Path) -> None:
        self.path = Path(os.path.realpath(root))
        self._prefix = str(self.path).rstrip("/") + "/"

    def join(self, rel: str) -> Path:
        """The path of ``rel`` on disk, without resolving anything (for display and scans)."""
        return self.path / rel if rel else self.path

    def relative(self, absolute: str) -> str | None:
        """The canonical relative path of an absolute path under root, else ``None``."""
        if absolute == str(self.path):
            return ""
        if absolute.startswith(self._prefix):
            return absolute[len(self._prefix) :]
        return None

    def resolve_for_read(self, rel: str) -> Path:
        """The real path of ``rel``, following links only while they stay inside root and
        outside the reserved area."""
        real = os.path.realpath(self.join(rel))
        inside = self.relative(real)
        if inside is None:
            raise PathError("path leaves the root through a symbolic link")
        if is_reserved(inside):
            raise PathError("path leads into a reserved directory", reserved=True)
        return Path(real)

    @contextmanager
    def open_directory(self, rel: str, *, create: bool = False) -> Iterator[OpenedDirectory]:
        """Open directory ``rel`` walking from root one ``O_NOFOLLOW`` step at a time.

        Raises :class:`PathError` when a step is a symbolic link, ``NotADirectoryError`` when it
        is something else, ``FileNotFoundError`` when missing (unless ``create``)."""
        opened = OpenedDirectory(os.open(self.path, _DIR_FLAGS))
        try:
            done: list[str] = []
            for segment in rel.split("/") if rel else []:
                done.append(segment)
                fd = self._step(opened, segment, "/".join(done), create)
                os.close(opened.fd)
                opened.fd = fd
            yield opened
        finally:
            os.close(opened.fd)

    def _step(self, opened: OpenedDirectory, segment: str, rel: str, create: bool) -> int:
        for _ in range(3):  # a concurrent mkdir/rmdir of the same name is retried
            try:
                return os.open(segment, _DIR_FLAGS, dir_fd=opened.fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(segment, dir_fd=opened.fd)
                except FileExistsError:
                    continue
                os.fsync(opened.fd)
                opened.created.append(rel)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = os.stat(segment, dir_fd=opened.fd, follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    raise PathError(f"{rel!r} is a symbolic link") from None
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", rel) from None
        raise FileNotFoundError(errno.ENOENT, "directory keeps disappearing", rel)
