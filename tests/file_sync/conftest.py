"""Shared fixtures for file_sync tests: real ``quantum`` processes and a small HTTP client.

Reusable by every suite (``from tests.file_sync.conftest import ...`` or the fixtures below)::

    def test_x(start_quantum):
        server = start_quantum(file_sync_config(enable_upload=True))
        reply = http("GET", server.url + "/api/list")
        assert reply.status == 200
        (server.root / "a.txt").write_text("on disk")
        server.kill()          # or server.stop(); server.restart()

``start_quantum(config, files={...})`` writes ``config`` (any Quantum config) and ``files`` in a
fresh working directory,
moves the first server to a free 127.0.0.1 port, disables the admin endpoint unless the config
sets one, starts ``quantum run --config`` there and returns once the port answers. ``.root`` is
the first ``file_sync`` handler's root resolved against that directory.
"""

from __future__ import annotations

import copy
import http.client as httpclient
import json
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.processes import QuantumProcess, free_port, wait_for_port
from tests.support.waiting import wait_until

StartQuantum = Callable[..., "RunningQuantum"]


def file_sync_config(root: str = "./sync-data", **options: Any) -> dict[str, Any]:
    """The seed's config shape (routes ``/api/*`` and ``/ws``) with extra handler options."""
    return {
        "apps": {
            "http": {
                "servers": {
                    "file_sync_server": {
                        "listen": [":8080"],
                        "routes": [
                            {
                                "match": [{"matcher": "path", "paths": ["/api/*", "/ws"]}],
                                "handle": [{"handler": "file_sync", "root": root, **options}],
                            }
                        ],
                    }
                }
            }
        }
    }


def _find_file_sync(node: Any) -> Mapping[str, Any] | None:
    if isinstance(node, Mapping):
        if node.get("handler") == "file_sync":
            return node
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_file_sync(child)
        if found is not None:
            return found
    return None


@dataclass
class RunningQuantum:
    process: QuantumProcess
    root: Path
    workdir: Path
    config: dict[str, Any] = field(repr=False)

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port

    @property
    def url(self) -> str:
        return self.process.url

    def stop(self) -> int:
        """SIGTERM and wait (graceful shutdown)."""
        return self.process.stop()

    def kill(self) -> None:
        """SIGKILL and wait (a crash)."""
        self.process.kill()

    def restart(self) -> RunningQuantum:
        """Start again with the same config, port and working directory."""
        self.process.start()
        return self

    def logs(self) -> str:
        return self.process.logs()


def launch_quantum(
    config: Mapping[str, Any],
    workdir: Path,
    started: list[RunningQuantum],
    files: Mapping[str, str | bytes] | None = None,
) -> RunningQuantum:
    """Start ``config`` in ``workdir`` after writing ``files`` (relative path → content) there."""
    config = copy.deepcopy(dict(config))
    port = free_port()
    servers = config["apps"]["http"]["servers"]
    first = next(iter(servers.values()))
    first["listen"] = [f"127.0.0.1:{port}"]
    config.setdefault("admin", {"disabled": True})
    workdir.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    handler = _find_file_sync(config)
    root = workdir / handler["root"] if handler is not None else workdir
    process = QuantumProcess(config, workdir, port=port)
    server = RunningQuantum(process, root.resolve(), workdir, config)
    started.append(server)
    process.start()
    wait_for_port(port)
    return server


def _starter(workdir: Callable[[str], Path]) -> Iterator[StartQuantum]:
    """``start(config, name="q", files=None)`` in ``workdir(name)``; stops them all at the end."""
    started: list[RunningQuantum] = []

    def start(
        config: Mapping[str, Any],
        name: str = "q",
        files: Mapping[str, str | bytes] | None = None,
    ) -> RunningQuantum:
        return launch_quantum(config, workdir(name), started, files)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_quantum(tmp_path: Path) -> Iterator[StartQuantum]:
    """``start_quantum(config, name="q", files=None)`` → :class:`RunningQuantum`; every server
    started is stopped at teardown."""
    yield from _starter(lambda name: tmp_path / name)


@pytest.fixture(scope="module")
def start_module_quantum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartQuantum]:
    """Like :func:`start_quantum`, for servers shared by the tests of one module."""
    yield from _starter(tmp_path_factory.mktemp)


# ---- a tiny blocking HTTP client (no session to leak, exact bytes on the wire) ----------------


@dataclass
class Reply:
    status: int
    headers: httpclient.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def http(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    json_body: Any = None,
    timeout: float = 15.0,
) -> Reply:
    """One request on a fresh connection. ``url``'s path is sent exactly as given."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    all_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body)
        all_headers.setdefault("Content-Type", "application/json")
    connection = httpclient.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=all_headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_http(port: int, request: bytes, *, timeout: float = 10.0) -> Reply:
    """Send ``request`` bytes verbatim (for targets no client library would emit)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        method = request.split(b" ", 1)[0].decode()
        response = httpclient.HTTPResponse(sock, method=method)
        response.begin()
        try:
            return Reply(response.status, response.headers, response.read())
        finally:
            response.close()


def changes(server: RunningQuantum, since: int = 0) -> dict[str, Any]:
    """``/api/changes`` from ``since`` in the server's current epoch."""
    epoch = http("GET", server.url + "/api/list?recursive=false&limit=1").json()["epoch"]
    reply = http("GET", f"{server.url}/api/changes?since={since}&epoch={epoch}")
    assert reply.status == 200, reply.body
    result: dict[str, Any] = reply.json()
    return result


def operations(server: RunningQuantum, since: int = 0) -> list[dict[str, Any]]:
    """The ``operation`` objects journaled after ``since``."""
    return [message["operation"] for message in changes(server, since)["operations"]]


def watcher_caught_up(server: RunningQuantum, since: int = 0) -> list[dict[str, Any]]:
    """The operations journaled after ``since`` once the disk watcher has handled every change
    made in ``server.root`` before this call.

    A marker file is created, and deleted once its Create is journaled: changes made before the
    marker were seen in the marker's batch or an earlier one, and the Delete comes in a later
    batch, so once it is journaled every earlier batch is settled. The marker's own two
    operations are left out of the result (nothing else is). For a server whose disk watcher
    runs; waits up to 10 s for each of the marker's operations.
    """
    marker = f"watcher-barrier-{uuid.uuid4().hex}.tmp"
    path = server.root / marker
    path.write_text(marker)  # unique content: never paired with another file into a Move
    wait_until(lambda: _touches(operations(server, since), marker, "Create"), what="the marker")
    path.unlink()
    wait_until(lambda: _touches(operations(server, since), marker, "Delete"), what="the marker")
    return [op for op in operations(server, since) if not _touches([op], marker)]


def _touches(ops: list[dict[str, Any]], path: str, kind: str | None = None) -> bool:
    for op in ops:
        for found, body in op.items():
            paths = {body.get("path"), body.get("from"), body.get("metadata", {}).get("path")}
            if path in paths and kind in (None, found):
                return True
    return False
