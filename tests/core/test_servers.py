"""Listeners and lifecycle: several servers and addresses, TLS, graceful shutdown, bad HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.processes import QuantumProcess, free_port, wait_for_port
from tests.support.waiting import wait_until


def sleep_server(listen: list[str], body: str, seconds: float = 0, **extra: Any) -> dict[str, Any]:
    return {
        "listen": listen,
        "routes": [{"handle": [{"handler": "testkit_sleep", "seconds": seconds, "body": body}]}],
        **extra,
    }


def make_config(servers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"admin": {"disabled": True}, "apps": {"http": {"servers": servers, **extra}}}


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


async def fetch(url: str, **kwargs: Any) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


def wait_in_flight(admin: int, server: str) -> None:
    """Until the admin metrics show a request in flight on ``server`` (it reached the handler)."""
    gauge = f'quantum_http_requests_in_flight{{server="{server}"}} 1.0'

    def arrived() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as reply:
            return gauge in reply.read().decode().splitlines()

    wait_until(arrived, what=f"a request in flight on {server}")


async def test_several_servers_and_addresses(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    a1, a2, b1 = free_port(), free_port(), free_port()
    listen_a = [f"127.0.0.1:{a1}", f":{a2}"]
    if ipv6_available():
        v6 = free_port()
        listen_a.append(f"[::1]:{v6}")
    config = make_config(
        {"a": sleep_server(listen_a, "from a"), "b": sleep_server([f"127.0.0.1:{b1}"], "from b")}
    )
    quantum_factory(config, tmp_path, port=a1).start()
    wait_for_port(a2)
    assert await fetch(f"http://127.0.0.1:{a1}/") == (200, "from a")
    assert await fetch(f"http://127.0.0.1:{a2}/") == (200, "from a")
    assert await fetch(f"http://127.0.0.1:{b1}/") == (200, "from b")
    if ipv6_available():
        assert await fetch(f"http://[::1]:{v6}/") == (200, "from a")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_from_certificate_files(
    quantum_factory: type[QuantumProcess], tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    port = free_port()
    cert, key = certificate
    tls = {"certificate_file": str(cert), "key_file": str(key)}
    config = make_config({"secure": sleep_server([f"127.0.0.1:{port}"], "secret", tls=tls)})
    quantum_factory(config, tmp_path, port=port).start()
    context = ssl.create_default_context(cafile=str(cert))
    assert await fetch(f"https://127.0.0.1:{port}/", ssl=context) == (200, "secret")


async def test_graceful_shutdown_finishes_in_flight_requests(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    config = make_config({"slow": sleep_server([f"127.0.0.1:{port}"], "done", seconds=1.5)})
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    server = quantum_factory(config, tmp_path, port=port).start()
    wait_for_port(admin)
    request = asyncio.create_task(fetch(server.url))
    await asyncio.to_thread(wait_in_flight, admin, "slow")
    server.signal(signal.SIGTERM)
    assert await request == (200, "done")
    assert server.proc is not None
    assert await asyncio.to_thread(server.proc.wait, 10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_graceful_shutdown_finishes_a_download_to_a_slow_client(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    content = os.urandom(32 * 1024 * 1024)  # far more than the socket buffers hold
    (site / "big.bin").write_bytes(content)
    port = free_port()
    routes = [{"handle": [{"handler": "file_server", "root": str(site)}]}]
    config = make_config({"files": {"listen": [f"127.0.0.1:{port}"], "routes": routes}})
    server = quantum_factory(config, tmp_path, port=port).start()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before the handshake
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = bytearray(sock.recv(64 * 1024))
        server.signal(signal.SIGTERM)  # mid-download
        time.sleep(2)  # a slow reader: longer than aiohttp's own straggler timeout
        while chunk := sock.recv(1024 * 1024):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == content
    assert server.proc is not None
    assert server.proc.wait(10) == 0


async def test_grace_period_is_finite(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    config = make_config(
        {"slow": sleep_server([f"127.0.0.1:{port}"], "never", seconds=60)}, grace_period="1s"
    )
    config["admin"] = {"listen": f"127.0.0.1:{admin}"}
    server = quantum_factory(config, tmp_path, port=port).start()
    wait_for_port(admin)
    request = asyncio.create_task(fetch(server.url))
    await asyncio.to_thread(wait_in_flight, admin, "slow")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.proc is not None
    assert await asyncio.to_thread(server.proc.wait, 15) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await request


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


MALFORMED = [
    pytest.param(b"GARBAGE\r\n\r\n", id="not http"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="header without colon"),
    pytest.param(b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", id="unknown version"),
    pytest.param(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="huge request line"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", id="huge header"
    ),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", id="negative length"),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        id="length and chunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", id="bad chunk"
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", id="NUL in header"),
    pytest.param(b"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", id="bad percent escape"),
    pytest.param(b"GET /a%2 HTTP/1.1\r\nHost: x\r\n\r\n", id="cut percent escape"),
]


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    config = make_config({"s": sleep_server([f"127.0.0.1:{port}"], "ok")})
    server = QuantumProcess(config, tmp_path_factory.mktemp("plain"), port=port).start()
    yield server
    server.stop()


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_requests_get_4xx_and_server_stays_up(plain_server: Any, payload: bytes) -> None:
    server, port = plain_server, plain_server.port
    answer = raw_exchange(port, payload)
    status_line = answer.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), answer[:200]
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(
        b"ok"
    )
    assert server.proc is not None and server.proc.poll() is None


def test_expect_100_continue_is_answered(plain_server: Any) -> None:
    with socket.create_connection(("127.0.0.1", plain_server.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        while b"200 OK" not in answer:  # this handler answers without reading the body
            answer += sock.recv(4096)
        assert answer[25:].startswith(b"HTTP/1.1 200 OK")
