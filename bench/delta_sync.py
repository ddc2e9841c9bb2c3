"""Block-level delta sync of a 1 GiB file: client → server → second client, next to rsync.

    .venv/bin/python bench/delta_sync.py [--mib 1024] [--json]

One ``quantum`` file_sync server and two ``realtime-sync-client --realtime`` processes (A and
B) share a random 1 GiB file (present in all three folders before the clients start, so the
start-up costs no transfer). Then, measured from the server's own counters
(``quantum_file_bytes_uploaded_total`` / ``…_downloaded_total``,
``quantum_file_chunks_uploaded_total``):

- ``one_byte_overwrite_1gib``: one byte in the middle of A's copy changes; MiB sent A → server
  and server → B, and seconds from the write until B's copy has the new content;
- ``insert_mid_file_chunks_sent``: one byte inserted in the middle (every later byte moves);
- ``rename_1gib_sent_mib``: A renames the file; a copy made on A (``copy_1gib_sent_mib``);
- ``resume_at_half_resent_mib``: A gets a new 1 GiB file, is SIGKILLed once the server has
  received half of it, and is started again: the bytes sent beyond the file's size;
- ``scan_mb_per_s``: how fast a client cuts and hashes a file (``chunks.manifest_of_file``,
  warm page cache);
- ``whole_file_put_1gib_s``: a plain ``curl -T`` of the file (the old way, for comparison);
- ``rsync_one_byte_1gib_s``: the same one-byte change pushed by ``rsync -a`` to an rsync daemon
  holding the old version (the baseline; rsync also rewrites the whole file on the receiver).

Targets (issue 10): ≤ 4.2 MiB per direction and ≤ 3 s for the one-byte overwrite, ≤ 2 chunks
for the insert, 0 MiB for rename and copy, ≤ 4 MiB re-sent after a cut at 50 %, scan
≥ 500 MB/s, and the one-byte overwrite no slower than rsync. Prints a table and, as its last
line, one JSON object; ``--json`` also writes ``bench/results/delta_sync.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rsync_daemon, run_sized, stop_process, write_results
from quantum_file_sync.chunks import manifest_of_file
from sync_latency import client_command, quantum_server

MiB = 1024 * 1024
UPLOADED = "quantum_file_bytes_uploaded_total"
DOWNLOADED = "quantum_file_bytes_downloaded_total"
CHUNKS_UPLOADED = "quantum_file_chunks_uploaded_total"
COUNTERS = (UPLOADED, DOWNLOADED, CHUNKS_UPLOADED)


def counters(server: str) -> dict[str, float]:
    with urllib.request.urlopen(server + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // (4 * MiB)):
            out.write(os.urandom(4 * MiB))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while piece := handle.read(4 * MiB):
            digest.update(piece)
    return digest.hexdigest()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.perf_counter()


def arrival(path: Path, digest: str, timeout: float = 300) -> Callable[[], float]:
    """Waits until ``path`` holds ``digest``; returns when its new version appeared (the stat
    seen just before hashing, so the hash's own time is not counted). The version there now
    (before the change) is never hashed."""
    initial = _stat_key(path)

    def wait() -> float:
        deadline = time.perf_counter() + timeout
        seen = initial
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            key = _stat_key(path)
            if key is not None and key != seen:
                seen = key
                if sha256_of(path) == digest:
                    return now
            time.sleep(0.005)
        raise TimeoutError(f"{path} never got {digest}")

    return wait


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextmanager
def client(server: str, folder: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(client_command(server, folder, "--realtime"), stderr=out)
    try:
        wait_for(
            lambda: (
                "initial sync complete" in log.read_text(errors="replace")
                or proc.poll() is not None
            ),
            300,
            f"client on {folder}",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"client on {folder} exited:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            stop_process(proc, 20)


def flip_middle_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def flipped_hash(path: Path) -> str:
    """The SHA-256 ``path`` will have after :func:`flip_middle_byte` (computed beforehand, so
    the clock starts at the write)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return hashlib.sha256(data).hexdigest()


def inserted_hash(path: Path) -> str:
    data = path.read_bytes()
    middle = len(data) // 2
    return hashlib.sha256(data[:middle] + b"!" + data[middle:]).hexdigest()


def insert_middle_byte(path: Path, temp: Path) -> None:
    middle = path.stat().st_size // 2
    with path.open("rb") as source, temp.open("wb") as out:
        out.write(source.read(middle))
        out.write(b"!")
        shutil.copyfileobj(source, out, 4 * MiB)
    os.replace(temp, path)


def rsync_one_byte(base: Path, original: Path) -> float:
    src, dst = base / "rsync-src", base / "rsync-dst"
    for directory in (src, dst):
        directory.mkdir()
        shutil.copy(original, directory / "big.bin")
    old = time.time() - 3600
    os.utime(dst / "big.bin", (old, old))  # rsync's quick check compares whole seconds
    with rsync_daemon(dst, base, writable=True) as url:
        flip_middle_byte(src / "big.bin")
        start = time.perf_counter()
        subprocess.run(["rsync", "-a", str(src / "big.bin"), url + "big.bin"], check=True)
        elapsed = time.perf_counter() - start
    assert sha256_of(dst / "big.bin") == sha256_of(src / "big.bin")
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return elapsed


def measure(size: int, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"file_mib": size // MiB}
    server_root, folder_a, folder_b = base / "server", base / "a", base / "b"
    for directory in (server_root, folder_a, folder_b):
        directory.mkdir()
    original = base / "original.bin"
    make_file(original, size)
    for directory in (server_root, folder_a, folder_b):
        shutil.copy(original, directory / "big.bin")

    start = time.perf_counter()
    manifest_of_file(original)
    results["scan_mb_per_s"] = size / 1e6 / (time.perf_counter() - start)
    results["rsync_one_byte_1gib_s"] = rsync_one_byte(base, original)

    with (
        quantum_server(server_root, base, max_upload_size=2 * size + MiB) as server,
        client(server, folder_a, base / "a.log") as client_a,
        client(server, folder_b, base / "b.log"),
    ):

        def traffic(change: Callable[[], None], arrived: Callable[[], float]) -> dict[str, float]:
            """What the server counted while ``change`` on A reached B; ``seconds`` from the
            change until B has it."""
            before = counters(server)
            start = time.perf_counter()
            change()
            sent = {"seconds": arrived() - start}
            after = counters(server)
            sent.update((name, after[name] - before[name]) for name in COUNTERS)
            return sent

        def both_ways_mib(sent: dict[str, float]) -> float:
            return (sent[UPLOADED] + sent[DOWNLOADED]) / MiB

        big_a, big_b = folder_a / "big.bin", folder_b / "big.bin"
        expected = flipped_hash(big_a)
        sent = traffic(lambda: flip_middle_byte(big_a), arrival(big_b, expected))
        results["one_byte_overwrite_1gib_s"] = sent["seconds"]
        results["one_byte_overwrite_1gib_up_mib"] = sent[UPLOADED] / MiB
        results["one_byte_overwrite_1gib_down_mib"] = sent[DOWNLOADED] / MiB
        results["one_byte_overwrite_1gib_sent_mib"] = max(sent[UPLOADED], sent[DOWNLOADED]) / MiB

        expected = inserted_hash(big_a)
        sent = traffic(
            lambda: insert_middle_byte(big_a, base / "insert.tmp"), arrival(big_b, expected)
        )
        results["insert_mid_file_chunks_sent"] = int(sent[CHUNKS_UPLOADED])
        results["insert_mid_file_sent_mib"] = sent[UPLOADED] / MiB

        renamed = folder_b / "renamed.bin"
        sent = traffic(
            lambda: os.rename(big_a, folder_a / "renamed.bin"), arrival(renamed, expected)
        )
        results["rename_1gib_sent_mib"] = both_ways_mib(sent)
        sent = traffic(
            lambda: shutil.copy(folder_a / "renamed.bin", folder_a / "copy.bin"),
            arrival(folder_b / "copy.bin", expected),
        )
        results["copy_1gib_sent_mib"] = both_ways_mib(sent)

        # A new file; A is killed once the server has half of it, then started again.
        make_file(base / "fresh.tmp", size)
        fresh_hash = sha256_of(base / "fresh.tmp")
        before = counters(server)
        os.replace(base / "fresh.tmp", folder_a / "fresh.bin")
        wait_for(
            lambda: counters(server)[UPLOADED] - before[UPLOADED] >= size / 2,
            300,
            "half of the upload",
        )
        client_a.send_signal(signal.SIGKILL)
        client_a.wait()
        with client(server, folder_a, base / "a.log"):
            arrival(server_root / "fresh.bin", fresh_hash)()
        results["resume_at_half_resent_mib"] = (
            counters(server)[UPLOADED] - before[UPLOADED] - size
        ) / MiB

        # The old way: one whole-file PUT.
        start = time.perf_counter()
        subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", "-T", str(original), server + "/api/files/put.bin"],
            check=True,
        )
        results["whole_file_put_1gib_s"] = time.perf_counter() - start
    results["overwrite_vs_rsync"] = (
        results["one_byte_overwrite_1gib_s"] / results["rsync_one_byte_1gib_s"]
    )
    return results


TARGETS = {
    "one_byte_overwrite_1gib_sent_mib": ("≤", 4.2),
    "one_byte_overwrite_1gib_s": ("≤", 3.0),
    "insert_mid_file_chunks_sent": ("≤", 2),
    "rename_1gib_sent_mib": ("≤", 0),
    "copy_1gib_sent_mib": ("≤", 0),
    "resume_at_half_resent_mib": ("≤", 4),
    "scan_mb_per_s": ("≥", 500),
    "overwrite_vs_rsync": ("≤", 1.0),
}


def main() -> int:
    args, results = run_sized(__doc__.split("\n\n")[0], "quantum-delta-", measure)
    print("| measure | value | target | met |\n|---|---|---|---|")
    for key, value in results.items():
        target = TARGETS.get(key)
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        if target is None:
            print(f"| {key} | {shown} | | |")
            continue
        sign, bound = target
        met = value <= bound if sign == "≤" else value >= bound
        print(f"| {key} | {shown} | {sign} {bound} | {'yes' if met else 'NO'} |")
    if args.json:
        write_results("delta_sync", results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
