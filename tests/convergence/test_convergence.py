"""Randomized convergence under faults: one real server, two or three real realtime clients.

For ``QUANTUM_CONVERGENCE_SECONDS`` (default 25) the test changes files and directories at
random on every side — each client's folder, the server's root directly on disk and the HTTP
API — while it SIGKILLs and restarts clients, SIGSTOPs and SIGCONTs them, and restarts the
server (gracefully or after a SIGKILL). Then the faults stop, everything is resumed, and the
test waits until every tree (and the server's listing) is identical and stays so.

A model of what the test did decides what must have survived: every content that was
acknowledged — a PUT answered 200/201, a write on the server's disk, a write in a client's
folder while that client was running (or not running at all: the next start scans it) — must
still be at its path (or where a directory rename made just before, that the writer had not
heard of yet, carried it) or in a conflict copy (``NAME.sync-conflict-<time>-<client>.EXT``, of
the file or of a directory on its way), unless the test later wrote, deleted or renamed away that
path or a directory above it. A write into the folder
of a SIGSTOPped client is not required to survive: the client may be frozen between the re-check
of a target and its replacement. Every file left must hold content the test wrote (or a prefix
of it: an in-place write observed half-way, kept as a conflict copy).

The seed is printed; ``QUANTUM_CONVERGENCE_SEED=N`` replays the same random choices (process
timing still differs from run to run), ``QUANTUM_CONVERGENCE_SEED=random`` draws a new one. The
suite's default is a fixed seed, so a CI run never fails on a scenario nobody has seen before;
hunting for bugs is a loop with ``random`` and longer runs (``QUANTUM_CONVERGENCE_SECONDS``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import heapq
import http.client as httpclient
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import pytest
from quantum_file_sync.client.exit_codes import ExitCode

from tests.client.conftest import SyncClient, snapshot
from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config, http
from tests.support.waiting import wait_until

SECONDS = float(os.environ.get("QUANTUM_CONVERGENCE_SECONDS", "25"))
DEFAULT_SEED = 31
"""Passed 25 s runs; the suite replays it unless told otherwise."""
_SEED_SETTING = os.environ.get("QUANTUM_CONVERGENCE_SEED") or str(DEFAULT_SEED)
SEED = secrets.randbits(32) if _SEED_SETTING == "random" else int(_SEED_SETTING)
SETTLE_SECONDS = 120.0
"""Generous: convergence usually takes a few seconds once the faults stop."""
QUIET_SECONDS = 1.5
"""The trees must stay identical this long to count as settled (no retry still pending)."""

DIRS = ("a", "b", "c", "a/x", "b/y")
NAMES = ("f0.txt", "f1.txt", "é x.txt", "Makefile")
FILES = tuple(NAMES) + tuple(f"{d}/{n}" for d in DIRS for n in NAMES)
"""The contended paths: every side writes, deletes and renames them (conflicts, clashes)."""

MAX_DEPTH = 6
"""Renames of a directory into another can nest paths deeper than the names above."""
Tree = dict[str, bytes | None]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(SECONDS + SETTLE_SECONDS + 120))]


# ---- the model: what the test did, what must have survived --------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    number: int
    side: str
    path: str
    digest: str
    tick: int
    required: bool


@dataclass(frozen=True, slots=True)
class Removal:
    """The test overwrote ``path`` (or deleted it and, with ``subtree``, all below it)."""

    path: str
    tick: int
    subtree: bool


@dataclass
class Model:
    writes: list[Write] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    renames: list[tuple[int, str, str]] = field(default_factory=list)
    """Directory renames: (tick, source, target)."""
    contents: dict[str, bytes] = field(default_factory=dict)
    _ticks: itertools.count[int] = field(default_factory=itertools.count)

    def tick(self) -> int:
        return next(self._ticks)

    def overwriting(self, path: str) -> None:
        self.removals.append(Removal(path, self.tick(), subtree=False))

    def deleting(self, path: str) -> None:
        self.removals.append(Removal(path, self.tick(), subtree=True))

    def renaming(self, source: str, target: str, *, directory: bool) -> None:
        tick = self.tick()
        self.removals.append(Removal(source, tick, subtree=True))
        if directory:
            self.renames.append((tick, source, target))

    def wrote(self, side: str, path: str, data: bytes, *, required: bool) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.contents[digest] = data
        self.writes.append(Write(len(self.writes), side, path, digest, self.tick(), required))

    def must_survive(self) -> list[tuple[Write, set[str]]]:
        """The acknowledged writes the test did not undo itself, with where they may be."""
        kept = []
        for write in self.writes:
            if write.required:
                places = self._places(write)
                if not self._removed_later(write, places):
                    kept.append((write, places))
        return kept

    def lost(self, tree: Tree) -> list[str]:
        """The required writes missing from ``tree`` (with where their content is, if anywhere)."""
        where: dict[str, list[str]] = {}
        for path, data in tree.items():
            if data is not None:
                where.setdefault(hashlib.sha256(data).hexdigest(), []).append(path)
        missing = []
        for write, places in self.must_survive():
            found = where.get(write.digest, [])
            if not any(_is_at(path, place) for path in found for place in places):
                missing.append(f"{write} (content found at {found or 'nowhere'})")
        return missing

    def unknown(self, tree: Tree) -> list[str]:
        """Files of ``tree`` whose content the test never wrote (not even a prefix of)."""
        strange = []
        for path, data in tree.items():
            if data is None or hashlib.sha256(data).hexdigest() in self.contents:
                continue
            if not any(content.startswith(data) for content in self.contents.values()):
                strange.append(f"{path}: {data[:60]!r}… ({len(data)} bytes)")
        return strange

    def _places(self, write: Write) -> set[str]:
        """Where the content may be: its path, or where a directory rename made *before* the
        write leads (the writer had not heard of it yet: the rename then carries it along)."""
        places = {write.path}
        while True:
            more = {
                target + place[len(source) :]
                for tick, source, target in self.renames
                if tick < write.tick
                for place in places
                if place.startswith(source + "/") and place.count("/") < MAX_DEPTH
            }
            if more <= places:
                return places
            places |= more

    def _removed_later(self, write: Write, places: set[str]) -> bool:
        return any(
            removal.tick > write.tick and _covers(removal, place)
            for removal in self.removals
            for place in places
        )


def _covers(removal: Removal, path: str) -> bool:
    return removal.path == path or (removal.subtree and path.startswith(removal.path + "/"))


def _is_at(path: str, place: str) -> bool:
    """``path`` is ``place``, or ``place`` with conflict copies of some of its components."""
    parts, wanted = path.split("/"), place.split("/")
    return len(parts) == len(wanted) and all(map(_same_or_copy, parts, wanted))


def _same_or_copy(name: str, original: str) -> bool:
    if name == original:
        return True
    stem, dot, ext = original.rpartition(".")
    if not dot or not stem:
        stem, ext = original, ""
    else:
        ext = "." + ext
    copy = re.escape(stem) + r"(?:\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9_-]+)+" + re.escape(ext)
    return re.fullmatch(copy, name) is not None


# ---- the sides: where the test changes things ---------------------------------------------


class Side(Protocol):
    name: str
    view: Path
    """The folder that shows what this side holds now (for choosing what to change)."""

    def acknowledged(self) -> bool: ...
    def write(self, rel: str, data: bytes, *, atomic: bool) -> bool: ...
    def delete(self, rel: str) -> None: ...
    def mkdir(self, rel: str) -> None: ...
    def rename(self, source: str, target: str) -> None: ...


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(source: Path, target: Path) -> None:
    """``rename`` that fails instead of replacing a target that appeared meanwhile."""
    if _libc.renameat2(_AT_FDCWD, bytes(source), _AT_FDCWD, bytes(target), _RENAME_NOREPLACE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


@dataclass
class FolderSide:
    """A client's folder, or the server's root on disk (``running`` is ``None``)."""

    name: str
    view: Path
    scratch: Path
    running: Callable[[], bool] | None = None

    def acknowledged(self) -> bool:
        return self.running is None or self.running()

    def write(self, rel: str, data: bytes, *, atomic: bool) -> bool:
        target = self.view / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if atomic:  # an editor's save: a new inode renamed over the old one
                temp = self.scratch / secrets.token_hex(8)
                temp.write_bytes(data)
                try:
                    os.replace(temp, target)
                finally:
                    temp.unlink(missing_ok=True)
            else:
                with target.open("wb") as file:
                    file.write(data)
        except OSError:
            return False
        return True

    def delete(self, rel: str) -> None:
        target = self.view / rel
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def mkdir(self, rel: str) -> None:
        with contextlib.suppress(OSError):  # a file in the way: the test just did not do it
            (self.view / rel).mkdir(parents=True, exist_ok=True)

    def rename(self, source: str, target: str) -> None:
        try:
            (self.view / target).parent.mkdir(parents=True, exist_ok=True)
            rename_noreplace(self.view / source, self.view / target)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # a directory into itself: a bug of the workload
                raise


@dataclass
class ApiSide:
    name: str
    view: Path
    server: RunningQuantum

    def acknowledged(self) -> bool:
        return True

    def _call(
        self,
        method: str,
        route: str,
        body: bytes | None = None,
        fields: dict[str, str] | None = None,
    ) -> int:
        try:
            reply = http(
                method,
                self.server.url + route,
                body,
                {"X-Quantum-Client": "convergence-test"},
                json_body=fields,
                timeout=10.0,
            )
        except (OSError, httpclient.HTTPException):
            return 0  # the server is down or going down
        return reply.status

    def write(self, rel: str, data: bytes, *, atomic: bool) -> bool:
        return self._call("PUT", f"/api/files/{quote(rel)}", data) in (200, 201)

    def delete(self, rel: str) -> None:
        self._call("DELETE", f"/api/files/{quote(rel)}")

    def mkdir(self, rel: str) -> None:
        self._call("POST", "/api/mkdir", fields={"path": rel})

    def rename(self, source: str, target: str) -> None:
        self._call("POST", "/api/move", fields={"from": source, "to": target})


# ---- the workload ---------------------------------------------------------------------------


@dataclass
class Workload:
    rng: random.Random
    model: Model
    events: list[str]
    fresh: list[str] = field(default_factory=list)
    """Files under new names, only ever rewritten: most of their contents must survive."""
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def step(self, side: Side) -> None:
        roll = self.rng.random()
        if roll < 0.30:
            pool = FILES if self.rng.random() < 0.9 else DIRS  # now and then a file/dir clash
            self._write(side, self.rng.choice(pool))
        elif roll < 0.50:
            self._write(side, self._fresh_path(side))
        elif roll < 0.62:
            self._delete(side)
        elif roll < 0.72:
            self._mkdir(side)
        else:
            self._rename(side)

    def _fresh_path(self, side: Side) -> str:
        present = [p for p in self.fresh[-20:] if (side.view / p).is_file()]
        if present and self.rng.random() < 0.3:
            return self.rng.choice(present)
        directory = self.rng.choice(("", *DIRS))
        rel = f"{directory}/new {len(self.fresh)}.txt".lstrip("/")
        self.fresh.append(rel)
        return rel

    def _content(self, side: Side, rel: str) -> bytes:
        number = next(self._numbers)
        size = self.rng.randint(300_000, 1_300_000) if self.rng.random() < 0.04 else 0
        size = size or self.rng.randint(0, 3000)
        return f"write {number} by {side.name} at {rel}\n".encode() + self.rng.randbytes(size)

    def _write(self, side: Side, rel: str) -> None:
        if (side.view / rel).is_dir():
            return
        data = self._content(side, rel)
        atomic = self.rng.random() < 0.5
        acknowledged = side.acknowledged()
        self.model.overwriting(rel)
        done = side.write(rel, data, atomic=atomic)
        if done:
            self.model.wrote(side.name, rel, data, required=acknowledged)
        self._log(side, f"write {rel} ({len(data)} B, {'atomic' if atomic else 'in place'})", done)

    def _delete(self, side: Side) -> None:
        present = _present(side.view, FILES if self.rng.random() < 0.8 else DIRS)
        if present:
            rel = self.rng.choice(present)
            self.model.deleting(rel)
            side.delete(rel)
            self._log(side, f"delete {rel}", True)

    def _mkdir(self, side: Side) -> None:
        rel = self.rng.choice(DIRS if self.rng.random() < 0.9 else FILES)
        self.model.overwriting(rel)
        side.mkdir(rel)
        self._log(side, f"mkdir {rel}", True)

    def _rename(self, side: Side) -> None:
        present = _present(side.view, FILES if self.rng.random() < 0.7 else DIRS)
        if not present:
            return
        source = self.rng.choice(present)
        pool = DIRS if (side.view / source).is_dir() else FILES
        targets = [
            t
            for t in pool
            if not os.path.lexists(side.view / t) and not (t + "/").startswith(source + "/")
        ]
        if targets:
            target = self.rng.choice(targets)
            self.model.renaming(source, target, directory=pool is DIRS)
            side.rename(source, target)
            self._log(side, f"rename {source} -> {target}", True)

    def _log(self, side: Side, what: str, done: bool) -> None:
        outcome = ("" if done else " failed") + ("" if side.acknowledged() else " (unacked)")
        note(self.events, f"{side.name}: {what}{outcome}")


def note(events: list[str], what: str) -> None:
    events.append(f"{time.monotonic():.3f} {what}")


def _present(view: Path, candidates: Iterable[str]) -> list[str]:
    return [rel for rel in candidates if os.path.lexists(view / rel)]


# ---- the faults -----------------------------------------------------------------------------


@dataclass
class Faults:
    """SIGKILL/restart and SIGSTOP/SIGCONT of clients, restarts of the server; each one undone
    after a random while."""

    rng: random.Random
    server: RunningQuantum
    clients: dict[str, SyncClient]
    events: list[str]
    states: dict[str, str] = field(default_factory=dict)
    server_up: bool = True
    _due: list[tuple[float, int, str]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.states = dict.fromkeys(self.clients, "running")

    def running(self, name: str) -> Callable[[], bool]:
        return lambda: self.states[name] != "stopped"

    def inject(self) -> None:
        roll = self.rng.random()
        if roll < 0.25 and self.server_up:
            self._restart_server(crash=self.rng.random() < 0.3)
            return
        candidates = [name for name, state in self.states.items() if state == "running"]
        if not candidates:
            return
        name = self.rng.choice(candidates)
        client = self.clients[name]
        assert client.proc is not None
        if roll < 0.6:
            client.kill()
            self._set(name, "dead", self.rng.uniform(0.2, 2.5))
        else:
            client.proc.send_signal(signal.SIGSTOP)
            self._set(name, "stopped", self.rng.uniform(0.2, 3.0))

    def _restart_server(self, *, crash: bool) -> None:
        if crash:
            self.server.kill()
        else:
            self.server.stop()
        self.server_up = False
        note(self.events, f"fault: server {'killed' if crash else 'stopped'}")
        self._schedule("server", self.rng.uniform(0.2, 2.0))

    def _set(self, name: str, state: str, duration: float) -> None:
        self.states[name] = state
        note(self.events, f"fault: {name} {state}")
        self._schedule(name, duration)

    def _schedule(self, what: str, delay: float) -> None:
        heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), what))

    def recover_due(self, *, everything: bool = False) -> None:
        while self._due and (everything or self._due[0][0] <= time.monotonic()):
            _, _, what = heapq.heappop(self._due)
            self._recover(what)

    def _recover(self, what: str) -> None:
        note(self.events, f"recover: {what}")
        if what == "server":
            self.server.restart()
            self.server_up = True
            return
        client = self.clients[what]
        if self.states[what] == "dead":
            client.start()
        else:
            assert client.proc is not None
            client.proc.send_signal(signal.SIGCONT)
        self.states[what] = "running"

    def alive(self) -> bool:
        self.check_alive()
        return True

    def check_alive(self) -> None:
        """Every client not killed by the test runs; one that found the server down when it
        started (status 3, by design) is restarted, as a service manager would."""
        for name, client in self.clients.items():
            if self.states[name] == "dead" or client.proc is None:
                continue
            code = client.proc.poll()
            if code == ExitCode.SERVER_UNREACHABLE:
                if self.server_up:
                    note(self.events, f"restart: {name} (it found no server)")
                    client.start()
                continue
            assert code is None, f"client {name} exited with {code}:\n{_tail(client.logs())}"

    def release(self) -> None:
        """Whatever happens, leave no process stopped (the fixtures stop them with SIGTERM)."""
        for name, client in self.clients.items():
            if self.states[name] == "stopped" and client.proc is not None:
                client.proc.send_signal(signal.SIGCONT)


# ---- settling -------------------------------------------------------------------------------


def listing(server: RunningQuantum) -> dict[str, str | None] | None:
    try:
        reply = http("GET", server.url + "/api/list")
    except (OSError, httpclient.HTTPException):
        return None
    if reply.status != 200:
        return None
    return {entry["path"]: entry["hash"] for entry in reply.json()["files"]}


def digests(tree: Tree) -> dict[str, str | None]:
    return {p: None if d is None else hashlib.sha256(d).hexdigest() for p, d in tree.items()}


@dataclass
class Settled:
    """All trees and the server's listing identical, and unchanged for ``QUIET_SECONDS``."""

    server: RunningQuantum
    roots: list[Path]
    tree: Tree = field(default_factory=dict)
    _since: float | None = None

    def __call__(self) -> bool:
        trees = [snapshot(root) for root in self.roots]
        same = all(tree == trees[0] for tree in trees[1:])
        if not same or listing(self.server) != digests(trees[0]):
            self._since = None
            return False
        if self._since is None or trees[0] != self.tree:
            self.tree, self._since = trees[0], time.monotonic()
        return time.monotonic() - self._since >= QUIET_SECONDS


def describe_differences(names: list[str], roots: list[Path]) -> str:
    trees = [digests(snapshot(root)) for root in roots]
    lines = []
    for path in sorted(set().union(*trees)):
        seen = [tree.get(path, "-") for tree in trees]
        if len(set(seen)) > 1:
            pairs = zip(names, seen, strict=True)
            cells = (f"{n}={'dir' if h is None else h[:8]}" for n, h in pairs)
            lines.append(f"  {path}: " + ", ".join(cells))
    return "\n".join(lines) or "  (none now)"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---- the test -------------------------------------------------------------------------------


def test_random_changes_and_faults_converge_without_losing_acknowledged_data(
    start_quantum: StartQuantum, sync_clients: Callable[..., SyncClient], tmp_path: Path
) -> None:
    print(f"QUANTUM_CONVERGENCE_SEED={SEED} QUANTUM_CONVERGENCE_SECONDS={SECONDS}")
    rng = random.Random(SEED)
    server = start_quantum(file_sync_config(enable_upload=True))
    names = ["A", "B", "C"][: rng.choice((2, 3))]
    clients = {
        name: sync_clients(
            server.url, name, "--client-id", name, "--ping-interval", "1", "--allow-mass-delete"
        ).start()
        for name in names
    }
    for client in clients.values():
        client.wait_synced()
    events: list[str] = []
    faults = Faults(rng, server, clients, events)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    sides: list[Side] = [
        *(FolderSide(n, c.folder, scratch, faults.running(n)) for n, c in clients.items()),
        FolderSide("disk", server.root, scratch),
        ApiSide("api", server.root, server),
    ]
    model = Model()
    workload = Workload(rng, model, events)
    roots = [server.root, *(c.folder for c in clients.values())]
    labels = ["server", *clients]
    context = f"QUANTUM_CONVERGENCE_SEED={SEED}; events in {tmp_path / 'events.log'}"
    try:
        deadline = time.monotonic() + SECONDS
        next_fault = time.monotonic() + rng.uniform(0.5, 2.0)
        while time.monotonic() < deadline:
            faults.recover_due()
            faults.check_alive()
            if time.monotonic() >= next_fault:
                faults.inject()
                next_fault = time.monotonic() + rng.uniform(1.0, 3.5)
            else:
                workload.step(rng.choice(sides))
            time.sleep(rng.uniform(0.01, 0.15))  # the workload's pace, not a wait for a result
        faults.recover_due(everything=True)
        note(events, "faults over; waiting for convergence")

        settled = Settled(server, roots)
        settling = time.monotonic()
        try:
            wait_until(
                lambda: faults.alive() and settled(),
                SETTLE_SECONDS,
                "identical trees",
                interval=0.25,
            )
        except AssertionError:
            raise AssertionError(
                f"no convergence ({context}); differences:\n{describe_differences(labels, roots)}"
            ) from None
        faults.check_alive()
        note(events, f"settled in {time.monotonic() - settling:.1f} s")
    finally:
        faults.release()
        (tmp_path / "events.log").write_text("\n".join(events) + "\n")
        (tmp_path / "model.json").write_text(
            json.dumps([dataclasses.asdict(w) for w in model.writes], indent=0)
        )

    lost = model.lost(settled.tree)
    assert not lost, f"acknowledged content lost ({context}):\n" + "\n".join(lost)
    strange = model.unknown(settled.tree)
    assert not strange, f"content nobody wrote ({context}):\n" + "\n".join(strange)
    for name, client in clients.items():
        assert "Traceback" not in client.logs(), f"{name} ({context}):\n{_tail(client.logs())}"
    required = sum(w.required for w in model.writes)
    checked = len(model.must_survive())
    print(
        f"converged: {len(model.writes)} writes, {required} acknowledged, {checked} of them "
        f"checked (not undone by the test), {len(events)} events, "
        f"{sum('.sync-conflict-' in p for p in settled.tree)} conflict copies"
    )
