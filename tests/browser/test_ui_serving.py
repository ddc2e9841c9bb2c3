"""``ui.serve_ui`` in an in-process aiohttp server: the page, its assets, caching, refusals."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from quantum_file_sync import ui


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ui.serve_ui)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def referenced_assets(html: str, scripts: dict[str, str]) -> set[str]:
    names = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', html))
    for source in scripts.values():
        names |= set(re.findall(r'from "\./([^"]+)"', source))
    return names


async def test_index_is_served_at_root_with_a_strict_policy(client: TestClient) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    body = await response.text()
    assert '<script type="module" src="/ui/app.js"></script>' in body


async def test_every_referenced_asset_is_served_with_its_type(client: TestClient) -> None:
    html = await (await client.get("/")).text()
    scripts: dict[str, str] = {}
    pending = referenced_assets(html, scripts)
    seen: set[str] = set()
    while pending - seen:
        name = sorted(pending - seen)[0]
        seen.add(name)
        response = await client.get(f"/ui/{name}")
        assert response.status == 200, name
        expected = {
            ".js": "text/javascript; charset=utf-8",
            ".css": "text/css; charset=utf-8",
            ".svg": "image/svg+xml",
        }[name[name.rindex(".") :]]
        assert response.headers["Content-Type"] == expected
        if name.endswith(".js"):
            scripts[name] = await response.text()
        else:
            await response.read()
        pending = referenced_assets(html, scripts)
    assert {"app.js", "api.js", "live.js", "tree.js", "app.css"} <= seen
    assert seen | {"index.html"} == set(ui.asset_names()), "unreferenced files in static/"


async def test_page_fetches_nothing_from_elsewhere() -> None:
    for name in ui.asset_names():
        text = ui._assets()[name].body.decode()
        # Only the SVG namespace may spell out an absolute URL.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)


async def test_etag_revalidation_and_head(client: TestClient) -> None:
    first = await client.get("/ui/app.js")
    etag = first.headers["ETag"]
    await first.read()
    again = await client.get("/ui/app.js", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    changed = await client.get("/ui/app.js", headers={"If-None-Match": '"something-else"'})
    assert changed.status == 200
    await changed.read()
    head = await client.head("/")
    assert head.status == 200
    assert await head.read() == b""


@pytest.mark.parametrize(
    "path",
    [
        "/ui/",
        "/ui/missing.js",
        "/ui/../ui.py",
        "/ui/%2e%2e/ui.py",
        "/ui/static/app.js",
        "/index.html",
        "/api/list",
        "/anything",
    ],
)
async def test_anything_else_is_404_with_a_link_to_the_page(client: TestClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<a href="/">' in await response.text()


async def test_other_methods_are_refused(client: TestClient) -> None:
    response = await client.post("/", data=b"x")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_not_found_html_escapes_the_path() -> None:
    page = ui.not_found_html("/<script>alert(1)</script>")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert '<a href="/">Open the file browser</a>' in page
