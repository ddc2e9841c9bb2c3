"""subroute: nested routes in a real ``quantum`` process; fall-through; nested config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import QuantumProcess, free_port, run_quantum


def static(body: str, **extra: Any) -> dict[str, Any]:
    return {"handler": "static_response", "body": body, **extra}


def config(port: int, routes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"disabled": True},
        "apps": {"http": {"servers": {"s": {"listen": [f"127.0.0.1:{port}"], "routes": routes}}}},
    }


ROUTES: list[dict[str, Any]] = [
    {
        "match": [{"path": ["/api/*"]}],
        "handle": [
            {"handler": "headers", "response": {"set": {"X-Api": ["1"]}, "deferred": True}},
            {
                "handler": "subroute",
                "routes": [
                    {"match": [{"path": ["/api/hello"]}], "handle": [static("hello")]},
                    {
                        "match": [{"method": ["POST"]}],
                        "handle": [
                            {
                                "handler": "subroute",
                                "routes": [
                                    {
                                        "match": [{"query": {"deep": ["*"]}}],
                                        "handle": [static("deep post")],
                                    }
                                ],
                            },
                            static("post"),
                        ],
                    },
                ],
            },
        ],
    },
    {"handle": [static("fallback {http.request.uri.path}")]},
]


async def get(session: aiohttp.ClientSession, method: str, url: str) -> tuple[int, str, str]:
    async with session.request(method, url) as response:
        return response.status, await response.text(), response.headers.get("X-Api", "")


async def test_nested_routes_answer_or_fall_through(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    quantum_factory(config(port, ROUTES), tmp_path, port=port).start()
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        assert await get(session, "GET", f"{base}/api/hello") == (200, "hello", "1")
        assert await get(session, "POST", f"{base}/api/x?deep=1") == (200, "deep post", "1")
        assert await get(session, "POST", f"{base}/api/x") == (200, "post", "1")
        # No nested route answered: the chain continues with the next top-level route.
        assert await get(session, "GET", f"{base}/api/other") == (200, "fallback /api/other", "1")
        assert await get(session, "GET", f"{base}/elsewhere") == (200, "fallback /elsewhere", "")


def test_nested_routes_are_validated_with_their_json_path(tmp_path: Path) -> None:
    bad = config(
        free_port(),
        [
            {
                "handle": [
                    {
                        "handler": "subroute",
                        "routes": [
                            {
                                "match": [{"path": "not-a-list"}],
                                "handle": [static("x", bogus=1)],
                            }
                        ],
                    }
                ]
            }
        ],
    )
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = run_quantum("validate", "--config", str(path))
    assert result.returncode == 2
    prefix = "apps.http.servers.s.routes[0].handle[0].routes[0]"
    assert f"{prefix}.handle[0].bogus: unknown field" in result.stderr
    assert f"{prefix}.match[0].path: 'not-a-list' is not of type 'array'" in result.stderr
