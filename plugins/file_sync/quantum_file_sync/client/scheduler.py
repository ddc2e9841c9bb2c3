"""The per-path work queue: every path is settled by at most one worker at a time.

Anything that may have changed a path — a watcher event, a server operation, a listing — just
:meth:`PathScheduler.add` s it. A path added while it is being settled is settled once more
afterwards (so the last event always wins); a path added several times while waiting runs once.
``concurrency`` workers bound the parallel transfers. The scheduler also knows the oldest server
``seq`` not yet fully applied (:meth:`pending_seq_floor`), which bounds the resume cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

Worker = Callable[[str], Awaitable[None]]


class PathScheduler:
    def __init__(self, work: Worker, *, concurrency: int) -> None:
        self._work = work
        self._concurrency = concurrency
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._queued: dict[str, int | None] = {}
        """Path waiting in ``_ready`` → the oldest seq it carries (``None``: none)."""
        self._running: dict[str, int | None] = {}
        self._again: dict[str, int | None] = {}
        """Paths added while running: re-queued when their worker finishes."""
        self._delayed: list[tuple[float, int, str, int | None]] = []
        self._tiebreak = itertools.count()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._paused = 0
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self._concurrency):
            self._workers.append(asyncio.create_task(self._worker(), name=f"settle-{n}"))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    async def failed(self) -> BaseException:
        """Wait for a worker to die of an exception the work function did not handle."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    # --- adding work -------------------------------------------------------------------------

    def add(self, path: str, seq: int | None = None) -> None:
        if path in self._running:
            self._again[path] = _oldest(self._again.get(path, seq), seq)
        elif path in self._queued:
            self._queued[path] = _oldest(self._queued[path], seq)
        else:
            self._queued[path] = seq
            self._ready.put_nowait(path)
        self._idle.clear()

    def add_all(self, paths: Iterable[str], seq: int | None = None) -> None:
        for path in paths:
            self.add(path, seq)

    def add_later(self, path: str, delay: float, seq: int | None = None) -> None:
        """Settle ``path`` again after ``delay`` seconds (a retry, a grace period)."""
        loop = asyncio.get_running_loop()
        heapq.heappush(self._delayed, (loop.time() + delay, next(self._tiebreak), path, seq))
        self._idle.clear()
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._delayed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._delayed[0][0], self._release_delayed)

    def _release_delayed(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, path, seq = heapq.heappop(self._delayed)
            self.add(path, seq)
        self._arm_timer()
        self._check_idle()

    # --- state -------------------------------------------------------------------------------

    def busy(self, path: str) -> bool:
        return path in self._queued or path in self._running or path in self._again

    def busy_below(self, directory: str) -> bool:
        """Whether any path strictly below ``directory`` is queued, running or delayed."""
        prefix = directory + "/"
        return any(
            p.startswith(prefix)
            for p in itertools.chain(
                self._queued, self._running, self._again, (d[2] for d in self._delayed)
            )
        )

    def pending_seq_floor(self) -> int | None:
        """The oldest server seq carried by unfinished work (``None`` when there is none)."""
        seqs = [
            s
            for s in itertools.chain(
                self._queued.values(),
                self._running.values(),
                self._again.values(),
                (d[3] for d in self._delayed),
            )
            if s is not None
        ]
        return min(seqs) if seqs else None

    @property
    def pending(self) -> int:
        return len(self._queued) + len(self._running) + len(self._again) + len(self._delayed)

    async def wait_idle(self) -> None:
        """Until nothing is queued, running or delayed."""
        while True:
            await self._idle.wait()
            if self.pending == 0:
                return
            self._idle.clear()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold every worker off while the body runs (for moves of whole subtrees)."""
        self._paused += 1
        self._resumed.clear()
        try:
            while self._running:
                await asyncio.sleep(0.005)
            yield
        finally:
            self._paused -= 1
            if self._paused == 0:
                self._resumed.set()

    def _check_idle(self) -> None:
        if self.pending == 0:
            self._idle.set()

    # --- workers -----------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            path = await self._ready.get()
            await self._resumed.wait()
            seq = self._queued.pop(path, None)
            self._running[path] = seq
            try:
                await self._work(path)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported through failed(); this worker stops
                if self.failure is None:
                    self.failure = exc
                    self._failed.set()
                return
            finally:
                del self._running[path]
                if path in self._again:
                    again = self._again.pop(path)
                    self._queued[path] = again
                    self._ready.put_nowait(path)
                self._check_idle()


def _oldest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
