"""``realtime-sync-client versions | restore | trash | undelete``: file history from the command
line (reference: docs/sync-client.md, "History"; the server side: docs/history.md).

    realtime-sync-client versions PATH --server URL [--limit N] [--json]
    realtime-sync-client restore PATH --server URL [--version ID] [--to OTHER] [--json]
    realtime-sync-client trash --server URL [--prefix P] [--since TIME] [--source-client C]
    realtime-sync-client undelete PATH... | --since TIME [--prefix P] [--source-client C]
                                  --server URL [--to OTHER] [--json]

Every command takes ``--token`` (default ``$QUANTUM_TOKEN``), ``--client-id`` (sent as
``X-Quantum-Client``) and ``--local-path DIR`` (a PATH that is a local path inside DIR is
translated to its path on the server). Each makes its requests, prints the result and exits
with a status of :class:`ExitCode`; bad input is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import quote

import aiohttp

from quantum_file_sync.client.exit_codes import (
    BadServer,
    ClientExit,
    ExitCode,
    ServerUnreachable,
)
from quantum_file_sync.client.progress import human_bytes
from quantum_file_sync.client.remote import ConnectionLost, RemoteClient, RemoteError
from quantum_file_sync.client.server_arguments import add_server_arguments
from quantum_file_sync.client.urls import InvalidServerUrl, normalize_server
from quantum_file_sync.paths import PathError, validate

PROG = "realtime-sync-client"
COMMANDS = ("versions", "restore", "trash", "undelete")
"""First words of the command line that run a history command instead of a sync."""
PAGE_LIMIT = 100
"""The most versions or trash items the server sends in one page."""
SHOWN_PATHS = 20
"""Restored paths listed one by one; beyond that only the count is printed."""

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NOT_FOUND_CODES = {"version_not_found", "trash_not_found", "not_found"}
_CONFLICT_CODES = {"exists", "is_directory", "not_a_directory", "version_incomplete"}

Json = dict[str, Any]


class UsageError(ClientExit):
    def __init__(self, message: str) -> None:
        super().__init__(ExitCode.USAGE, message)


# --- the command line ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``PROG CMD: message``) and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(int(ExitCode.USAGE), f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    add_server_arguments(common)
    common.add_argument(
        "--client-id", metavar="ID", help="sent as X-Quantum-Client (recorded with restores)"
    )
    common.add_argument(
        "--local-path",
        type=Path,
        metavar="DIR",
        help="the synced folder: a PATH inside it is translated to its path on the server",
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON")

    parser = _Parser(
        prog=PROG,
        description="File history of a Quantum file_sync server: versions and trash.",
        epilog=(
            "TIME is RFC 3339 (2026-12-03T14:05:00Z), Unix seconds (1795000000), or a "
            "duration ago: 30s, 10m, 2h, 1d, 1w. Exit statuses: 0 ok, 2 bad input, 3 server "
            "unreachable, 4 authentication failed, 8 not a file_sync server (or no history "
            "API), 9 not found, 10 not (everything) restored, 11 refused by the server. "
            "See docs/sync-client.md."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    versions = commands.add_parser(
        "versions", parents=[common], help="list the versions of a file, newest first"
    )
    versions.add_argument("path", metavar="PATH")
    versions.add_argument(
        "--limit", type=_positive_int, metavar="N", help="list at most N versions (default: all)"
    )

    restore = commands.add_parser(
        "restore", parents=[common], help="make a version the live file again"
    )
    restore.add_argument("path", metavar="PATH")
    restore.add_argument(
        "--version", type=_positive_int, metavar="ID", help="the version (default: the newest)"
    )
    restore.add_argument(
        "--to", metavar="OTHER", help="write it at OTHER instead (never over an existing file)"
    )

    trash = commands.add_parser("trash", parents=[common], help="list deleted files, newest first")
    _filters(trash)
    trash.add_argument(
        "--limit", type=_positive_int, metavar="N", help="list at most N items (default: all)"
    )

    undelete = commands.add_parser(
        "undelete", parents=[common], help="bring deleted files back from the trash"
    )
    undelete.add_argument("paths", nargs="*", metavar="PATH")
    _filters(undelete)
    undelete.add_argument(
        "--to", metavar="OTHER", help="with one PATH: put it back at OTHER instead"
    )
    return parser


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", metavar="P", help="only items at or below P")
    parser.add_argument(
        "--since", type=parse_time, metavar="TIME", help="only items deleted at TIME or later"
    )
    parser.add_argument("--source-client", metavar="C", help="only items client C deleted")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_time(text: str, now: Callable[[], datetime] | None = None) -> str:
    """TIME as the server takes it (RFC 3339 UTC): RFC 3339, Unix seconds, or a duration ago
    (``90s``, ``10m``, ``2h``, ``1d``, ``1w``, combinable: ``1h30m``)."""
    value = text.strip()
    moment: datetime | None = None
    if value and _RELATIVE.sub("", value).strip() == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _RELATIVE.findall(value))
        moment = (now or _utcnow)() - timedelta(seconds=seconds)
    elif re.fullmatch(r"\d+(\.\d+)?", value):
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            moment = None
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None and "T" in value.upper():
            moment = parsed.astimezone(UTC)
    if moment is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: RFC 3339 with a time zone (2026-12-03T14:05:00Z), "
            "Unix seconds, or a duration ago (30s, 10m, 2h, 1d, 1w)"
        )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def server_path(text: str, local_path: Path | None, *, what: str = "PATH") -> str:
    """The path on the server that ``text`` names: a local path inside ``local_path`` (when
    given) is translated; anything else is taken as a path relative to the served root."""
    rel = text
    if local_path is not None:
        inside = _inside(text, local_path, what)
        if inside is not None:
            rel = inside
        elif Path(text).is_absolute():
            raise UsageError(f"{what} {text!r} is not inside {local_path}")
    while rel.startswith("./"):
        rel = rel[2:]
    rel = rel.rstrip("/") or rel
    try:
        return validate(rel)
    except PathError as exc:
        raise UsageError(f"invalid {what} {text!r}: {exc.message}") from None


def _inside(text: str, local_path: Path, what: str) -> str | None:
    """``text`` (relative to the working directory) as a path below ``local_path``, or None."""
    root = Path(os.path.abspath(local_path.expanduser()))
    candidate = Path(os.path.abspath(Path(text).expanduser()))
    for base, path in ((root, candidate), (root.resolve(), _resolve_parent(candidate))):
        if path == base:
            raise UsageError(f"{what} {text!r} is the synced folder itself, not a path in it")
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return None


def _resolve_parent(path: Path) -> Path:
    """``path`` with its parent's symbolic links resolved (the file itself may be gone)."""
    return path.parent.resolve() / path.name


# --- talking to the server -------------------------------------------------------------------


class HistoryRemote(RemoteClient):
    """The history endpoints of docs/history.md, on the sync client's HTTP plumbing."""

    def __init__(
        self, session: aiohttp.ClientSession, server: str, client_id: str | None, token: str | None
    ) -> None:
        super().__init__(session, server, client_id or "", token)
        if not client_id:
            del self.headers["X-Quantum-Client"]

    async def versions_page(self, path: str, limit: int, cursor: str | None) -> Json:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return await self._dict("GET", f"versions/{quote(path, safe='/')}", params=params)

    async def restore(self, path: str, version: int, to: str | None) -> Json:
        body: Json = {"path": path, "version": version, **({"to": to} if to else {})}
        return await self._dict("POST", "restore", json=body)

    async def trash_page(self, filters: Json, limit: int, cursor: str | None) -> Json:
        params = {k: str(v) for k, v in filters.items() if v is not None}
        params["limit"] = str(limit)
        if cursor:
            params["cursor"] = cursor
        return await self._dict("GET", "trash", params=params)

    async def trash_restore(self, body: Json) -> Json:
        return await self._dict("POST", "trash/restore", json=body)

    async def _dict(self, method: str, endpoint: str, **kwargs: Any) -> Json:
        reply = await self._json(method, endpoint, **kwargs)
        if not isinstance(reply, dict):
            raise BadServer(f"{self.server} answered {method} /api/{endpoint} with a non-object")
        return reply


async def _pages(
    fetch: Callable[[int, str | None], Coroutine[Any, Any, Json]],
    key: str,
    limit: int | None,
    until: Callable[[Json], bool] | None = None,
) -> tuple[Json, list[Json]]:
    """Follow ``next`` until the end, ``limit`` items or a page with an item ``until`` holds
    for; the first page and every item."""
    first: Json | None = None
    items: list[Json] = []
    cursor: str | None = None
    while limit is None or len(items) < limit:
        wanted = PAGE_LIMIT if limit is None else min(PAGE_LIMIT, limit - len(items))
        page = await fetch(wanted, cursor)
        first = first or page
        found = page[key]
        if not isinstance(found, list):
            raise TypeError(f"{key!r} is not a list")
        items += found
        cursor = page.get("next")
        if not cursor or not found or (until is not None and any(map(until, found))):
            break
        cursor = str(cursor)
    assert first is not None
    return first, items if limit is None else items[:limit]


# --- the commands ----------------------------------------------------------------------------


@dataclass
class Output:
    out: TextIO
    err: TextIO
    as_json: bool

    def json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, ensure_ascii=False)
        self.out.write("\n")

    def line(self, text: str = "") -> None:
        print(text, file=self.out)

    def warn(self, text: str) -> None:
        print(f"{PROG}: {text}", file=self.err)


async def cmd_versions(remote: HistoryRemote, args: argparse.Namespace, out: Output) -> int:
    path = server_path(args.path, args.local_path)
    first, versions = await _pages(
        lambda limit, cursor: remote.versions_page(path, limit, cursor), "versions", args.limit
    )
    current = first.get("current")
    if current is None and not versions:
        raise ClientExit(ExitCode.NOT_FOUND, f"{path}: no such file, and no versions of it")
    if out.as_json:
        out.json({"path": first.get("path", path), "current": current, "versions": versions})
        return int(ExitCode.OK)
    if isinstance(current, dict):
        out.line(
            f"{path}: live, {human_bytes(int(current['size']))}, "
            f"modified {_when(current.get('modified'))}"
        )
    else:
        out.line(f"{path}: not live now (deleted?)")
    if not versions:
        out.line("no versions")
        return int(ExitCode.OK)
    rows = [["ID", "REPLACED", "SIZE", "REASON", "BY", "NOTE"]]
    for version in versions:
        notes = []
        if version.get("recorded_path") not in (None, version.get("path")):
            notes.append(f"was {version['recorded_path']}")
        if version.get("complete") is False:
            notes.append("incomplete")
        rows.append(
            [
                str(version["id"]),
                _when(version.get("replaced")),
                human_bytes(int(version["size"])),
                str(version.get("reason") or ""),
                str(version.get("source_client") or "-"),
                ", ".join(notes),
            ]
        )
    _table(out, rows, right=(0, 2))
    return int(ExitCode.OK)


async def cmd_restore(remote: HistoryRemote, args: argparse.Namespace, out: Output) -> int:
    path = server_path(args.path, args.local_path)
    to = server_path(args.to, args.local_path, what="--to") if args.to else None
    version = args.version
    if version is None:
        _, newest = await _pages(
            lambda limit, cursor: remote.versions_page(path, limit, cursor), "versions", 1
        )
        if not newest:
            raise ClientExit(ExitCode.NOT_FOUND, f"{path} has no versions")
        version = int(newest[0]["id"])
    reply = await remote.restore(path, version, to)
    if out.as_json:
        out.json(reply)
        return int(ExitCode.OK)
    metadata = reply.get("metadata") or {}
    out.line(
        f"restored {metadata.get('path', to or path)} from version "
        f"{reply.get('restored_from', version)} of {path} "
        f"({human_bytes(int(metadata.get('size', 0)))})"
    )
    return int(ExitCode.OK)


async def cmd_trash(remote: HistoryRemote, args: argparse.Namespace, out: Output) -> int:
    _, items = await _pages(
        lambda limit, cursor: remote.trash_page(_trash_filters(args), limit, cursor),
        "items",
        args.limit,
    )
    if out.as_json:
        out.json({"items": items})
        return int(ExitCode.OK)
    if not items:
        out.line("the trash is empty" + (" (for these filters)" if _filtered(args) else ""))
        return int(ExitCode.OK)
    rows = [["ID", "DELETED", "SIZE", "FILES", "BY", "PATH"]]
    for item in items:
        directory = bool(item.get("is_directory"))
        rows.append(
            [
                str(item["id"]),
                _when(item.get("deleted")),
                human_bytes(int(item.get("size") or 0)),
                str(item.get("files", "")) if directory else "",
                str(item.get("source_client") or "-"),
                str(item["path"]) + ("/" if directory else ""),
            ]
        )
    _table(out, rows, right=(0, 2, 3))
    return int(ExitCode.OK)


async def cmd_undelete(remote: HistoryRemote, args: argparse.Namespace, out: Output) -> int:
    if args.paths and (args.since or args.prefix or args.source_client):
        raise UsageError("give PATHs or --since (with --prefix, --source-client), not both")
    if not args.paths and not args.since:
        raise UsageError("give the PATHs to bring back, or --since TIME for everything since")
    if args.to and len(args.paths) != 1:
        raise UsageError("--to takes exactly one PATH")
    body: Json
    if args.since:
        body = _trash_filters(args)
    else:
        paths = [server_path(p, args.local_path) for p in args.paths]
        body = {"ids": [await _newest_trash_item(remote, path) for path in dict.fromkeys(paths)]}
        if args.to:
            body["to"] = server_path(args.to, args.local_path, what="--to")
    reply = await remote.trash_restore(body)
    restored, conflicts = reply["restored"], reply["conflicts"]
    if not isinstance(restored, list) or not isinstance(conflicts, list):
        raise TypeError("restored and conflicts must be lists")
    if out.as_json:
        out.json(reply)
    else:
        _report_undelete(out, restored, conflicts, args.since)
    if conflicts:
        return int(ExitCode.PARTIAL)
    return int(ExitCode.OK)


def _report_undelete(out: Output, restored: list[Json], conflicts: list[Json], since: str) -> None:
    if not restored and not conflicts:
        out.line(f"nothing to restore: nothing in the trash was deleted since {since}")
        return
    if len(restored) <= SHOWN_PATHS:
        for item in restored:
            out.line(f"restored {item['path']}")
    out.line(f"restored {len(restored)} of {len(restored) + len(conflicts)} trash items")
    for conflict in conflicts:
        out.warn(
            f"not restored: {conflict.get('path')} (trash item {conflict.get('id')}): "
            f"{conflict.get('code')}: {conflict.get('error')}"
        )
    if conflicts:
        out.warn("they stay in the trash: bring one back elsewhere with undelete PATH --to OTHER")


def _trash_filters(args: argparse.Namespace) -> Json:
    prefix = server_path(args.prefix, args.local_path, what="--prefix") if args.prefix else None
    filters = {"since": args.since, "prefix": prefix, "source_client": args.source_client}
    return {key: value for key, value in filters.items() if value is not None}


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.prefix or args.since or args.source_client)


async def _newest_trash_item(remote: HistoryRemote, path: str) -> int:
    """The id of the newest trash item of exactly ``path``. When there is none but a deleted
    directory holds ``path``, say so: a trash item is restored whole."""
    for candidate in [path, *_ancestors(path)]:
        _, items = await _pages(
            functools.partial(remote.trash_page, {"prefix": candidate}),
            "items",
            None,
            until=functools.partial(_is_at, candidate),
        )
        for item in items:  # newest first
            if item.get("path") != candidate:
                continue
            if candidate == path:
                return int(item["id"])
            if item.get("is_directory"):
                raise ClientExit(
                    ExitCode.NOT_FOUND,
                    f"{path} was deleted with its directory {candidate} (trash item "
                    f"{item['id']}): undelete {candidate}",
                )
    raise ClientExit(ExitCode.NOT_FOUND, f"{path} is not in the trash")


def _is_at(path: str, item: Json) -> bool:
    return item.get("path") == path


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` → ``["a/b", "a"]`` (nearest first)."""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)]


def _when(stamp: object) -> str:
    """``2026-12-03T14:05:09.123456Z`` → ``2026-12-03 14:05:09Z``."""
    if not isinstance(stamp, str):
        return "-"
    return stamp.replace("T", " ", 1).split(".", 1)[0].removesuffix("Z") + "Z"


def _table(out: Output, rows: list[list[str]], right: tuple[int, ...]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.line("  ".join(cells).rstrip())


_COMMANDS: dict[
    str, Callable[[HistoryRemote, argparse.Namespace, Output], Coroutine[Any, Any, int]]
]
_COMMANDS = {
    "versions": cmd_versions,
    "restore": cmd_restore,
    "trash": cmd_trash,
    "undelete": cmd_undelete,
}


# --- running ---------------------------------------------------------------------------------


def main(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one history command (``argv[0]`` is its name); returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code) if isinstance(exc.code, int) else int(ExitCode.USAGE)
    output = Output(out, err, args.json)
    try:
        server = _server(args.server)
        _check_client_id(args.client_id)
        return asyncio.run(_run(server, args, output))
    except ClientExit as exc:
        output.warn(exc.message)
        return int(exc.code)
    except KeyboardInterrupt:
        output.warn("interrupted")
        return int(ExitCode.INTERRUPTED)


def _server(raw: str) -> str:
    try:
        return normalize_server(raw)
    except InvalidServerUrl as exc:
        raise UsageError(str(exc)) from None


def _check_client_id(client_id: str | None) -> None:
    if client_id is None:
        return
    from quantum_file_sync.protocol import CLIENT_ID_PATTERN  # slow to import: only when needed

    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise UsageError(f"invalid client id {client_id!r}: 1-128 of A-Z a-z 0-9 . _ : @ + -")


async def _run(server: str, args: argparse.Namespace, out: Output) -> int:
    # No read timeout: the server answers a bulk undelete once every item is back (10,000
    # trash items took ~2 min on a loaded 2-CPU machine; a bulk restore takes up to 100,000).
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        remote = HistoryRemote(session, server, args.client_id, args.token or None)
        try:
            return await _COMMANDS[args.command](remote, args, out)
        except ConnectionLost as exc:
            raise ServerUnreachable(f"cannot reach {server}: {exc}") from None
        except RemoteError as exc:
            raise _remote_failure(server, exc) from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadServer(
                f"{server} sent an answer this client does not understand: {exc!r}"
            ) from None


def _remote_failure(server: str, exc: RemoteError) -> ClientExit:
    """An API error as the status and the one line to print."""
    text = f"{exc.message} ({exc.status} {exc.code})"
    if exc.status == 404 and exc.code == "not_found" and "no API endpoint" in exc.message:
        return BadServer(f"{server} has no history API (an older file_sync?): {text}")
    if exc.code == "history_disabled":
        return ClientExit(ExitCode.REFUSED, f"history is disabled on {server}: {text}")
    if exc.status == 404 or exc.code in _NOT_FOUND_CODES:
        return ClientExit(ExitCode.NOT_FOUND, text)
    if exc.status == 409 or exc.code in _CONFLICT_CODES:
        hint = ""
        if exc.code == "version_incomplete":
            hint = "; pick another version with --version (see the versions command)"
        elif exc.code == "exists":
            hint = "; choose another --to"
        return ClientExit(ExitCode.PARTIAL, text + hint)
    if exc.status == 400:
        return UsageError(f"the server refused the request: {text}")
    return ClientExit(ExitCode.REFUSED, f"{server} refused: {text}")
