"""Bulk downloads for a full pass: small files fetched in bundles (``POST /api/bundle``).

One HTTP request per small file costs far more than the file itself, so the files a full pass
plans to download are requested in bundles (a few in flight) instead of being settled one by one.
Each file that arrives is checked against the hash the listing announced, written to a temp file
in ``.quantum-sync/tmp/`` and then:

- a plain creation (nothing at the path locally, the server still has that version, nobody
  settling the path) is installed at once by the settler's ``adopt`` — ``link()``, which never
  overwrites, is its re-check;
- anything else is handed to the path's ordinary settle (``schedule``), which finds the file
  waiting in :meth:`Prefetcher.take` and installs it with the usual re-check of the target.

A file that could not be prefetched (an error record, a bundle that failed or was cut short, an
older server without the endpoint) is scheduled too and downloaded on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantum_file_sync.bundle import BundleError, ErrorRecord, FileRecord, Record
from quantum_file_sync.client.local import TempDownload
from quantum_file_sync.client.remote import (
    BundleUnsupported,
    ConnectionLost,
    HashMismatch,
    RemoteClient,
    RemoteError,
)

FILE_LIMIT = 1024 * 1024
"""Files smaller than this are bundled; larger ones stream on their own."""
BUNDLE_FILES = 500
BUNDLE_BYTES = 4 * 1024 * 1024
IN_FLIGHT = 3

Adopt = Callable[[str, TempDownload], bool]
"""Install an arrived file right away if that is safe; ``False``: settle the path instead."""
Schedule = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Wanted:
    path: str
    hash: str
    size: int
    mtime_ns: int | None = None
    """The server's mtime, set on the temp file as it is written (saves a ``utime`` later)."""


Outcome = TempDownload | HashMismatch | None
"""A verified temp file; proof that the server holds another version; or "fetch it alone"."""


@dataclass(slots=True)
class _Slot:
    wanted: Wanted
    result: asyncio.Future[Outcome]


class Prefetcher:
    def __init__(self, remote: RemoteClient, tmp_dir: Path, log: Any) -> None:
        self.remote = remote
        self.tmp_dir = tmp_dir
        self.log = log
        self.supported = True
        """Until the server showed it has no bundle endpoint."""
        self._slots: dict[str, _Slot] = {}
        self._made: set[TempDownload] = set()
        """Temp files written and not installed on arrival (removed by :meth:`close`)."""
        self._runner: asyncio.Task[None] | None = None
        self._adopt: Adopt = _never_adopt
        self._schedule: Schedule = _never_schedule

    def start(self, wanted: Iterable[Wanted], *, adopt: Adopt, schedule: Schedule) -> set[str]:
        """Fetch the small files of ``wanted`` (in this order) in the background.

        Returns the paths it takes charge of: each one is either installed on arrival by
        ``adopt`` or handed to ``schedule`` once its bundle is done. Wait with
        :meth:`finished`; one batch at a time (:meth:`close` ends it)."""
        if self._runner is not None:
            raise RuntimeError("the previous prefetch was not closed")
        if not self.supported:
            return set()
        loop = asyncio.get_running_loop()
        slots = [_Slot(w, loop.create_future()) for w in wanted if w.size < FILE_LIMIT]
        if not slots:
            return set()
        self._adopt, self._schedule = adopt, schedule
        self._slots = {slot.wanted.path: slot for slot in slots}
        self._runner = asyncio.create_task(self._run(slots), name="prefetch")
        return set(self._slots)

    async def finished(self) -> None:
        """Until every path of :meth:`start` was installed or scheduled."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    async def take(self, path: str, digest: str) -> TempDownload | None:
        """The prefetched file for ``path`` in version ``digest`` (waiting for its bundle), or
        ``None``: download it on its own. Raises :class:`HashMismatch` when the bundle showed
        the server holds another version now. The caller owns (installs or discards) the file."""
        slot = self._slots.pop(path, None)
        if slot is None or slot.wanted.hash != digest:  # not fetched, or for an older view
            return None
        if slot.result.done():
            outcome = None if slot.result.cancelled() else slot.result.result()
        else:
            try:
                outcome = await asyncio.shield(slot.result)
            except asyncio.CancelledError:
                if slot.result.cancelled():
                    return None
                raise
        if isinstance(outcome, HashMismatch):
            raise outcome
        return outcome

    async def close(self) -> None:
        """Stop fetching and remove every temp file nobody took."""
        self._adopt, self._schedule = _never_adopt, _never_schedule
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for slot in self._slots.values():
            slot.result.cancel()
        self._slots.clear()
        for download in self._made:
            download.discard()
        self._made.clear()

    # --- fetching ----------------------------------------------------------------------------

    async def _run(self, slots: list[_Slot]) -> None:
        bundles = deque(_bundles(slots))
        try:
            await asyncio.gather(*(self._worker(bundles) for _ in range(IN_FLIGHT)))
        finally:
            for slot in slots:  # whatever was not fetched is downloaded on its own
                self._deliver(slot, None)

    async def _worker(self, bundles: deque[list[_Slot]]) -> None:
        while bundles and self.supported:
            await self._fetch(bundles.popleft())

    async def _fetch(self, slots: list[_Slot]) -> None:
        by_path = {slot.wanted.path: slot for slot in slots}
        try:
            async for records in self.remote.bundle(list(by_path), FILE_LIMIT):
                self._receive(records, by_path)
        except BundleUnsupported:
            if self.supported:
                self.supported = False
                self.log.info("the server has no bundle endpoint: one request per file")
        except (ConnectionLost, RemoteError, BundleError) as exc:
            self.log.debug("bundle failed; its files are downloaded one by one", reason=str(exc))
        finally:
            for slot in slots:
                self._deliver(slot, None)

    def _receive(self, records: list[Record], by_path: dict[str, _Slot]) -> None:
        for record in records:
            if not isinstance(record, FileRecord | ErrorRecord):
                continue
            slot = by_path.get(record.path)  # anything not asked for is ignored
            if slot is None or slot.result.done():
                continue
            if isinstance(record, ErrorRecord):
                self.log.debug("not in the bundle", path=record.path, code=record.code)
                self._deliver(slot, None)
                continue
            outcome = _store(self.tmp_dir, slot.wanted, record)
            if isinstance(outcome, TempDownload):
                self._made.add(outcome)
            self._deliver(slot, outcome)

    def _deliver(self, slot: _Slot, outcome: Outcome) -> None:
        if slot.result.done():
            return
        path = slot.wanted.path
        if isinstance(outcome, TempDownload) and self._adopt(path, outcome):
            self._made.discard(outcome)
            self._slots.pop(path, None)
            slot.result.set_result(None)
            return
        slot.result.set_result(outcome)
        self._schedule(path)


def _never_adopt(_path: str, _download: TempDownload) -> bool:
    return False


def _never_schedule(_path: str) -> None:
    pass


def _bundles(slots: list[_Slot]) -> Iterable[list[_Slot]]:
    bundle: list[_Slot] = []
    size = 0
    for slot in slots:
        if bundle and (len(bundle) >= BUNDLE_FILES or size + slot.wanted.size > BUNDLE_BYTES):
            yield bundle
            bundle, size = [], 0
        bundle.append(slot)
        size += slot.wanted.size
    if bundle:
        yield bundle


def _store(tmp_dir: Path, wanted: Wanted, record: FileRecord) -> Outcome:
    """Verify a received file and write it to a temp file (inline: a worker thread was
    measured slower, its hand-offs of the GIL at every system call cost more than they
    overlap)."""
    if record.hash != wanted.hash:
        return HashMismatch(f"{wanted.path}: the server now has {record.hash[:12]}…")
    try:
        download = TempDownload.holding(tmp_dir, record.data, wanted.mtime_ns)
    except OSError:
        return None  # e.g. disk full: the path's own download reports it
    if download.hexdigest() != wanted.hash:
        download.discard()
        return HashMismatch(
            f"{wanted.path}: content hashes to {download.hexdigest()[:12]}…, "
            f"announced {wanted.hash[:12]}…"
        )
    return download
