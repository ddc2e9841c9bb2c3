"""Content types by file extension, as Go's ``mime.TypeByExtension`` (and so Caddy) gives them:
the system's ``mime.types`` over a few built-ins, ``text/*`` with ``charset=utf-8``."""

from __future__ import annotations

import functools
import mimetypes
import posixpath

_GO_BUILTINS = {
    ".avif": "image/avif",
    ".css": "text/css; charset=utf-8",
    ".gif": "image/gif",
    ".htm": "text/html; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".mjs": "text/javascript; charset=utf-8",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".xml": "text/xml; charset=utf-8",
}


@functools.cache
def _system_types() -> dict[str, str]:
    database = mimetypes.MimeTypes()
    for path in mimetypes.knownfiles:
        try:
            database.read(path)
        except OSError:
            continue
    return dict(database.types_map[True])


@functools.lru_cache(maxsize=512)
def content_type_for(filename: str) -> str | None:
    """The ``Content-Type`` for ``filename``, or ``None`` when its extension is unknown."""
    extension = posixpath.splitext(filename)[1].lower()
    if not extension:
        return None
    content_type = _system_types().get(extension) or _GO_BUILTINS.get(extension)
    if content_type is None:
        return None
    if content_type.startswith("text/") and "charset=" not in content_type:
        content_type += "; charset=utf-8"
    return content_type
