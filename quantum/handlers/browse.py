"""Directory listings of ``file_server`` when ``browse`` is enabled.

JSON (when the client accepts ``application/json``) has Caddy's shape: a list of
``{name, size, url, mod_time, mode, is_dir, is_symlink}`` (directories' names end in ``/``);
otherwise a small HTML page. ``?sort=name|namedirfirst|size|time&order=asc|desc&limit=&offset=``
like Caddy.
"""

from __future__ import annotations

import html
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from aiohttp import hdrs, web

from quantum.handlers.responses import wants_json


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    size: int
    mtime_ns: int
    mode: int
    is_dir: bool
    is_symlink: bool

    @property
    def url(self) -> str:
        return "./" + quote(self.name, safe="/:@!$&'()*+,;=")

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "size": self.size,
            "url": self.url,
            "mod_time": _rfc3339_nano(self.mtime_ns),
            "mode": self.mode,
            "is_dir": self.is_dir,
            "is_symlink": self.is_symlink,
        }


def go_file_mode(st_mode: int) -> int:
    """A ``st_mode`` as Go's ``fs.FileMode`` (what Caddy's JSON listing shows)."""
    mode = st_mode & 0o777
    if stat.S_ISDIR(st_mode):
        mode |= 1 << 31
    elif stat.S_ISLNK(st_mode):
        mode |= 1 << 27
    elif stat.S_ISFIFO(st_mode):
        mode |= 1 << 25
    elif stat.S_ISSOCK(st_mode):
        mode |= 1 << 24
    elif stat.S_ISBLK(st_mode):
        mode |= 1 << 26
    elif stat.S_ISCHR(st_mode):
        mode |= (1 << 26) | (1 << 21)
    if st_mode & stat.S_ISUID:
        mode |= 1 << 23
    if st_mode & stat.S_ISGID:
        mode |= 1 << 22
    if st_mode & stat.S_ISVTX:
        mode |= 1 << 20
    return mode


def _rfc3339_nano(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def read_directory(directory: str, hidden: Callable[[str], bool]) -> list[Entry]:
    """The visible entries of ``directory`` (blocking: run it in a thread)."""
    entries: list[Entry] = []
    with os.scandir(directory) as scan:
        for item in scan:
            if hidden(item.path):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue
            is_symlink = stat.S_ISLNK(info.st_mode)
            size = info.st_size
            is_dir = stat.S_ISDIR(info.st_mode)
            if is_symlink:
                try:
                    target = os.stat(item.path)
                    size, is_dir = target.st_size, stat.S_ISDIR(target.st_mode)
                except OSError:
                    pass
            entries.append(
                Entry(
                    name=item.name + "/" if is_dir else item.name,
                    size=size,
                    mtime_ns=info.st_mtime_ns,
                    mode=go_file_mode(info.st_mode),
                    is_dir=is_dir,
                    is_symlink=is_symlink,
                )
            )
    return entries


def _arrange(entries: list[Entry], request: web.Request) -> list[Entry]:
    params = request.query
    sort = params.get("sort", "namedirfirst")
    keys: dict[str, Callable[[Entry], object]] = {
        "name": lambda e: e.name.lower(),
        "namedirfirst": lambda e: (not e.is_dir, e.name.lower()),
        "size": lambda e: (not e.is_dir, e.size),
        "time": lambda e: e.mtime_ns,
    }
    arranged = sorted(entries, key=keys.get(sort, keys["namedirfirst"]))  # type: ignore[arg-type]
    if params.get("order") == "desc":
        arranged.reverse()
    offset = int(params["offset"]) if params.get("offset", "").isdigit() else 0
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else 0
    arranged = arranged[offset:]
    return arranged[:limit] if limit else arranged


def listing_response(request: web.Request, entries: list[Entry]) -> web.Response:
    arranged = _arrange(entries, request)
    if wants_json(request):
        body = json.dumps([e.as_json() for e in arranged], separators=(",", ":")).encode()
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: "application/json"})
    return web.Response(
        body=_html(request.path, arranged).encode(),
        headers={hdrs.CONTENT_TYPE: "text/html; charset=utf-8"},
    )


def _html(path: str, entries: list[Entry]) -> str:
    title = html.escape(path)
    rows = [
        f'<tr><td><a href="{html.escape(e.url)}">{html.escape(e.name)}</a></td>'
        f"<td>{'' if e.is_dir else e.size}</td><td>{_rfc3339_nano(e.mtime_ns)[:19]}Z</td></tr>"
        for e in entries
    ]
    parent = '<tr><td><a href="../">../</a></td><td></td><td></td></tr>' if path != "/" else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em 1em}</style></head>"
        f"<body><h1>{title}</h1><table><tr><th>Name</th><th>Size</th><th>Modified</th></tr>"
        f"{parent}{''.join(rows)}</table></body></html>\n"
    )
