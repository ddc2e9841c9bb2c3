"""Real ``quantum`` processes for tests: write a config, start, wait until it answers, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUPPORT_DIR = Path(__file__).resolve().parent
QUANTUM = [sys.executable, "-m", "quantum"]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all sockets are held until every port is chosen (ports
    picked one after the other can repeat, as the kernel hands a freed one out again)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SUPPORT_DIR), env.get("PYTHONPATH")]))
    env.setdefault("QUANTUM_PLUGINS", "testkit_plugin")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ChildProcess:
    """A long-running child of the test: stopped with SIGTERM (then SIGKILL), or killed."""

    proc: subprocess.Popen[bytes] | None = None
    log_path: Path

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class QuantumProcess(ChildProcess):
    """``quantum run --config FILE`` as a child process."""

    def __init__(
        self,
        config: Mapping[str, Any],
        workdir: Path,
        *,
        port: int | None = None,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        name: str = "quantum",
    ) -> None:
        self.config = dict(config)
        self.workdir = workdir
        self.port = port
        self.config_path = workdir / f"{name}.json"
        self.log_path = workdir / f"{name}.log"
        self.args = args
        self.env = child_env(env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, config: Mapping[str, Any] | None = None) -> None:
        if config is not None:
            self.config = dict(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config, indent=2))
        os.replace(tmp, self.config_path)

    def start(self, *, wait: bool = True) -> QuantumProcess:
        self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*QUANTUM, "run", "--config", str(self.config_path), *self.args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait and self.port is not None:
            try:
                wait_for_port(self.port)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"quantum did not start:\n{self.logs()}") from None
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def __enter__(self) -> QuantumProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_quantum(
    *args: str, cwd: Path | None = None, timeout: float = 30, env_plugins: str = "testkit_plugin"
) -> subprocess.CompletedProcess[str]:
    """Run a ``quantum`` subcommand to completion (``env_plugins`` = ``$QUANTUM_PLUGINS``)."""
    return subprocess.run(
        [*QUANTUM, *args],
        cwd=cwd,
        env=child_env({"QUANTUM_PLUGINS": env_plugins}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
