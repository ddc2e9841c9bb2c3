"""HTTP core benchmark: Quantum's built-in handlers next to their baselines, measured with wrk.

    .venv/bin/python bench/http_core.py [--duration 5] [--repeat 1] [--json]

(a) ``static_response`` through Quantum vs a bare aiohttp app answering the same bytes;
(b) a 4 KiB file through ``file_server`` vs aiohttp's ``web.FileResponse`` vs Caddy's file_server;
(c) a 100 MB download through ``file_server`` vs Caddy.

Everything runs on 127.0.0.1 with fresh processes; wrk and the servers share the machine's cores,
so compare ratios, not absolute numbers. Prints a markdown table; ``--json`` also writes
``bench/results/http_core.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SMALL_FILE = "file4k.bin"
LARGE_FILE = "file100m.bin"
HELLO = "Hello, world!\n"

BARE_AIOHTTP = textwrap.dedent(
    """
    import os, sys
    from aiohttp import web

    mode, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
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
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)
    """
).format(hello=HELLO)


HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
# Quantum's CLI already runs on uvloop when it is installed (a dependency on Linux); this
# launcher is kept for runs on machines without it.
UVLOOP_LAUNCHER = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from quantum.cli import main; sys.exit(main())"
)


@dataclass
class Result:
    scenario: str
    server: str
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
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
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


def caddy_config(port: int, root: Path) -> dict[str, Any]:
    server = {
        "listen": [f"127.0.0.1:{port}"],
        "routes": [{"handle": [{"handler": "file_server", "root": str(root)}]}],
        "automatic_https": {"disable": True},
    }
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

    def measure(self, scenario: str, server: str, url: str, connections: int) -> None:
        wrk(url, duration=1, connections=connections)  # warm-up: caches, connections
        # Best of N: on a shared machine, interference only ever makes a run slower.
        rps, bps, errors = max(
            wrk(url, duration=self.duration, connections=connections) for _ in range(self.repeat)
        )
        self.results.append(Result(scenario, server, rps, bps, errors))
        print(
            f"  {scenario:<12} {server:<34} {rps:>10.0f} req/s {bps / 1e6:>9.1f} MB/s", flush=True
        )

    def quantum(
        self,
        scenario: str,
        handler: dict[str, Any],
        path: str,
        connections: int,
        *,
        access_log: bool = True,
        workers: int = 1,
        uvloop: bool = False,
    ) -> None:
        label = f"quantum {handler['handler']}"
        label += "" if access_log else ", no access log"
        label += f", {workers} workers" if workers > 1 else ""
        label += ", uvloop" if uvloop else ""
        port = free_port()
        config = self.work / f"quantum-{port}.json"
        config.write_text(
            json.dumps(quantum_config(port, handler, access_log=access_log, workers=workers))
        )
        launcher = ["-c", UVLOOP_LAUNCHER] if uvloop else ["-m", "quantum"]
        command = [PYTHON, *launcher, "run", "--config", str(config)]
        with running(command, port, self.work, self.env):
            time.sleep(0.5 if workers == 1 else 2.0)  # let every worker bind
            self.measure(scenario, label, f"http://127.0.0.1:{port}{path}", connections)

    def bare(self, scenario: str, label: str, mode: str, path: str, connections: int) -> None:
        port = free_port()
        command = [PYTHON, str(self.bare_script), mode, str(port), str(self.root)]
        with running(command, port, self.work, self.env):
            self.measure(scenario, label, f"http://127.0.0.1:{port}{path}", connections)

    def caddy(self, scenario: str, path: str, connections: int) -> None:
        caddy = shutil.which("caddy")
        if caddy is None:
            print("  caddy not installed: skipped", flush=True)
            return
        port = free_port()
        config = self.work / f"caddy-{port}.json"
        config.write_text(json.dumps(caddy_config(port, self.root)))
        with running([caddy, "run", "--config", str(config)], port, self.work, self.env):
            self.measure(
                scenario, "caddy file_server", f"http://127.0.0.1:{port}{path}", connections
            )

    def run(self) -> None:
        static = {"handler": "static_response", "body": HELLO}
        files = {"handler": "file_server", "root": str(self.root)}
        small, large = f"/{SMALL_FILE}", f"/{LARGE_FILE}"
        uv: list[bool] = []  # the plain CLI is on uvloop already
        print("(a) static response", flush=True)
        self.bare("static", "aiohttp (bare app)", "static", "/", 64)
        self.quantum("static", static, "/", 64)
        self.quantum("static", static, "/", 64, access_log=False)
        for flag in uv:
            self.quantum("static", static, "/", 64, access_log=False, uvloop=flag)
        print("(b) 4 KiB file", flush=True)
        self.bare("file-4k", "aiohttp web.FileResponse", "files", small, 64)
        self.caddy("file-4k", small, 64)
        self.quantum("file-4k", files, small, 64)
        self.quantum("file-4k", files, small, 64, access_log=False)
        self.quantum("file-4k", files, small, 64, access_log=False, workers=2)
        for flag in uv:
            self.quantum("file-4k", files, small, 64, access_log=False, uvloop=flag)
        print("(c) 100 MB download", flush=True)
        self.caddy("file-100m", large, 4)
        self.quantum("file-100m", files, large, 4)
        for flag in uv:
            self.quantum("file-100m", files, large, 4, uvloop=flag)

    def find(self, scenario: str, server: str) -> Result | None:
        return next(
            (r for r in self.results if r.scenario == scenario and r.server == server), None
        )

    def table(self) -> str:
        rows = [
            "| scenario | server | req/s | MB/s | errors | ratio |",
            "|---|---|---:|---:|---:|---|",
        ]
        baselines = {
            "static": [("aiohttp (bare app)", "aiohttp", 0.9)],
            "file-4k": [
                ("aiohttp web.FileResponse", "aiohttp", 3.0),
                ("caddy file_server", "caddy", 0.5),
            ],
            "file-100m": [("caddy file_server", "caddy", 0.8)],
        }
        for result in self.results:
            ratios = []
            if result.server.startswith("quantum"):
                for base_name, short, target in baselines[result.scenario]:
                    base = self.find(result.scenario, base_name)
                    if base is not None:
                        metric = (
                            "bytes_per_second"
                            if result.scenario == "file-100m"
                            else ("requests_per_second")
                        )
                        ratio = getattr(result, metric) / getattr(base, metric)
                        mark = "ok" if ratio >= target else "below"
                        ratios.append(f"{ratio:.2f}x {short} (target {target}x: {mark})")
            rows.append(
                f"| {result.scenario} | {result.server} | {result.requests_per_second:,.0f} "
                f"| {result.bytes_per_second / 1e6:,.1f} | {result.errors} | {'; '.join(ratios)} |"
            )
        return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server; best is kept")
    parser.add_argument("--json", action="store_true", help="write bench/results/http_core.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (scripts/ensure-system-packages.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="quantum-bench-") as tmp:
        bench = Bench(Path(tmp), args.duration, args.repeat)
        bench.prepare_files()
        bench.run()
        print()
        print(bench.table())
        if args.json:
            out = REPO / "bench" / "results" / "http_core.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps([asdict(r) for r in bench.results], indent=2))
            print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
