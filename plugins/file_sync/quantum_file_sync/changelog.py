"""The change log: journal + broadcast behind one interface.

Every committed change goes through :meth:`ChangeLog.commit`, which durably journals it (assigning
``epoch``/``seq``/``op_id``) and delivers it to every listener on every node exactly once.
Implementations: the embedded default (SQLite journal, in-process fan-out) and Redis (a Stream
plus pub/sub). One conformance suite (tests/file_sync/test_changelog_conformance.py) runs
against both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

from quantum_file_sync.operations import ChangeEvent, Operation

Listener = Callable[[ChangeEvent], None]
EpochListener = Callable[[str], None]


class ChangeLogUnavailable(RuntimeError):
    """``commit`` could not journal the change (e.g. the Redis broker is unreachable). The file
    change itself stands; the journal marks the gap so catch-up answers ``recovered: false``."""


class ChangeLog(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Open storage / connections. A lost or reset journal starts a new epoch here."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def epoch(self) -> str: ...

    @abc.abstractmethod
    async def head(self) -> int:
        """The seq of the newest committed change (0 before any)."""

    @abc.abstractmethod
    async def commit(self, operation: Operation, source_client: str | None) -> ChangeEvent:
        """Journal ``operation`` and broadcast it; returns the event once it is durable."""

    @abc.abstractmethod
    async def replay(self, epoch: str, since: int) -> Sequence[ChangeEvent] | None:
        """Events with seq > ``since`` in order, or ``None`` when the journal cannot replay
        them (another epoch, or ``since`` older than retention)."""

    @abc.abstractmethod
    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) for every committed event from any node,
        in seq order; returns an unsubscribe function."""

    def owns_disk_watch(self) -> bool:
        """Whether this node should publish changes seen by its disk watcher (one node per
        shared root; the Redis implementation holds a lease)."""
        return True

    def on_epoch_change(self, listener: EpochListener) -> Callable[[], None]:
        """Call ``listener(new_epoch)`` when the journal moves to another epoch while open
        (its history was lost): live subscribers must resync. The embedded journal only
        changes epoch when it is reopened, so by default this never fires."""
        return lambda: None
