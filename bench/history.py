"""File history (docs/history.md): what versions of a 1 GiB file cost on disk, how fast an old
one comes back to a sync client, how fast a long version list pages, and whether the cap holds.

    .venv/bin/python bench/history.py [--mib 1024] [--json] [--keep]

Three ``quantum`` file_sync servers, one after the other, each on its own folder:

- ``ten_edits_1gib_total_gib``: a random 1 GiB file is in the server's folder and in the folder
  of a ``realtime-sync-client --realtime`` (A; copied into both before the client starts). Ten
  times, one byte of A's copy changes (at 5 %, 15 %, …, 95 % of the file: ten different
  chunks) and the benchmark waits until the server's file has the new SHA-256. Once the
  compactor is done (``GET /api/history`` → ``pending == 0``), the disk use of the server's
  folder (the sum of ``st_blocks`` of every inode once, ``du``-style): live files, and
  ``.quantum/history``; ``stored_bytes`` as ``/api/history`` reports it. Baseline: ten full
  copies next to the live file (11 GiB).
- ``restore_1gib_s``: ``POST /api/restore`` of the oldest version (the file as it was before
  the ten edits) until A's local copy has that hash; split into the server's reply and A's
  download after it (A's manifest request, its chunk requests, and A building its new copy:
  from the server's access log and A's log), with the chunks and bytes the server sent
  (``/metrics`` ``quantum_file_chunks_downloaded_total`` /
  ``quantum_file_bytes_downloaded_total``) and A's own ``downloaded`` log line. Baselines in
  the same run: restoring without history — a plain ``curl -T`` of a (fresh, random) 1 GiB
  file until A has it (``whole_put_download_1gib_s``) — and ``rsync -a`` of the old version
  onto an rsync daemon holding the edited one (``rsync_restore_1gib_s``).
- ``list_1000_versions_p95_ms``: a small file PUT 1,001 times (1,000 versions); then, 50
  times, all 1,000 versions listed page by page (``limit=100``, following ``next``, one
  keep-alive connection): p95 of the whole listing and of one page.
- ``cap_respected``: a server with ``history.cap`` 64 MiB and ``interval`` 1 s; four 4 MiB
  files overwritten with fresh random content 14 times and eight more 4 MiB files created and
  deleted (256 MiB of distinct history); once compaction and retention are done,
  ``stored_bytes <= cap_bytes`` and the disk use of history's blobs, pins and trash is within
  the cap too.

Targets (issue: file history): ≤ 1.05 GiB after ten edits, ≤ 5 s restore, ≤ 50 ms p95 for the
1,000-version listing, the cap respected. Prints a table and, as its last line, one JSON
object; ``--json`` also writes ``bench/results/history.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import rsync_daemon, run_sized, write_results
from delta_sync import arrival, client, make_file, sha256_of, wait_for
from sync_latency import percentile, quantum_server

MiB = 1024 * 1024
GiB = 1024 * MiB
BIG = "big.bin"
CHUNKS_DOWNLOADED = "quantum_file_chunks_downloaded_total"
BYTES_DOWNLOADED = "quantum_file_bytes_downloaded_total"
EDITS = 10
VERSIONS = 1000
LIST_REPEATS = 50
PAGE = 100
CAP = "64MiB"
CAP_FILES, CAP_ROUNDS, CAP_TRASHED, CAP_FILE_MIB = 4, 14, 8, 4


# -- talking to the server ---------------------------------------------------------------------


def api(server: str, method: str, path: str, body: Any = None, timeout: float = 600) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def usage(server: str) -> dict[str, Any]:
    result: dict[str, Any] = api(server, "GET", "/api/history")
    return result


def settled_usage(server: str, timeout: float = 600) -> dict[str, Any]:
    """``/api/history`` once the compactor has nothing pending."""
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(usage(server))
        return bool(found["pending"] == 0)

    wait_for(done, timeout, "history compaction")
    return found


def metric(server: str, *names: str) -> dict[str, float]:
    with urllib.request.urlopen(server + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found


def connection(server: str) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(server)
    return http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=60)


def call(
    conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None = None
) -> bytes:
    """One request on a keep-alive connection; the body of a 2xx answer."""
    conn.request(method, target, body=body)
    reply = conn.getresponse()
    data = reply.read()
    if not 200 <= reply.status < 300:
        raise RuntimeError(f"{method} {target}: {reply.status} {data[:200]!r}")
    return data


def file_target(rel: str) -> str:
    return "/api/files/" + urllib.parse.quote(rel)


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process's children (the server, while
    it is the only one): what a request costs, whatever else shares the cores."""
    parent, total = os.getpid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# -- disk use ----------------------------------------------------------------------------------


def disk_use(root: Path) -> dict[str, int]:
    """Bytes allocated (``st_blocks``, each inode once, ``du``-style) under ``root``: ``live``
    (outside ``.quantum``), ``history`` (``.quantum/history``; ``history_data`` without its
    catalogue: blobs, pins, trash) and ``other`` (the rest of ``.quantum``)."""
    history = root / ".quantum" / "history"
    blocks: dict[tuple[int, int], tuple[int, str]] = {}
    rank = {"live": 0, "history_data": 1, "history_catalogue": 2, "other": 3}
    for directory, _, names in os.walk(root):
        here = Path(directory)
        for name in names:
            path = here / name
            st = path.lstat()
            if path.is_relative_to(history):
                inside = path.relative_to(history).parts
                kind = (
                    "history_data"
                    if inside[0] in ("chunks", "pins", "trash")
                    else "history_catalogue"
                )
            elif path.is_relative_to(root / ".quantum"):
                kind = "other"
            else:
                kind = "live"
            key = (st.st_dev, st.st_ino)
            if key not in blocks or rank[kind] < rank[blocks[key][1]]:
                blocks[key] = (st.st_blocks * 512, kind)
    use = dict.fromkeys(rank, 0)
    for size, kind in blocks.values():
        use[kind] += size
    use["history_data_files"] = sum(kind == "history_data" for _, kind in blocks.values())
    use["history"] = use["history_data"] + use["history_catalogue"]
    return use


# -- ten edits and a restore -------------------------------------------------------------------


def flip_at(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def downloaded_line(log: Path, rel: str) -> dict[str, Any] | None:
    """A's last ``downloaded`` log record for ``rel``."""
    found = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "downloaded" and record.get("path") == rel:
            found = record
    return found


def requests_after(log: Path, since: float) -> list[dict[str, Any]]:
    """The server's access-log records (JSON lines) of requests that ended after ``since``
    (Unix time), each with ``ended`` (Unix time)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") != "request":
            continue
        record["ended"] = unix_time(record["timestamp"])
        if record["ended"] >= since:
            found.append(record)
    return found


def unix_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def restore_profile(server_log: Path, client_log: Path, since: float) -> dict[str, float]:
    """Where the restore's time went after the server's reply: A's manifest request, its chunk
    requests (durations on the server), and A building its new copy (from the last chunk
    answer until A logged the download)."""
    requests = requests_after(server_log, since)
    manifest = [r for r in requests if r["method"] == "GET" and r["path"] == f"/api/files/{BIG}"]
    chunks = [r for r in requests if r["path"] == "/api/chunks/get"]
    line = downloaded_line(client_log, BIG)
    profile: dict[str, float] = {}
    if manifest:
        profile["restore_client_manifest_get_s"] = manifest[0]["duration"]
    if chunks:
        profile["restore_client_chunks_get_s"] = sum(r["duration"] for r in chunks)
        if line is not None:
            ended = max(r["ended"] for r in chunks)
            profile["restore_client_rebuild_s"] = unix_time(line["timestamp"]) - ended
    return profile


def edits_and_restore(size: int, base: Path, results: dict[str, Any]) -> None:
    root, folder = base / "server", base / "a"
    work = base / "server-work"
    for directory in (root, folder, work):
        directory.mkdir()
    original = base / "original.bin"
    make_file(original, size)
    shutil.copy(original, root / BIG)
    shutil.copy(original, folder / BIG)
    content = bytearray(original.read_bytes())
    hashes = [hashlib.sha256(content).hexdigest()]
    log = base / "a.log"
    with (
        quantum_server(root, work, max_upload_size=2 * size + MiB) as server,
        client(server, folder, log),
    ):
        edit_seconds = []
        for edit in range(EDITS):
            offset = (2 * edit + 1) * size // (2 * EDITS)
            content[offset] ^= 0xFF
            hashes.append(hashlib.sha256(content).hexdigest())
            arrived = arrival(root / BIG, hashes[-1])
            start = time.perf_counter()
            flip_at(folder / BIG, offset)
            edit_seconds.append(arrived() - start)
        del content
        start = time.perf_counter()
        history = settled_usage(server)
        results["compaction_wait_s"] = time.perf_counter() - start
        use = disk_use(root)
        results["edit_seconds"] = [round(s, 3) for s in edit_seconds]
        results["edit_mean_s"] = statistics.mean(edit_seconds)
        results["versions_kept"] = history["versions"]["count"]
        results["live_gib"] = use["live"] / GiB
        results["history_disk_mib"] = use["history"] / MiB
        results["history_data_disk_mib"] = use["history_data"] / MiB
        results["history_stored_mib"] = history["stored_bytes"] / MiB
        results["history_logical_gib"] = history["versions"]["bytes"] / GiB
        results["other_quantum_disk_mib"] = use["other"] / MiB
        results["ten_edits_1gib_total_gib"] = (use["live"] + use["history"]) / GiB
        results["ten_edits_full_copies_gib"] = (EDITS + 1) * size / GiB
        results["ten_edits_total_vs_live"] = (use["live"] + use["history"]) / use["live"]
        results["ten_edits_vs_full_copies"] = (use["live"] + use["history"]) / ((EDITS + 1) * size)

        listed = api(server, "GET", f"/api/versions/{BIG}?limit=100")
        oldest = listed["versions"][-1]
        assert oldest["hash"] == hashes[0], "the oldest version is not the original"
        shutil.copy(root / BIG, base / "edited.bin")  # the rsync baseline's receiver
        before = metric(server, CHUNKS_DOWNLOADED, BYTES_DOWNLOADED)
        arrived = arrival(folder / BIG, hashes[0])
        replied: list[float] = []

        def restore() -> None:
            api(server, "POST", "/api/restore", {"path": BIG, "version": oldest["id"]})
            replied.append(time.perf_counter())

        wall_start = time.time()
        start = time.perf_counter()
        thread = threading.Thread(target=restore)
        thread.start()
        done = arrived()
        thread.join()
        after = metric(server, CHUNKS_DOWNLOADED, BYTES_DOWNLOADED)
        results["restore_1gib_s"] = done - start
        results["restore_server_reply_s"] = replied[0] - start
        results["restore_client_after_reply_s"] = done - replied[0]
        results["restore_chunks_downloaded"] = int(
            after[CHUNKS_DOWNLOADED] - before[CHUNKS_DOWNLOADED]
        )
        results["restore_mib_downloaded"] = (
            after[BYTES_DOWNLOADED] - before[BYTES_DOWNLOADED]
        ) / MiB
        line = downloaded_line(log, BIG) or {}
        results["restore_client_chunks_fetched"] = line.get("chunks_fetched", 0)
        results["restore_client_mib_fetched"] = line.get("chunk_bytes_fetched", 0) / MiB
        results["restore_client_chunks_reused"] = line.get("chunks_reused", 0)
        time.sleep(0.2)  # the access log is written every 50 ms
        results.update(restore_profile(work / "quantum.log", log, wall_start))
        assert sha256_of(root / BIG) == hashes[0]

        # Without history: the old copy uploaded whole, and every client downloads it whole.
        fresh = base / "fresh.bin"
        make_file(fresh, size)
        fresh_hash = sha256_of(fresh)
        arrived = arrival(folder / "put.bin", fresh_hash)
        start = time.perf_counter()
        subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", "-T", str(fresh), server + "/api/files/put.bin"],
            check=True,
        )
        put_done = time.perf_counter()
        done = arrived()
        results["whole_put_download_1gib_s"] = done - start
        results["whole_put_1gib_s"] = put_done - start
        fresh.unlink()
    results["rsync_restore_1gib_s"] = rsync_restore(base, original, base / "edited.bin")
    results["restore_vs_whole_put_download"] = (
        results["restore_1gib_s"] / results["whole_put_download_1gib_s"]
    )
    results["restore_vs_rsync"] = results["restore_1gib_s"] / results["rsync_restore_1gib_s"]
    for directory in (root, folder):
        shutil.rmtree(directory)


def rsync_restore(base: Path, old: Path, edited: Path) -> float:
    """``rsync -a`` of the old version onto a daemon holding the edited file."""
    src, dst = base / "rsync-src", base / "rsync-dst"
    src.mkdir()
    dst.mkdir()
    os.link(old, src / BIG)
    os.replace(edited, dst / BIG)
    stale = time.time() - 3600
    os.utime(dst / BIG, (stale, stale))  # rsync's quick check compares whole seconds
    with rsync_daemon(dst, base, writable=True) as url:
        start = time.perf_counter()
        subprocess.run(["rsync", "-a", str(src / BIG), url + BIG], check=True)
        elapsed = time.perf_counter() - start
    assert sha256_of(dst / BIG) == sha256_of(old)
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return elapsed


# -- a long version list -----------------------------------------------------------------------


def long_listing(base: Path, results: dict[str, Any]) -> None:
    root, work = base / "list", base / "list-work"
    root.mkdir()
    work.mkdir()
    with quantum_server(root, work) as server:
        conn = connection(server)
        start = time.perf_counter()
        for number in range(VERSIONS + 1):
            call(conn, "PUT", file_target("notes.txt"), f"version {number}\n".encode())
        results["small_puts_per_s"] = (VERSIONS + 1) / (time.perf_counter() - start)
        settled_usage(server)
        whole: list[float] = []
        pages: list[float] = []
        cpu_before = children_cpu_s()
        for _ in range(LIST_REPEATS + 1):  # the first one warms up
            ids: list[int] = []
            page_times: list[float] = []
            cursor = None
            start = time.perf_counter()
            while True:
                target = f"/api/versions/notes.txt?limit={PAGE}"
                if cursor is not None:
                    target += "&cursor=" + urllib.parse.quote(cursor)
                page_start = time.perf_counter()
                page = json.loads(call(conn, "GET", target))
                page_times.append(time.perf_counter() - page_start)
                ids.extend(v["id"] for v in page["versions"])
                cursor = page["next"]
                if cursor is None:
                    break
            whole.append(time.perf_counter() - start)
            pages.extend(page_times)
            assert len(ids) == len(set(ids)) == VERSIONS, f"listed {len(ids)} versions"
            assert len(page_times) == VERSIONS // PAGE
        cpu = children_cpu_s() - cpu_before
        conn.close()
    results["list_1000_versions_server_cpu_ms"] = cpu / (LIST_REPEATS + 1) * 1000
    whole, pages = whole[1:], pages[VERSIONS // PAGE :]
    results["list_1000_versions_p95_ms"] = percentile(whole, 0.95) * 1000
    results["list_1000_versions_median_ms"] = statistics.median(whole) * 1000
    results["list_page_of_100_p95_ms"] = percentile(pages, 0.95) * 1000
    results["list_page_of_100_median_ms"] = statistics.median(pages) * 1000


# -- the cap -----------------------------------------------------------------------------------


def cap(base: Path, results: dict[str, Any]) -> None:
    root, work = base / "cap", base / "cap-work"
    root.mkdir()
    work.mkdir()
    size = CAP_FILE_MIB * MiB
    with quantum_server(root, work, history={"cap": CAP, "interval": "1s"}) as server:
        conn = connection(server)
        written = 0
        peak = 0
        for round_ in range(CAP_ROUNDS + 1):
            for number in range(CAP_FILES):
                call(conn, "PUT", file_target(f"file-{number}.bin"), os.urandom(size))
                written += size if round_ else 0
            peak = max(peak, usage(server)["stored_bytes"])
        for number in range(CAP_TRASHED):
            call(conn, "PUT", file_target(f"trashed-{number}.bin"), os.urandom(size))
            call(conn, "DELETE", file_target(f"trashed-{number}.bin"))
            written += size
        conn.close()
        results["cap_history_written_mib"] = written / MiB
        found: dict[str, Any] = {}

        def fits() -> bool:
            found.update(usage(server))
            return bool(found["pending"] == 0 and found["stored_bytes"] <= found["cap_bytes"])

        start = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # then cap_respected says false
            wait_for(fits, 120, "history under the cap")
        results["cap_settle_s"] = time.perf_counter() - start
        time.sleep(2.5)  # two more retention passes: nothing is put back
        found.update(usage(server))
        use = disk_use(root)
    results["cap_bytes"] = found["cap_bytes"]
    results["cap_stored_bytes"] = found["stored_bytes"]
    results["cap_peak_stored_mib"] = max(peak, found["stored_bytes"]) / MiB
    results["cap_history_data_disk_bytes"] = use["history_data"]
    results["cap_history_disk_bytes"] = use["history"]
    results["cap_versions_left"] = found["versions"]["count"]
    results["cap_trash_left"] = found["trash"]["count"]
    results["cap_protected_mib"] = CAP_FILES * CAP_FILE_MIB  # the newest version of each file
    # stored_bytes adds up file sizes; the disk allocates whole blocks (≤ 4 KiB more a file).
    rounding = 4096 * use["history_data_files"]
    results["cap_disk_rounding_allowed_bytes"] = rounding
    results["cap_respected"] = bool(
        found["pending"] == 0
        and found["stored_bytes"] <= found["cap_bytes"]
        and use["history_data"] <= found["cap_bytes"] + rounding
    )


def load() -> dict[str, float]:
    """The 1-minute load average, and the share of the last minute some task waited for a
    core (``/proc/pressure/cpu``): other work on the machine."""
    found = {"load_1m": os.getloadavg()[0]}
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().split()
        found["cpu_pressure_60s_pct"] = float(some[2].partition("=")[2])
    return found


def measure(size: int, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"file_mib": size // MiB, "load_before": load()}
    edits_and_restore(size, base, results)
    long_listing(base, results)
    cap(base, results)
    results["load_after"] = load()
    return results


TARGETS: dict[str, tuple[str, float | bool]] = {
    "ten_edits_1gib_total_gib": ("ten_edits_total_vs_live", 1.05),
    "restore_1gib_s": ("restore_1gib_s", 5.0),
    "list_1000_versions_p95_ms": ("list_1000_versions_p95_ms", 50.0),
    "cap_respected": ("cap_respected", True),
}
"""Each headline measure: what is compared with the bound (the GiB total is compared per GiB
live, so ``--mib`` runs are judged the same way), and the bound (``≤``, or ``True``)."""


def judge(results: dict[str, Any]) -> list[tuple[str, Any, str, float | None, bool]]:
    """Adds ``KEY_vs_target`` (measure / bound) for each headline measure; returns the rows
    (key, value, target, ratio, met)."""
    rows = []
    for key, (compared, bound) in TARGETS.items():
        value = results[compared]
        if isinstance(bound, bool):
            rows.append((key, results[key], "true", None, value is bound))
            continue
        ratio = value / bound
        results[f"{key}_vs_target"] = ratio
        shown = "≤ 1.05 x live" if compared != key else f"≤ {bound:g}"
        rows.append((key, results[key], shown, ratio, ratio <= 1))
    return rows


def main() -> int:
    args, results = run_sized(__doc__.split("\n\n")[0], "quantum-history-", measure)
    rows = judge(results)
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    print("\n| target | value | bound | ratio | met |\n|---|---|---|---|---|")
    for key, value, bound, ratio, met in rows:
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        ratio_shown = "" if ratio is None else f"{ratio:.2f}"
        print(f"| {key} | {shown} | {bound} | {ratio_shown} | {'yes' if met else 'NO'} |")
    if args.json:
        write_results("history", results)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
