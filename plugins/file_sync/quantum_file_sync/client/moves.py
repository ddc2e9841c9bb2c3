"""Local moves: a tracked path vanished and an untracked one appeared with the same identity.

A rename keeps a file's inode, size and mtime (and a directory's inode), so pairing them turns
"delete + upload" into one server-side move, without transferring a byte. Only top-most moves are
kept: the children of a moved directory move with it. Directory moves come first, since a file
may have moved into a directory that moved in the same batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from quantum_file_sync.client.local import StatKey
from quantum_file_sync.client.state import BaseEntry

_Identity = tuple[bool, int, int, int]


@dataclass(frozen=True, slots=True)
class LocalMove:
    source: str
    target: str
    is_dir: bool


def _base_identity(entry: BaseEntry) -> _Identity:
    if entry.is_dir:
        return (True, entry.inode, 0, 0)
    return (False, entry.inode, entry.size, entry.mtime_ns)


def _key_identity(key: StatKey) -> _Identity:
    if key.is_dir:
        return (True, key.inode, 0, 0)
    return (False, key.inode, key.size, key.mtime_ns)


def detect_moves(
    vanished: Mapping[str, BaseEntry], appeared: Mapping[str, StatKey]
) -> list[LocalMove]:
    """Pairs (vanished tracked path → appeared untracked path) with one identity each side."""
    sources: dict[_Identity, list[str]] = {}
    for path, entry in vanished.items():
        if entry.inode:
            sources.setdefault(_base_identity(entry), []).append(path)
    targets: dict[_Identity, list[str]] = {}
    for path, key in appeared.items():
        targets.setdefault(_key_identity(key), []).append(path)
    pairs = [
        LocalMove(src[0], targets[identity][0], identity[0])
        for identity, src in sources.items()
        if len(src) == 1 and len(targets.get(identity, ())) == 1
    ]
    moved_dirs = [m.source for m in pairs if m.is_dir]
    return sorted(
        (m for m in pairs if not any(m.source.startswith(d + "/") for d in moved_dirs)),
        key=lambda m: (not m.is_dir, m.source),  # directories first: files may move into them
    )
