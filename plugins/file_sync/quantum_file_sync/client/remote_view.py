"""What the server holds, as far as the client knows: listing + every operation since.

Each path remembers the ``seq`` that last set it, so a listing (a snapshot at some seq ``L``,
possibly paginated) and live operations can be merged in any arrival order: an operation newer
than ``L`` is never undone by the listing, and operations up to ``L`` arriving late are ignored
(the listing already reflects them). Each path also has a *stamp*, bumped on every change, so
an action started on one remote state can record its result only if nothing newer arrived
meanwhile (:meth:`RemoteView.set_if_unchanged`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quantum_file_sync.client.merge import Version
from quantum_file_sync.operations import Create, Delete, FileMetadata, Move, Operation, Update


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    path: str
    is_dir: bool
    hash: str | None
    size: int
    modified: str

    @property
    def version(self) -> Version:
        return Version(self.is_dir, self.hash)

    @classmethod
    def of(cls, metadata: FileMetadata) -> RemoteEntry:
        is_dir = metadata.is_directory
        return cls(
            metadata.path,
            is_dir,
            None if is_dir else metadata.hash,
            0 if is_dir else metadata.size,
            metadata.modified,
        )

    def moved_to(self, path: str) -> RemoteEntry:
        return RemoteEntry(path, self.is_dir, self.hash, self.size, self.modified)


class RemoteView:
    def __init__(self) -> None:
        self._entries: dict[str, RemoteEntry] = {}
        self._seqs: dict[str, int] = {}
        self._stamps: dict[str, int] = {}
        self._counter = itertools.count(1)
        self.epoch: str | None = None
        self.last_seq = 0
        """The newest operation applied (or listing seq): the resume point."""
        self._unconfirmed: set[str] = set()
        """Paths set by our own action's reply whose operation has not arrived yet: since
        operations arrive in seq order, that operation comes after any arriving now."""

    # --- reading -----------------------------------------------------------------------------

    def get(self, path: str) -> RemoteEntry | None:
        return self._entries.get(path)

    def stamp(self, path: str) -> int:
        return self._stamps.get(path, 0)

    def paths(self) -> Iterable[str]:
        return self._entries.keys()

    def entries(self) -> Mapping[str, RemoteEntry]:
        return self._entries

    def descendants(self, directory: str) -> list[str]:
        prefix = directory + "/"
        return [p for p in self._entries if p.startswith(prefix)]

    # --- writing -----------------------------------------------------------------------------

    def _set(self, path: str, entry: RemoteEntry | None, seq: int | None) -> None:
        if entry is None:
            self._entries.pop(path, None)
        else:
            self._entries[path] = entry
        if seq is not None:
            self._seqs[path] = seq
            self._unconfirmed.discard(path)
        self._stamps[path] = next(self._counter)

    def reset(self, entries: Iterable[RemoteEntry], epoch: str | None, seq: int) -> None:
        """Start from a known state (the merge base, believed current as of ``seq``)."""
        self._entries = {e.path: e for e in entries}
        self._seqs = dict.fromkeys(self._entries, seq)
        self._unconfirmed.clear()
        for path in self._entries:
            self._stamps[path] = next(self._counter)
        self.epoch = epoch
        self.last_seq = seq

    def new_epoch(self, epoch: str) -> None:
        """The server's journal restarted: its seqs are not comparable to ours any more."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.last_seq = 0
            self._seqs = dict.fromkeys(self._seqs, 0)

    def skip(self, seq: int) -> None:
        """An operation the client refused still moves the resume point past it."""
        self.last_seq = max(self.last_seq, seq)

    def apply(self, operation: Operation, seq: int) -> list[str] | None:
        """Apply one journaled operation; returns the touched paths, or ``None`` when it is
        already reflected (a duplicate after reconnect, or older than the listing)."""
        if seq <= self.last_seq:
            return None
        self.last_seq = seq
        touched: list[str] = []
        if isinstance(operation, Create | Update):
            entry = RemoteEntry.of(operation.metadata)
            touched.append(entry.path)
            if not entry.is_dir:
                touched += self._remove_tree(entry.path, seq)  # a directory replaced by a file
            self._set(entry.path, entry, seq)
        elif isinstance(operation, Delete):
            touched.append(operation.path)
            touched += self._remove_tree(operation.path, seq)
            self._set(operation.path, None, seq)
        elif isinstance(operation, Move):
            touched += self._move(
                operation.from_path, RemoteEntry.of(operation.metadata), seq, journaled=True
            )
        # Anything else (a history Purge) changes no live file: only the resume point moves.
        return touched

    def _remove_tree(self, directory: str, seq: int) -> list[str]:
        children = self.descendants(directory)
        for child in children:
            self._set(child, None, seq)
        return children

    def _move(
        self, source: str, target: RemoteEntry, seq: int, *, journaled: bool = False
    ) -> list[str]:
        touched = [source, target.path]
        old = self._entries.get(source)
        self._set(source, None, seq)
        touched += self._remove_tree(target.path, seq)
        self._set(target.path, target, seq)
        if target.is_dir:
            for child in self.descendants(source):
                if journaled and child in self._unconfirmed:
                    continue  # committed after this move: the server left it at the source
                moved_path = target.path + child[len(source) :]
                entry = self._entries[child]
                self._set(child, None, seq)
                self._set(moved_path, entry.moved_to(moved_path), seq)
                touched += [child, moved_path]
        elif old is not None and old.is_dir:
            touched += self._remove_tree(source, seq)
        return touched

    def apply_listing(self, entries: Mapping[str, RemoteEntry], seq: int) -> set[str]:
        """Merge a complete listing taken at ``seq``; returns every path whose entry changed."""
        changed = self._merge(entries, seq, list(self._entries))
        self.last_seq = max(self.last_seq, seq)
        return changed

    def merge_subtree(
        self, directory: str, entries: Mapping[str, RemoteEntry], seq: int
    ) -> set[str]:
        """Merge a complete listing of what lies below ``directory``, taken at ``seq`` (the
        resume point stays where it is); returns every path whose entry changed."""
        return self._merge(entries, seq, self.descendants(directory))

    def _merge(self, entries: Mapping[str, RemoteEntry], seq: int, scope: list[str]) -> set[str]:
        """Entries of the listing replace what is older than ``seq``; paths of ``scope`` the
        listing does not hold are gone (unless an operation newer than ``seq`` set them)."""
        changed: set[str] = set()
        for path, entry in entries.items():
            if self._seqs.get(path, -1) <= seq and self._entries.get(path) != entry:
                self._set(path, entry, seq)
                changed.add(path)
        for path in scope:
            if path not in entries and self._seqs.get(path, -1) <= seq:
                self._set(path, None, seq)
                changed.add(path)
        return changed

    def set_if_unchanged(self, path: str, entry: RemoteEntry | None, stamp: int) -> bool:
        """Record the result of our own action unless an operation for ``path`` arrived since
        ``stamp`` was read (that operation is newer than our action's reply, or is its echo)."""
        if self._stamps.get(path, 0) != stamp:
            return False
        if entry is not None and entry != self._entries.get(path):
            self._unconfirmed.add(path)
        else:
            self._unconfirmed.discard(path)
        self._set(path, entry, None)
        return True

    def move_tree_if_unchanged(self, source: str, target: RemoteEntry, stamp: int) -> bool:
        """Record our own successful move of ``source`` (and, for a directory, its subtree)."""
        if self._stamps.get(source, 0) != stamp:
            return False
        seq = self._seqs.get(source)
        self._move(source, target, seq if seq is not None else self.last_seq)
        return True
