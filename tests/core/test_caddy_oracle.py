"""Caddy as the oracle: the same JSON config served by Debian's ``caddy`` and by ``quantum`` must
give the same status, body and key headers for every request below.

Both servers run once per module with one server (port) per case. Differences by design are
avoided, not asserted: Quantum answers 404 where every route falls through (Caddy: empty 200),
and ETag values differ in form (only their presence is compared).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from yarl import URL

from tests.support.processes import QuantumProcess, free_ports, wait_for_port

pytestmark = pytest.mark.caddy

PASSWORD_HASH = base64.b64encode(bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4))).decode()
COMPARED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Location",
    "WWW-Authenticate",
    "Allow",
    "Content-Encoding",
    "Vary",
)


@dataclass(frozen=True)
class Req:
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Case:
    name: str
    routes: list[dict[str, Any]]
    requests: list[Req]
    error_routes: list[dict[str, Any]] | None = None


BASIC_AUTH = {
    "handler": "authentication",
    "providers": {
        "http_basic": {
            "accounts": [{"username": "alice", "password": PASSWORD_HASH}],
            "hash": {"algorithm": "bcrypt"},
        }
    },
}


def static(body: str, **extra: Any) -> dict[str, Any]:
    return {"handler": "static_response", "body": body, **extra}


def catch_all(body: str = "no route") -> dict[str, Any]:
    return {"handle": [static(body)]}


FILES = {
    "a.txt": "hello, oracle\n",
    "page.html": "<!DOCTYPE html><p>page</p>\n",
    "data.json": '{"answer": 42}\n',
    "style.css": "body { color: red }\n",
    "docs/index.html": "<h1>docs</h1>\n",
    "docs/guide.txt": "guide\n",
    "list/one.txt": "1\n",
    "list/two.json": "{}\n",
    ".secret": "hidden\n",
    # Sidecars need not hold real compressed bytes: neither server decodes them.
    "pc/page.txt": "the plain page, long enough to be worth compressing\n",
    "pc/page.txt.gz": "GZIP-SIDECAR",
    "pc/page.txt.zst": "ZSTD-SIDECAR!",
    "pc/page.txt.br": "BROTLI-SIDECAR, not configured",
    "pc/plain.txt": "no sidecar\n",
    "pc/dir.txt": "its .gz is a directory\n",
    "pc/dir.txt.gz/inside": "x",
    "vh/a.example/index.html": "<p>site a</p>\n",
    "vh/a.example/page.txt": "a's page\n",
    "vh/b.example/page.txt": "b's page\n",
}

CASES = [
    Case(
        "static_response",
        [
            {
                "match": [{"path": ["/made"]}],
                "handle": [
                    static(
                        "{http.request.method} {http.request.uri.path} {http.request.host} "
                        "{http.request.uri.query} {http.request.header.X-Who} {not.a.placeholder}",
                        status_code=201,
                        headers={"X-Multi": ["a", "b"], "X-Path": ["{http.request.uri.path}"]},
                    )
                ],
            },
            {"match": [{"path": ["/empty"]}], "handle": [static("", status_code="204")]},
            {"match": [{"path": ["/html"]}], "handle": [static("<html><p>x</p></html>")]},
            {"match": [{"path": ["/json"]}], "handle": [static(' {"a": [1]} ')]},
            {
                "match": [{"path": ["/typed"]}],
                "handle": [static('{"a":1}', headers={"Content-Type": ["application/json"]})],
            },
            catch_all(),
        ],
        [
            Req("/made?x=1&y=2", headers={"X-Who": "tester"}),
            Req("/made", "PUT"),
            Req("/empty"),
            Req("/html"),
            Req("/json"),
            Req("/typed"),
            Req("/nothing"),
        ],
    ),
    Case(
        "headers",
        [
            {
                "match": [{"path": ["/req"]}],
                "handle": [
                    {
                        "handler": "headers",
                        "request": {
                            "set": {"X-Injected": ["yes"]},
                            "delete": ["X-Remove"],
                            "add": {"X-Added": ["more"]},
                        },
                    },
                    static(
                        "inj={http.request.header.X-Injected} rm={http.request.header.X-Remove} "
                        "add={http.request.header.X-Added}"
                    ),
                ],
            },
            {
                "match": [{"path": ["/deferred"]}],
                "handle": [
                    {
                        "handler": "headers",
                        "response": {
                            "set": {"X-Frame-Options": ["DENY"], "X-Own": ["from-headers"]},
                            "add": {"X-Added": ["1", "2"]},
                            "delete": ["X-Drop"],
                            "deferred": True,
                        },
                    },
                    static("ok", headers={"X-Drop": ["gone"], "X-Own": ["from-static"]}),
                ],
            },
            {
                "match": [{"path": ["/immediate"]}],
                "handle": [
                    {
                        "handler": "headers",
                        "response": {"set": {"X-Own": ["from-headers"], "X-Only": ["headers"]}},
                    },
                    static("ok", headers={"X-Own": ["from-static"]}),
                ],
            },
            catch_all(),
        ],
        [
            Req("/req", headers={"X-Remove": "present", "X-Added": "first"}),
            Req("/deferred"),
            Req("/immediate"),
        ],
    ),
    Case(
        "file_server",
        [
            {
                "match": [{"path": ["/browse/*"]}],
                "handle": [
                    {
                        "handler": "file_server",
                        "root": "ROOT/list",
                        "browse": {},
                    }
                ],
            },
            {"handle": [{"handler": "file_server", "root": "ROOT", "hide": [".secret"]}]},
        ],
        [
            Req("/a.txt"),
            Req("/a.txt", "HEAD"),
            Req("/page.html"),
            Req("/data.json"),
            Req("/style.css"),
            Req("/docs"),
            Req("/docs/"),
            Req("/docs/guide.txt"),
            Req("/missing.txt"),
            Req("/.secret"),
            Req("/%2e%2e/etc/passwd"),
            Req("/docs/../a.txt"),
            Req("/a.txt", headers={"Range": "bytes=0-4"}),
            Req("/a.txt", headers={"Range": "bytes=-3"}),
            Req("/a.txt", headers={"Range": "bytes=7-"}),
            Req("/a.txt", headers={"Range": "bytes=100-"}),
            Req("/a.txt", headers={"Range": "bytes=0-1,4-5"}),
            Req("/a.txt", headers={"If-None-Match": "$ETAG"}),
            Req("/a.txt", headers={"If-Modified-Since": "$LAST_MODIFIED"}),
            Req("/a.txt", headers={"If-None-Match": '"nope"'}),
            Req("/a.txt", headers={"Range": "bytes=0-1", "If-Range": '"nope"'}),
            Req("/a.txt", headers={"If-Match": '"nope"'}),
            Req("/browse/", headers={"Accept": "application/json"}),
            Req("/browse"),
        ],
    ),
    Case(
        "precompressed",
        [
            {
                "match": [{"header": {"X-Order": ["zstd-first"]}}],
                "handle": [
                    {
                        "handler": "file_server",
                        "root": "ROOT",
                        "precompressed": {"gzip": {}, "zstd": {}},
                        "precompressed_order": ["zstd", "gzip"],
                    }
                ],
            },
            {
                "handle": [
                    {
                        "handler": "file_server",
                        "root": "ROOT",
                        "precompressed": {"gzip": {}, "zstd": {}},
                    }
                ]
            },
        ],
        [
            *(
                Req("/pc/page.txt", headers={"Accept-Encoding": accept})
                for accept in (
                    "",
                    "gzip",
                    "zstd",
                    "br",
                    "gzip, zstd",
                    "zstd, gzip",
                    "zstd;q=0.5, gzip",
                    "gzip;q=0.5, zstd;q=0.8",
                    "gzip;q=0, zstd;q=0",
                    "GZIP",
                    "x-gzip, *",
                    "gzip;q=bogus",
                )
            ),
            # (HEAD is left out: Go drops Content-Length when Content-Encoding is set; Quantum
            # sends the sidecar's, as a GET would. tests/core/test_handler_file_server.py.)
            Req("/pc/page.txt", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-3"}),
            Req("/pc/page.txt", headers={"Accept-Encoding": "gzip"}),
            Req("/pc/page.txt", headers={"Accept-Encoding": "gzip", "If-None-Match": "$ETAG"}),
            Req("/pc/page.txt.gz", headers={"Accept-Encoding": "gzip"}),
            Req("/pc/plain.txt", headers={"Accept-Encoding": "gzip"}),
            Req("/pc/dir.txt", headers={"Accept-Encoding": "gzip"}),
            *(
                Req("/pc/page.txt", headers={"Accept-Encoding": accept, "X-Order": "zstd-first"})
                for accept in ("gzip, zstd", "gzip;q=0.9, zstd;q=0.9", "gzip, zstd;q=0.9")
            ),
        ],
    ),
    Case(
        "placeholder_root",
        [{"handle": [{"handler": "file_server", "root": "ROOT/vh/{http.request.host}"}]}],
        [
            Req("/page.txt", headers={"Host": "a.example"}),
            Req("/page.txt", headers={"Host": "b.example:8080"}),
            Req("/", headers={"Host": "a.example"}),
            Req("/page.txt", headers={"Host": "c.example"}),
        ],
    ),
    Case(
        "path_escapes",
        [
            {"match": [{"path": ["*.php"]}], "handle": [static("php")]},
            {"match": [{"path": ["/a%2fb"]}], "handle": [static("escaped slash")]},
            {"match": [{"path": ["/x/%*/y"]}], "handle": [static("escaped glob")]},
            {"match": [{"path": ["/user/%40*"]}], "handle": [static("escaped prefix")]},
            {"match": [{"path": ["/sp%20ace"]}], "handle": [static("space")]},
            catch_all(),
        ],
        [
            Req(path)
            for path in (
                "/index.php",
                "/index.php.",
                "/index.php%20",
                "/index.PHP..%20.",
                "/a%2fb",
                "/a%2Fb",
                "/A%2fB",
                "/a/b",
                "/x/q%2fr/y",
                "/x/q/y",
                "/x/q%2fr%2fs/y",
                "/x/q/r/y",
                "/user/%40bob",
                "/user/@bob",
                "/user/%40Bob/x",
                "/sp%20ace",
                "/SP%20ACE",
                "/a%2fb/../a%2fb",
            )
        ],
    ),
    Case(
        "errors",
        [
            {
                "match": [{"path": ["/private/*"]}],
                "handle": [
                    BASIC_AUTH,
                    static("secret"),
                ],
            },
            {"match": [{"path": ["/plain404"]}], "handle": [static("plain", status_code=404)]},
            {
                "match": [{"path": ["/hdr/*"]}],
                "handle": [
                    {"handler": "headers", "response": {"set": {"X-Early": ["yes"]}}},
                    {"handler": "file_server", "root": "ROOT"},
                ],
            },
            {"handle": [{"handler": "file_server", "root": "ROOT"}]},
        ],
        [
            Req("/missing.txt"),
            Req("/a.txt"),
            Req("/private/x"),
            Req("/plain404"),
            Req("/silent/x"),
            Req("/nested/x"),
            Req("/hdr/missing"),
            Req("/docs"),
        ],
        error_routes=[
            {
                "match": [{"path": ["/silent/*"]}],
                "handle": [{"handler": "headers", "response": {"set": {"X-Err": ["seen"]}}}],
            },
            {
                "match": [{"path": ["/nested/*"]}],
                "handle": [{"handler": "file_server", "root": "ROOT/nonexistent"}],
            },
            {
                "match": [{"not": [{"path": ["/silent/*", "/nested/*"]}]}],
                "handle": [
                    static(
                        "custom {http.error.status_code} {http.error.status_text} "
                        "[{http.error.message}]",
                        status_code="{http.error.status_code}",
                    )
                ],
            },
        ],
    ),
    Case(
        "request_body",
        [
            {
                "handle": [
                    {"handler": "request_body", "max_size": 1000},
                    static("accepted {http.request.method}"),
                ]
            }
        ],
        [Req("/upload", "POST", body=b"x" * 500), Req("/upload", "PUT", body=b"y" * 1000)],
    ),
    Case(
        "authentication",
        [
            {
                "match": [{"path": ["/private/*"]}],
                "handle": [
                    BASIC_AUTH,
                    static("hi {http.auth.user.id}"),
                ],
            },
            catch_all("public"),
        ],
        [
            Req("/private/x"),
            Req("/private/x", headers={"Authorization": aiohttp.encode_basic_auth("alice", "no")}),
            Req("/private/x", headers={"Authorization": aiohttp.encode_basic_auth("bob", "no")}),
            Req(
                "/private/x",
                headers={"Authorization": aiohttp.encode_basic_auth("alice", "hunter2")},
            ),
            Req("/public"),
        ],
    ),
    Case(
        "subroute",
        [
            {
                "match": [{"path": ["/api/*"]}],
                "handle": [
                    {
                        "handler": "subroute",
                        "routes": [
                            {"match": [{"path": ["/api/v1"]}], "handle": [static("v1")]},
                            {"match": [{"method": ["POST"]}], "handle": [static("posted")]},
                        ],
                    }
                ],
            },
            catch_all("after subroute"),
        ],
        [Req("/api/v1"), Req("/api/other", "POST"), Req("/api/other")],
    ),
    Case(
        "matchers",
        [
            {"match": [{"path": ["/exact"]}], "handle": [static("exact")]},
            {"match": [{"path": ["/pre/*"]}], "handle": [static("prefix")]},
            {"match": [{"path": ["*.css"]}], "handle": [static("suffix")]},
            {"match": [{"path": ["/mid/*/end"]}], "handle": [static("glob")]},
            {"match": [{"path": ["*contains*"]}], "handle": [static("substring")]},
            {"match": [{"method": ["DELETE"]}], "handle": [static("method")]},
            {"match": [{"host": ["*.example.com"]}], "handle": [static("wildcard host")]},
            {"match": [{"host": ["example.com"]}], "handle": [static("host")]},
            {"match": [{"header": {"X-Mode": ["beta*"]}}], "handle": [static("header")]},
            {"match": [{"header": {"X-Present": []}}], "handle": [static("header present")]},
            {"match": [{"query": {"q": ["1", "2"]}}], "handle": [static("query")]},
            {"match": [{"query": {"any": ["*"]}}], "handle": [static("query any")]},
            {
                "match": [{"path_regexp": {"name": "ver", "pattern": "^/v([0-9]+)/(.*)$"}}],
                "handle": [static("regexp {http.regexp.ver.1} {http.regexp.ver.2}")],
            },
            {
                "match": [{"path": ["/n/*"], "not": [{"path": ["/n/public/*"]}]}],
                "handle": [static("not public")],
            },
            {
                "match": [{"path": ["/or-a"]}, {"path": ["/or-b"], "method": ["PUT"]}],
                "handle": [static("or")],
            },
            catch_all(),
        ],
        [
            Req("/exact"),
            Req("/EXACT"),
            Req("/exact/"),
            Req("/pre/x/y"),
            Req("/pre"),
            Req("/a/b/site.CSS"),
            Req("/mid/x/end"),
            Req("/mid/x/y/end"),
            Req("/xcontainsx"),
            Req("/thing", "DELETE"),
            Req("/h", headers={"Host": "www.example.com"}),
            Req("/h", headers={"Host": "a.b.example.com"}),
            Req("/h", headers={"Host": "EXAMPLE.com"}),
            Req("/h", headers={"X-Mode": "beta-2"}),
            Req("/h", headers={"X-Mode": "alpha"}),
            Req("/h", headers={"X-Present": ""}),
            Req("/h?q=2"),
            Req("/h?q=3"),
            Req("/h?any="),
            Req("/v2/docs/page"),
            Req("/V2/docs"),
            Req("/n/secret"),
            Req("/n/public/x"),
            Req("/or-a"),
            Req("/or-b", "PUT"),
            Req("/or-b"),
            Req("/pre/../exact"),
        ],
    ),
]


def materialise(value: Any, root: Path) -> Any:
    if isinstance(value, str):
        return value.replace("ROOT", str(root))
    if isinstance(value, list):
        return [materialise(v, root) for v in value]
    if isinstance(value, dict):
        return {k: materialise(v, root) for k, v in value.items()}
    return value


def make_config(root: Path, ports: Mapping[str, int]) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for case in CASES:
        server = servers[case.name] = {
            "listen": [f"127.0.0.1:{ports[case.name]}"],
            "routes": materialise(case.routes, root),
            "automatic_https": {"disable": True},
        }
        if case.error_routes is not None:
            server["errors"] = {"routes": materialise(case.error_routes, root)}
    return {"admin": {"disabled": True}, "apps": {"http": {"servers": servers}}}


@dataclass
class Servers:
    caddy_ports: dict[str, int]
    quantum_ports: dict[str, int]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    caddy = shutil.which("caddy")
    if caddy is None:
        if os.environ.get("CI"):
            pytest.fail("caddy is missing; scripts/ensure-system-packages.sh installs it")
        pytest.skip("Debian's caddy is not installed")
    work = tmp_path_factory.mktemp("oracle")
    root = work / "site"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    ports = iter(free_ports(2 * len(CASES)))
    caddy_ports = {case.name: next(ports) for case in CASES}
    quantum_ports = {case.name: next(ports) for case in CASES}
    caddy_config = work / "caddy.json"
    caddy_config.write_text(json.dumps(make_config(root, caddy_ports)))
    env = {**os.environ, "XDG_DATA_HOME": str(work / "xdg"), "XDG_CONFIG_HOME": str(work / "xdg")}
    with (work / "caddy.log").open("wb") as log:
        caddy_proc = subprocess.Popen(
            [caddy, "run", "--config", str(caddy_config)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    quantum = QuantumProcess(make_config(root, quantum_ports), work, name="quantum")
    try:
        quantum.start(wait=False)
        for port in [*caddy_ports.values(), *quantum_ports.values()]:
            wait_for_port(port)
        yield Servers(caddy_ports, quantum_ports)
    finally:
        caddy_proc.terminate()
        try:
            caddy_proc.wait(10)
        except subprocess.TimeoutExpired:
            caddy_proc.kill()
            caddy_proc.wait()
        quantum.stop()


@dataclass
class Observed:
    status: int
    headers: dict[str, str | None]
    body: bytes
    etag: str | None
    last_modified: str | None

    def comparable(self) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type") or ""
        body, headers = self.body, dict(self.headers)
        boundary = re.search(r"boundary=(\S+)", content_type)
        if boundary:  # random per response; same length in both
            body = body.replace(boundary.group(1).encode(), b"BOUNDARY")
            headers["Content-Type"] = content_type.replace(boundary.group(1), "BOUNDARY")
        return {
            "status": self.status,
            "body": body,
            "headers": headers,
            "has_etag": self.etag is not None,
            "has_last_modified": self.last_modified is not None,
        }


async def observe(
    session: aiohttp.ClientSession, port: int, req: Req, previous: Observed | None
) -> Observed:
    headers = dict(req.headers)
    for name, value in headers.items():
        if previous is not None:
            value = value.replace("$ETAG", previous.etag or "")
            value = value.replace("$LAST_MODIFIED", previous.last_modified or "")
        headers[name] = value
    url = URL(f"http://127.0.0.1:{port}{req.path}", encoded=True)
    async with session.request(
        req.method, url, headers=headers, data=req.body, allow_redirects=False
    ) as response:
        body = await response.read()
        custom = {
            k: ",".join(response.headers.getall(k)) for k in response.headers if k.startswith("X-")
        }
        return Observed(
            status=response.status,
            headers={**{h: response.headers.get(h) for h in COMPARED_HEADERS}, **custom},
            body=body,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
        )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_quantum_answers_like_caddy(servers: Servers, case: Case) -> None:
    differences = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        previous: dict[str, Observed | None] = {"caddy": None, "quantum": None}
        for req in case.requests:
            caddy = await observe(session, servers.caddy_ports[case.name], req, previous["caddy"])
            quantum = await observe(
                session, servers.quantum_ports[case.name], req, previous["quantum"]
            )
            if caddy.comparable() != quantum.comparable():
                differences.append(
                    f"{req.method} {req.path} {dict(req.headers)}:\n"
                    f"  caddy:   {caddy.comparable()}\n  quantum: {quantum.comparable()}"
                )
            if caddy.etag is not None:
                previous = {"caddy": caddy, "quantum": quantum}
    assert not differences, "\n".join(differences)
