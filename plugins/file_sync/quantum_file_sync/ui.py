"""The browser page: ``/`` serves ``index.html`` and ``/ui/<name>`` its assets.

The page is plain HTML/JS/CSS shipped as package data (``static/``): no build step and no
external fetch, so it works offline on a LAN. Assets are read once and answered from memory
with a strong ``ETag`` and ``Cache-Control: no-cache`` (the browser keeps them but revalidates,
so an upgraded server is picked up on the next load at the cost of a 304).
"""

from __future__ import annotations

import functools
import hashlib
import html
from dataclasses import dataclass
from importlib import resources

from aiohttp import hdrs, web

ASSET_PREFIX = "/ui/"
INDEX = "index.html"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}

# The page may talk to its own origin only; `ws:`/`wss:` stay open so the WebSocket snippet of
# the docs can be pasted into the console of a page served from another address.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_NOT_FOUND_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def _assets() -> dict[str, Asset]:
    """Every file of ``static/`` by name (read once; the package data does not change)."""
    found: dict[str, Asset] = {}
    for entry in (resources.files("quantum_file_sync") / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = _CONTENT_TYPES.get(suffix)
        if not entry.is_file() or content_type is None or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[entry.name] = Asset(body, content_type, etag)
    return found


def asset_names() -> list[str]:
    """Names served under ``/ui/`` (``index.html`` included)."""
    return sorted(_assets())


def _asset_for(path: str) -> Asset | None:
    if path == "/":
        return _assets().get(INDEX)
    if not path.startswith(ASSET_PREFIX):
        return None
    # Flat names only: anything with a separator or a dot-prefix is simply not in the table.
    return _assets().get(path[len(ASSET_PREFIX) :])


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in candidates or "*" in candidates


async def serve_ui(request: web.Request) -> web.StreamResponse:
    """Answer ``GET``/``HEAD`` for ``/`` and ``/ui/<asset>``; anything else is 404 (405 for
    another method on an existing asset)."""
    asset = _asset_for(request.path)
    if asset is None:
        return not_found_response()
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        return web.Response(status=405, headers={"Allow": "GET, HEAD", **_COMMON_HEADERS})
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        **_COMMON_HEADERS,
    }
    if asset.content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = _PAGE_CSP
        headers["X-Frame-Options"] = "DENY"
    if _etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), asset.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={"Content-Type": asset.content_type, **headers})


def not_found_html(path: str | None = None) -> str:
    """A small self-contained HTML 404 page that links to the file browser at ``/``."""
    shown = f"<p><code>{html.escape(path)}</code> does not exist here.</p>" if path else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Not found — Quantum</title>
<style>
  :root {{ color-scheme: light dark; font-family: system-ui, sans-serif; }}
  body {{ max-width: 36rem; margin: 4rem auto; padding: 0 1rem; line-height: 1.5; }}
  h1 {{ font-size: 1.5rem; }}
  a {{ font-weight: 600; }}
  a:focus-visible {{ outline: 3px solid #4c8dff; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>404 — Not found</h1>
{shown}
<p><a href="/">Open the file browser</a></p>
</main>
</body>
</html>
"""


def not_found_response(path: str | None = None) -> web.Response:
    """``404`` with :func:`not_found_html` (for ``serve_ui``, the handler or the core)."""
    return web.Response(
        status=404,
        text=not_found_html(path),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": _NOT_FOUND_CSP, **_COMMON_HEADERS},
    )
