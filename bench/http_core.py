"""HTTP core benchmark: Quantum's built-in handlers next to their baselines, measured with wrk.

    .venv/bin/python bench/http_core.py [--duration 5] [--repeat 1] [--only SCENARIO] [--json]

(a) ``static_response`` through Quantum vs a bare aiohttp app answering the same bytes;
(b) a 4 KiB file through ``file_server`` vs aiohttp's ``web.FileResponse`` vs Caddy's file_server
    (Quantum with one process and with ``workers: 2``; Caddy uses both cores on its own);
(c) a 100 MB download through ``file_server`` vs Caddy.

Every server runs twice, with and without its access log (aiohttp's ``AccessLogger`` through
``logging``, Caddy's ``"logs": {}``, Quantum's default), and is compared with the baseline of the
same setting; the cost of each access log is printed below the table. All contenders of a scenario
run at once and are measured in interleaved rounds (best run kept), so a slow phase of this shared
machine does not land on one of them. Everything runs on 127.0.0.1; wrk and the servers share the
machine's cores, so compare ratios, not absolute numbers. ``--json`` also writes
``bench/results/http_core.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import free_port, stop_process, wait_for_port, write_results

PYTHON = sys.executable
SMALL_FILE = "file4k.bin"
LARGE_FILE = "file100m.bin"
HELLO = "Hello, world!\n"
SCENARIOS = ("static", "file-4k", "file-100m")

BARE_AIOHTTP = textwrap.dedent(
    """
    import logging, os, sys
    from aiohttp import web

    mode, port, root, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "log"
    body = {hello!r}.encode()

    async def hello(request):
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def files(request):
        return web.FileResponse(os.path.join(root, request.match_info["name"]))

    app = web.Application()
    if mode == "static":
        app.router.add_get("/{{tail:.*}}", hello)
    else:
        app.router.add_get("/{{name}}", files)
    try:  # the same event loop Quantum's CLI uses, so the comparison is like for like
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    access_log = None
    if log:  # aiohttp's own access log, as its docs set it up
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        access_log = logging.getLogger("aiohttp.access")
    web.run_app(app, host="127.0.0.1", port=port, access_log=access_log, print=None, loop=loop)
    """
).format(hello=HELLO)


@dataclass
class Result:
    scenario: str
    server: str
    access_log: bool
    requests_per_second: float
    bytes_per_second: float
    errors: int


@contextmanager
def running(command: Sequence[str], port: int, cwd: Path, env: dict[str, str]) -> Iterator[None]:
    log = (cwd / f"server-{port}.log").open("wb")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield
    finally:
        stop_process(process)
        log.close()


def quantum_config(
    port: int, handler: dict[str, Any], *, access_log: bool, workers: int
) -> dict[str, Any]:
    server = {"listen": [f"127.0.0.1:{port}"], "routes": [{"handle": [handler]}]}
    if not access_log:
        server["access_log"] = False
    config: dict[str, Any] = {
        "admin": {"disabled": True},
        "apps": {"http": {"servers": {"b": server}}},
    }
    if workers > 1:
        config["workers"] = workers
    return config


def caddy_config(port: int, root: Path, *, access_log: bool) -> dict[str, Any]:
    server: dict[str, Any] = {
        "listen": [f"127.0.0.1:{port}"],
        "routes": [{"handle": [{"handler": "file_server", "root": str(root)}]}],
        "automatic_https": {"disable": True},
    }
    if access_log:
        server["logs"] = {}  # Caddy's access log: JSON lines on stderr
    return {"admin": {"disabled": True}, "apps": {"http": {"servers": {"b": server}}}}


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def wrk(
    url: str, *, duration: float, connections: int, threads: int = 2
) -> tuple[float, float, int]:
    """(requests/s, bytes/s, non-2xx or socket errors) of one wrk run."""
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    amount, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rps, float(amount) * _UNITS[unit.upper()], errors


@dataclass
class Contender:
    label: str
    command: list[str]
    port: int
    access_log: bool
    settle: float = 0.0  # extra seconds after the port answers (workers binding)


class Bench:
    def __init__(self, work: Path, duration: float, repeat: int) -> None:
        self.work = work
        self.root = work / "site"
        self.duration = duration
        self.repeat = repeat
        self.env = {**os.environ, "XDG_DATA_HOME": str(work), "XDG_CONFIG_HOME": str(work)}
        self.results: list[Result] = []
        self.bare_script = work / "bare_aiohttp.py"
        self.bare_script.write_text(BARE_AIOHTTP)

    def prepare_files(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / SMALL_FILE).write_bytes(os.urandom(4096))
        with (self.root / LARGE_FILE).open("wb") as large:
            chunk = os.urandom(1024 * 1024)
            for _ in range(100):
                large.write(chunk)

    def compare(
        self, scenario: str, path: str, connections: int, contenders: list[Contender]
    ) -> None:
        """Start every contender, then measure them in interleaved rounds and keep each one's
        best: on a shared machine interference only ever makes a run slower, and interleaving
        spreads slow phases over all contenders instead of one."""
        with ExitStack() as stack:
            for contender in contenders:
                stack.enter_context(running(contender.command, contender.port, self.work, self.env))
            time.sleep(max(c.settle for c in contenders))
            best: dict[str, tuple[float, float, int]] = {}
            for contender in contenders:  # warm-up: caches, connections
                wrk(self.url(contender, path), duration=1, connections=connections)
            for _ in range(self.repeat):
                for contender in contenders:
                    run = wrk(
                        self.url(contender, path), duration=self.duration, connections=connections
                    )
                    best[contender.label] = max(best.get(contender.label, run), run)
        for contender in contenders:
            rps, bps, errors = best[contender.label]
            self.results.append(
                Result(scenario, contender.label, contender.access_log, rps, bps, errors)
            )
            print(
                f"  {scenario:<12} {contender.label:<40} {rps:>10.0f} req/s {bps / 1e6:>9.1f} MB/s",
                flush=True,
            )

    @staticmethod
    def url(contender: Contender, path: str) -> str:
        return f"http://127.0.0.1:{contender.port}{path}"

    def quantum(
        self, handler: dict[str, Any], *, access_log: bool = True, workers: int = 1
    ) -> Contender:
        label = f"quantum {handler['handler']}{_log_label(access_log)}"
        label += f", {workers} workers" if workers > 1 else ""
        port = free_port()
        config = self.work / f"quantum-{port}.json"
        config.write_text(
            json.dumps(quantum_config(port, handler, access_log=access_log, workers=workers))
        )
        command = [PYTHON, "-m", "quantum", "run", "--config", str(config)]
        return Contender(label, command, port, access_log, settle=0.5 if workers == 1 else 2.0)

    def bare(self, label: str, mode: str, *, access_log: bool) -> Contender:
        port = free_port()
        flag = "log" if access_log else "quiet"
        command = [PYTHON, str(self.bare_script), mode, str(port), str(self.root), flag]
        return Contender(label + _log_label(access_log), command, port, access_log)

    def caddy(self, *, access_log: bool) -> list[Contender]:
        caddy = shutil.which("caddy")
        if caddy is None:
            print("  caddy not installed: skipped", flush=True)
            return []
        port = free_port()
        config = self.work / f"caddy-{port}.json"
        config.write_text(json.dumps(caddy_config(port, self.root, access_log=access_log)))
        command = [caddy, "run", "--config", str(config)]
        return [Contender("caddy file_server" + _log_label(access_log), command, port, access_log)]

    def run(self, only: set[str]) -> None:
        static = {"handler": "static_response", "body": HELLO}
        files = {"handler": "file_server", "root": str(self.root)}
        both = (False, True)
        plans: dict[str, tuple[str, str, int, Callable[[], list[Contender]]]] = {
            "static": (
                "(a) static response",
                "/",
                64,
                lambda: [
                    *(self.bare("aiohttp bare app", "static", access_log=log) for log in both),
                    *(self.quantum(static, access_log=log) for log in both),
                ],
            ),
            "file-4k": (
                "(b) 4 KiB file",
                f"/{SMALL_FILE}",
                64,
                lambda: [
                    *(self.bare("aiohttp FileResponse", "files", access_log=log) for log in both),
                    *(c for log in both for c in self.caddy(access_log=log)),
                    *(self.quantum(files, access_log=log) for log in both),
                    *(self.quantum(files, access_log=log, workers=2) for log in both),
                ],
            ),
            "file-100m": (
                "(c) 100 MB download",
                f"/{LARGE_FILE}",
                4,
                lambda: [*self.caddy(access_log=True), self.quantum(files, access_log=True)],
            ),
        }
        for scenario, (title, path, connections, contenders) in plans.items():
            if scenario in only:
                print(title, flush=True)
                self.compare(scenario, path, connections, contenders())

    def baseline(self, scenario: str, prefix: str, access_log: bool) -> Result | None:
        """The baseline run of ``scenario`` whose access log setting matches."""
        return next(
            (
                r
                for r in self.results
                if r.scenario == scenario
                and r.server.startswith(prefix)
                and r.access_log == access_log
            ),
            None,
        )

    def table(self) -> str:
        """Each Quantum run against the baselines with the same access log setting: logging a
        line per request is a real cost in every server, so only like is compared with like."""
        rows = [
            "| scenario | server | req/s | MB/s | errors | ratio (same access log setting) |",
            "|---|---|---:|---:|---:|---|",
        ]
        targets = {
            "static": [("aiohttp", 0.9)],
            "file-4k": [("aiohttp", 3.0), ("caddy", 0.5)],
            "file-100m": [("caddy", 0.8)],
        }
        for result in self.results:
            ratios = []
            if result.server.startswith("quantum"):
                metric = (
                    "bytes_per_second" if result.scenario == "file-100m" else "requests_per_second"
                )
                for prefix, target in targets[result.scenario]:
                    base = self.baseline(result.scenario, prefix, result.access_log)
                    if base is not None:
                        ratio = getattr(result, metric) / getattr(base, metric)
                        mark = "ok" if ratio >= target else "below"
                        ratios.append(f"{ratio:.2f}x {prefix} (target {target}x: {mark})")
            rows.append(
                f"| {result.scenario} | {result.server} | {result.requests_per_second:,.0f} "
                f"| {result.bytes_per_second / 1e6:,.1f} | {result.errors} | {'; '.join(ratios)} |"
            )
        return "\n".join(rows)

    def log_costs(self) -> str:
        """Throughput lost to the access log, per server and scenario."""
        lines = []
        for quiet in self.results:
            if quiet.access_log:
                continue
            label = quiet.server.replace(_log_label(False), "")
            logged = next(
                (
                    r
                    for r in self.results
                    if r.scenario == quiet.scenario
                    and r.access_log
                    and r.server.replace(_log_label(True), "") == label
                ),
                None,
            )
            if logged is not None:
                lost = 1 - logged.requests_per_second / quiet.requests_per_second
                lines.append(f"- {quiet.scenario}, {label}: the access log costs {lost:.0%}")
        return "\n".join(lines)


def _log_label(access_log: bool) -> str:
    return ", access log" if access_log else ", no access log"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server; best is kept")
    parser.add_argument("--json", action="store_true", help="write bench/results/http_core.json")
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable); default: all",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (scripts/ensure-system-packages.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="quantum-bench-") as tmp:
        bench = Bench(Path(tmp), args.duration, args.repeat)
        bench.prepare_files()
        bench.run(set(args.only or SCENARIOS))
        print()
        print(bench.table())
        print()
        print(bench.log_costs())
        if args.json:
            write_results("http_core", [asdict(r) for r in bench.results])


if __name__ == "__main__":
    main()
