"""static_response: status, headers and body with Caddy placeholders; close and abort."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema
import pytest

from quantum.handlers.static_response import SCHEMA, StaticResponse
from quantum.schema import handler_schema
from tests.core.handler_harness import serving


async def test_placeholders_in_body_and_headers() -> None:
    handler = StaticResponse(
        {
            "status_code": 201,
            "body": "{http.request.method} {http.request.uri.path} {http.request.host} "
            "q={http.request.uri.query} h={http.request.header.X-Who} {unknown.thing}",
            "headers": {"X-Path": ["{http.request.uri.path}"], "X-Gone": ["<{unknown.thing}>"]},
        }
    )
    async with serving(handler) as client:
        response = await client.post(
            "/some/where?a=1&b=2", headers={"X-Who": "me", "Host": "site.test:8080"}
        )
        assert response.status == 201
        assert await response.text() == (
            "POST /some/where site.test q=a=1&b=2 h=me {unknown.thing}"
        )
        assert response.headers["X-Path"] == "/some/where"
        assert response.headers["X-Gone"] == "<>"


async def test_multiple_header_values_and_explicit_content_type() -> None:
    handler = StaticResponse(
        {
            "body": '{"ok": true}',
            "headers": {"Content-Type": ["application/json"], "X-Multi": ["a", "b"]},
        }
    )
    async with serving(handler) as client:
        response = await client.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers.getall("X-Multi") == ["a", "b"]
        assert await response.json() == {"ok": True}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("plain words", "text/plain; charset=utf-8"),
        ("<!DOCTYPE html><p>hi</p>", "text/plain; charset=utf-8"),
        (' {"a": 1} ', "application/json"),
        ("[1, 2]", "application/json"),
        ("", None),
    ],
)
async def test_implicit_content_type_like_caddy(body: str, content_type: str | None) -> None:
    async with serving(StaticResponse({"body": body})) as client:
        response = await client.get("/")
        assert response.headers.get("Content-Type") == content_type
        assert await response.text() == body


async def test_status_code_from_a_placeholder() -> None:
    handler = StaticResponse({"status_code": "{http.request.uri.query.code}"})
    async with serving(handler) as client:
        assert (await client.get("/?code=418")).status == 418
        bad = await client.get("/?code=teapot")
        assert bad.status == 500


async def test_no_content_status_has_no_body() -> None:
    async with serving(StaticResponse({"status_code": 204, "body": "ignored"})) as client:
        response = await client.get("/")
        assert response.status == 204
        assert await response.read() == b""


async def test_close_asks_for_connection_close() -> None:
    async with serving(StaticResponse({"body": "bye", "close": True})) as client:
        response = await client.get("/")
        assert response.headers["Connection"] == "close"
        assert await response.text() == "bye"


async def test_abort_drops_the_connection_without_a_response() -> None:
    async with serving(StaticResponse({"abort": True})) as client:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.get("/")


@pytest.mark.parametrize(
    "options",
    [{"status_code": 99}, {"status_code": True}, {"body": 3}, {"headers": {"X": "one"}}, {"x": 1}],
)
def test_schema_refuses_bad_options(options: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(handler_schema("static_response", dict(SCHEMA)))
    assert list(validator.iter_errors({"handler": "static_response", **options}))


def test_literal_bad_status_is_refused_at_validation() -> None:
    handler = StaticResponse({"status_code": "abc"})
    with pytest.raises(ValueError, match="not an integer"):
        handler.validate()
