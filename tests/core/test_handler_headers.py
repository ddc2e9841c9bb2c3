"""headers: request operations before the chain, response operations on what it answers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from quantum.handlers.headers import Headers
from tests.core.handler_harness import serving


async def echo_request_headers(request: web.Request) -> web.StreamResponse:
    fields: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        fields.setdefault(name.lower(), []).append(value)
    return web.json_response(
        fields, headers={"X-Downstream": "original", "X-Remove-Me": "1", "Server-Timing": "a"}
    )


async def test_request_operations_reach_the_rest_of_the_chain() -> None:
    handler = Headers(
        {
            "request": {
                "set": {"X-Set": ["one", "two"], "User-Agent": ["quantum-test"]},
                "add": {"X-Add": ["{http.request.method}"]},
                "delete": ["X-Drop", "X-Wild-*"],
                "replace": {"X-Rewrite": [{"search": "old", "replace": "new"}]},
            }
        }
    )
    async with serving(handler, echo_request_headers) as client:
        response = await client.put(
            "/",
            headers={
                "X-Drop": "1",
                "X-Wild-A": "1",
                "X-Wild-B": "2",
                "X-Rewrite": "old-old",
                "X-Add": "first",
            },
        )
        seen = await response.json()
    assert seen["x-set"] == ["one", "two"]
    assert seen["user-agent"] == ["quantum-test"]
    assert seen["x-add"] == ["first", "PUT"]
    assert "x-drop" not in seen
    assert not any(name.startswith("x-wild-") for name in seen)
    assert seen["x-rewrite"] == ["new-new"]


async def test_immediate_response_operations_yield_to_the_chain() -> None:
    # Without "deferred", Caddy applies the operations before the chain runs: the chain's own
    # fields win, and delete cannot remove them.
    handler = Headers(
        {
            "response": {
                "set": {"X-Downstream": ["mine"], "X-Frame-Options": ["DENY"]},
                "add": {"X-Added": ["a", "b"]},
                "delete": ["X-Remove-Me"],
            }
        }
    )
    async with serving(handler, echo_request_headers) as client:
        response = await client.get("/")
    assert response.headers["X-Downstream"] == "original"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers.getall("X-Added") == ["a", "b"]
    assert response.headers["X-Remove-Me"] == "1"


async def test_deferred_response_operations_apply_to_the_final_response() -> None:
    handler = Headers(
        {
            "response": {
                "deferred": True,
                "set": {"X-Downstream": ["mine"]},
                "delete": ["X-Remove-*", "Server-Timing"],
                "replace": {
                    "Content-Type": [{"search_regexp": "^application/(\\w+).*", "replace": "x/$1"}]
                },
            }
        }
    )
    async with serving(handler, echo_request_headers) as client:
        response = await client.get("/")
    assert response.headers["X-Downstream"] == "mine"
    assert "X-Remove-Me" not in response.headers
    assert "Server-Timing" not in response.headers
    assert response.headers["Content-Type"] == "x/json"


async def test_require_limits_operations_to_matching_responses() -> None:
    async def by_status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.query["status"]), text="x")

    handler = Headers(
        {
            "response": {
                "require": {"status_code": [4], "headers": {"Content-Type": ["text/*"]}},
                "set": {"Cache-Control": ["no-store"]},
            }
        }
    )
    async with serving(handler, by_status) as client:
        assert (await client.get("/?status=404")).headers.get("Cache-Control") == "no-store"
        assert (await client.get("/?status=429")).headers.get("Cache-Control") == "no-store"
        assert "Cache-Control" not in (await client.get("/?status=200")).headers


async def test_response_operations_apply_to_errors_raised_downstream() -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPForbidden(text="no")

    handler = Headers({"response": {"set": {"X-Policy": ["strict"]}, "deferred": True}})
    async with serving(handler, refuse) as client:
        response = await client.get("/")
    assert response.status == 403
    assert response.headers["X-Policy"] == "strict"


async def test_placeholders_in_response_values() -> None:
    handler = Headers({"response": {"set": {"X-Echo-Path": ["{http.request.uri.path}"]}}})
    async with serving(handler, echo_request_headers) as client:
        response = await client.get("/a/b")
    assert response.headers["X-Echo-Path"] == "/a/b"


def test_bad_search_regexp_is_refused() -> None:
    options: dict[str, Any] = {
        "response": {"replace": {"X": [{"search_regexp": "(", "replace": ""}]}}
    }
    with pytest.raises(ValueError, match="invalid search_regexp"):
        Headers(options)
