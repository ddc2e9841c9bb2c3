"""Access logs (structlog, redacted) and Prometheus metrics (parseable, bounded, accurate)."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import QUANTUM, QuantumProcess, child_env, free_port, wait_for_port
from tests.support.waiting import wait_until


def config(port: int, admin: int | None = None, **logging: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "admin": {"listen": f"127.0.0.1:{admin}"} if admin else {"disabled": True},
        "apps": {
            "http": {
                "servers": {
                    "web": {
                        "listen": [f"127.0.0.1:{port}"],
                        "routes": [
                            {
                                "match": [{"path": ["/hello"]}],
                                "handle": [
                                    {"handler": "testkit_sleep", "seconds": 0, "body": "hi"}
                                ],
                            }
                        ],
                    }
                }
            }
        },
    }
    if logging:
        out["logging"] = logging
    return out


def get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def test_metrics_parse_and_count_requests(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    server = quantum_factory(config(port, admin), tmp_path, port=port).start()
    wait_for_port(admin)
    for _ in range(7):
        assert get(f"{server.url}/hello") == 200
    for i in range(3):
        assert get(f"{server.url}/missing/{i}") == 404  # distinct paths, one label set
    assert get(f"{server.url}/hello", headers={}) == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as response:
        text = response.read().decode()
    values = samples(text)
    ok = frozenset(
        {("server", "web"), ("handler", "testkit_sleep"), ("code", "200"), ("method", "GET")}
    )
    missing = frozenset(
        {("server", "web"), ("handler", "none"), ("code", "404"), ("method", "GET")}
    )
    assert values[("quantum_http_requests_total", ok)] == 8
    assert values[("quantum_http_requests_total", missing)] == 3
    assert values[("quantum_http_request_duration_seconds_count", ok)] == 8
    assert values[("quantum_http_response_size_bytes_sum", ok)] == 16  # "hi" x 8
    assert values[("quantum_http_requests_in_flight", frozenset({("server", "web")}))] == 0
    assert values[("quantum_config_last_reload_successful", frozenset())] == 1
    assert values[("quantum_config_last_reload_success_timestamp_seconds", frozenset())] > 1e9
    assert ("process_resident_memory_bytes", frozenset()) in values
    assert "/missing" not in text  # never a raw path in labels


def access_lines(server: QuantumProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "request":
                lines.append(entry)
    return lines


def test_one_json_access_line_per_request(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port), tmp_path, port=port).start()
    assert get(f"{server.url}/hello") == 200
    assert get(f"{server.url}/nowhere") == 404
    wait_until(lambda: len(access_lines(server)) >= 2, what="the batched access lines")
    lines = access_lines(server)
    assert len(lines) == 2
    first = lines[0]
    assert {k: first[k] for k in ("server", "handler", "method", "path", "status", "bytes")} == {
        "server": "web",
        "handler": "testkit_sleep",
        "method": "GET",
        "path": "/hello",
        "status": 200,
        "bytes": 2,
    }
    assert first["duration"] >= 0
    assert len(first["request_id"]) == 16
    assert lines[1]["status"] == 404


def raw_request(port: int, head: bytes) -> bytes:
    """Send ``head`` as written (no client-side quoting) and return the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_access_lines_stay_valid_json_for_hostile_paths_and_request_ids(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port), tmp_path, port=port).start()
    hostile_id = 'a"b\\c}{'
    cases = [
        # (request target, X-Request-Id); the path is logged as sent, without the query
        (b"/x%22y%5Cz/%C3%BC%0A?token=secret", None),
        (b'/q"uote\\back', None),
        (b"/id", hostile_id.encode()),
    ]
    for target, request_id in cases:
        head = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if request_id is not None:
            head += b"X-Request-Id: " + request_id + b"\r\n"
        assert raw_request(port, head + b"\r\n").startswith(b"HTTP/1.1 404")
    wait_until(lambda: len(access_lines(server)) >= len(cases), what="the batched access lines")
    logged = access_lines(server)  # every line parsed with json.loads
    assert [line["path"] for line in logged] == ["/x%22y%5Cz/%C3%BC%0A", '/q"uote\\back', "/id"]
    assert [line["request_id"] for line in logged][2] == hostile_id
    generated = [line["request_id"] for line in logged[:2]]
    assert len(set(generated)) == 2
    assert "secret" not in server.logs()


def test_debug_logs_redact_credentials(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port, level="DEBUG"), tmp_path, port=port).start()
    secret = "Bearer super-secret-token"
    get(
        f"{server.url}/hello",
        headers={"Authorization": secret, "Cookie": "session=abc123", "X-Seen": "yes"},
    )
    wait_until(lambda: len(access_lines(server)) >= 1, what="the batched access line")
    (line,) = access_lines(server)
    headers = line["headers"]
    assert headers["Authorization"] == "REDACTED"
    assert headers["Cookie"] == "REDACTED"
    assert headers["X-Seen"] == "yes"
    assert "super-secret-token" not in server.logs()
    assert "abc123" not in server.logs()


def test_log_level_flag_overrides_config(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(
        config(port), tmp_path, port=port, args=("--log-level", "ERROR")
    ).start()
    get(f"{server.url}/hello")
    time.sleep(0.2)
    assert access_lines(server) == []


def test_console_logs_on_a_terminal(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config(port)))
    controller, child = pty.openpty()
    proc = subprocess.Popen(
        [*QUANTUM, "run", "--config", str(path)],
        stdin=child,
        stdout=child,
        stderr=child,
        env=child_env(),
        cwd=tmp_path,
    )
    os.close(child)
    try:
        wait_for_port(port)
        get(f"http://127.0.0.1:{port}/hello")
        output = b""
        deadline = time.monotonic() + 5
        while b"request" not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                output += os.read(controller, 65536)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(controller)
    text = output.decode(errors="replace")
    assert "request" in text
    assert not any(line.strip().startswith("{") for line in text.splitlines())
