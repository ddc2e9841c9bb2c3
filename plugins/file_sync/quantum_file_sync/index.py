"""What is known about root: the tree on disk (:func:`walk`) and its journaled state (``Index``).

The index holds, for every path, the version that was last journaled (or found at start-up).
The API updates it *before* it journals a change, and the disk watcher compares the disk against
it, so a change the API made is never broadcast a second time by the watcher.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from quantum_file_sync.metadata import HashCache, StatKey
from quantum_file_sync.operations import Delete, Move, Operation, Purge
from quantum_file_sync.paths import (
    SafeRoot,
    is_reserved_name,
    join,
    name_problem,
    parent,
    validate,
)

SNAPSHOT_FORMAT = 1
JournalPosition = tuple[str, int]
"""(epoch, seq)."""


@dataclass(frozen=True, slots=True)
class Entry:
    is_dir: bool
    key: StatKey
    hash: str | None
    """SHA-256 of a file when known (``None`` for directories, or not hashed yet)."""

    @classmethod
    def of(cls, st: os.stat_result, digest: str | None) -> Entry:
        is_dir = stat.S_ISDIR(st.st_mode)
        return cls(is_dir, StatKey.of(st), None if is_dir else digest)

    def same_version(self, st: os.stat_result) -> bool:
        """Whether ``st`` is (by its stat identity) the version this entry records."""
        if stat.S_ISDIR(st.st_mode):
            return self.is_dir
        return not self.is_dir and self.key == StatKey.of(st)


EntryLookup = Callable[[str], Entry | None]


def syncable(st: os.stat_result) -> bool:
    """Only regular files and directories are synced (never links, sockets, devices...)."""
    return stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)


def walk(
    root: SafeRoot,
    start: str = "",
    *,
    recursive: bool = True,
    after: tuple[str, ...] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """Entries below ``start`` in path-segment order (a directory right before its contents).

    Skips the reserved top-level names, symbolic links, special files and names the API could
    not address. ``after`` resumes behind that path (segment tuple), skipping whole subtrees.
    Blocking; vanished entries are skipped silently."""
    stack: list[Iterator[os.DirEntry[str]]] = []
    prefixes: list[str] = []

    def push(directory: str) -> None:
        try:
            with os.scandir(root.join(directory)) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        stack.append(iter(entries))
        prefixes.append(directory)

    push(start)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            prefixes.pop()
            continue
        directory = prefixes[-1]
        if (not directory and is_reserved_name(entry.name)) or name_problem(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not syncable(st):
            continue
        rel = join(directory, entry.name)
        is_dir = stat.S_ISDIR(st.st_mode)
        if after is not None:
            parts = tuple(rel.split("/"))
            if parts <= after:
                if is_dir and recursive and after[: len(parts)] == parts:
                    push(rel)
                continue
        yield rel, st
        if is_dir and recursive:
            push(rel)


class Index:
    """Journaled state of root: path → :class:`Entry`, with a child map for subtree operations."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._children: dict[str, set[str]] = {}
        self.version = 0
        """Incremented by every change (tells when a snapshot is due)."""
        self.journal: JournalPosition | None = None
        """Of a loaded snapshot: the journal position it reflects (``None``: unknown)."""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, rel: str) -> Entry | None:
        return self._entries.get(rel)

    def put(self, rel: str, entry: Entry) -> None:
        old = self._entries.get(rel)
        if old is not None and old.is_dir and not entry.is_dir:
            self.remove_tree(rel)
        self._entries[rel] = entry
        self._children.setdefault(parent(rel), set()).add(rel)
        self.version += 1

    def subtree(self, rel: str) -> list[str]:
        """``rel`` (when known) and every known path below it, parents first."""
        found = [rel] if rel in self._entries else []
        pending = [rel]
        while pending:
            children = sorted(self._children.get(pending.pop(), ()))
            found.extend(children)
            pending.extend(children)
        return found

    def remove_tree(self, rel: str) -> list[str]:
        """Forget ``rel`` and everything below it; returns the forgotten paths."""
        removed = self.subtree(rel)
        for path in removed:
            self._entries.pop(path, None)
            self._children.pop(path, None)
        self.version += 1
        siblings = self._children.get(parent(rel))
        if siblings is not None:
            siblings.discard(rel)
            if not siblings:
                del self._children[parent(rel)]
        return removed

    def move_tree(self, source: str, target: str) -> None:
        """Re-key ``source`` and its subtree to ``target`` (entries keep their versions)."""
        moved = {path: self._entries[path] for path in self.subtree(source)}
        self.remove_tree(source)
        self.remove_tree(target)
        for path, entry in moved.items():
            self.put(target + path[len(source) :], entry)

    def children(self, rel: str) -> list[str]:
        """Known direct children of ``rel``."""
        return sorted(self._children.get(rel, ()))

    def paths(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[tuple[str, Entry]]:
        return list(self._entries.items())

    def replace(self, entries: Iterable[tuple[str, Entry]]) -> None:
        """Hold exactly ``entries`` from now on (the journaled state loaded from the broker)."""
        self._entries.clear()
        self._children.clear()
        for rel, entry in entries:
            self._entries[rel] = entry
            self._children.setdefault(parent(rel), set()).add(rel)
        self.version += 1

    def save(self, path: Path, journal: JournalPosition | None = None) -> None:
        """Write a snapshot atomically (blocking), for :func:`load` at the next start.
        ``journal``: the newest journaled change the index already reflects (read before)."""
        rows = [
            [rel, e.is_dir, e.key.dev, e.key.ino, e.key.size, e.key.mtime_ns, e.hash]
            for rel, e in self._entries.items()
        ]
        data: dict[str, object] = {"format": SNAPSHOT_FORMAT, "entries": rows}
        if journal is not None:
            data["epoch"], data["seq"] = journal
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with temp.open("w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> Index | None:
        """The snapshot at ``path``, or ``None`` when there is none (or it is unreadable)."""
        try:
            with path.open(encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("format") != SNAPSHOT_FORMAT:
                return None
            index = cls()
            for rel, is_dir, dev, ino, size, mtime_ns, digest in data["entries"]:
                validate(rel)  # it is only a file on disk: never trust it to stay under root
                index.put(rel, Entry(bool(is_dir), StatKey(dev, ino, size, mtime_ns), digest))
            if isinstance(data.get("epoch"), str) and isinstance(data.get("seq"), int):
                index.journal = (data["epoch"], data["seq"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None
        return index

    def apply(self, operation: Operation) -> None:
        """Bring a loaded snapshot up to a journaled operation it may not reflect yet (the
        journal runs ahead of a snapshot saved up to 30 s before a crash). An entry that
        already holds the journaled version keeps its stat identity; a new one gets none that
        a file on disk could match, so the rescan compares it by content."""
        if isinstance(operation, Purge):
            return
        if isinstance(operation, Delete):
            self.remove_tree(operation.path)
            return
        if isinstance(operation, Move) and operation.from_path in self._entries:
            self.move_tree(operation.from_path, operation.metadata.path)
        meta = operation.metadata
        current = self._entries.get(meta.path)
        if current is None or current.is_dir != meta.is_directory or current.hash != meta.hash:
            unknown = StatKey(0, 0, meta.size, -1)
            self.put(meta.path, Entry(meta.is_directory, unknown, meta.hash))


def scan(root: SafeRoot, hashes: HashCache) -> Index:
    """The index of what is on disk now (hashes only where already cached). Blocking."""
    index = Index()
    for rel, st in walk(root):
        index.put(rel, Entry.of(st, hashes.get(StatKey.of(st))))
    return index
