"""Options of the ``file_sync`` handler: the closed JSON Schema and the typed :class:`Settings`.

The core validates a handler's options against :data:`SCHEMA` (adding the ``handler`` key and
closing the top-level object) before the factory runs, so :func:`parse_settings` only fills in
defaults and converts durations/sizes. The schema is embedded in the core's composed schema,
so it must not use ``$ref``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quantum.durations import DURATION_SCHEMA, parse_duration
from quantum.sizes import SIZE_SCHEMA, parse_size


def _duration(default: str, description: str) -> dict[str, Any]:
    return {**copy.deepcopy(DURATION_SCHEMA), "default": default, "description": description}


def _size(default: str, description: str) -> dict[str, Any]:
    return {**copy.deepcopy(SIZE_SCHEMA), "default": default, "description": description}


def _closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Serve a directory with an HTTP API, push every change over /ws, keep a "
    "journal for catch-up and watch the directory for changes made on disk.",
    "required": ["root"],
    "properties": {
        "root": {
            "type": "string",
            "minLength": 1,
            "description": "directory to serve (created if missing; relative to the CWD)",
        },
        "enable_upload": {
            "type": "boolean",
            "default": False,
            "description": "allow PUT/DELETE/mkdir/move (otherwise 403)",
        },
        "max_upload_size": _size("1GiB", "largest accepted upload (413 beyond)"),
        "metrics_path": {
            "type": ["string", "null"],
            "pattern": "^/",
            "default": "/metrics",
            "description": "Prometheus metrics route contributed to the server (null: none)",
        },
        "ui": {"type": "boolean", "default": True, "description": "browser page at /"},
        "auth": _closed(
            {
                "tokens": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "token_file": {
                    "type": "string",
                    "minLength": 1,
                    "description": "file with one token per line",
                },
            },
            description="Bearer tokens required by the API and /ws (absent: no auth)",
            anyOf=[{"required": ["tokens"]}, {"required": ["token_file"]}],
        ),
        "allowed_origins": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "description": 'browser origins allowed (CORS, WebSocket); ["*"] = any; absent = '
            "same-origin only",
        },
        "limits": _closed(
            {
                "max_connections": {"type": "integer", "minimum": 1, "default": 10000},
                "messages_per_second": {"type": "number", "exclusiveMinimum": 0, "default": 50},
                "message_burst": {"type": "integer", "minimum": 1, "default": 100},
                "send_buffer": {"type": "integer", "minimum": 1, "default": 1024},
                "max_message_size": _size("64KiB", "largest WebSocket message accepted"),
            }
        ),
        "heartbeat": _closed(
            {
                "interval": _duration("30s", "server Ping period"),
                "timeout": _duration("90s", "silence after which a client is dropped"),
                "cleanup_interval": _duration("5m", "stale connection sweep period"),
            }
        ),
        "journal": _closed(
            {
                "path": {
                    "type": ["string", "null"],
                    "default": None,
                    "description": "SQLite journal (default ROOT/.quantum/journal.sqlite3)",
                },
                "max_events": {"type": "integer", "minimum": 1, "default": 100000},
                "max_age": _duration("7d", "events older than this are dropped"),
            }
        ),
        "broker": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["memory", "redis"]}},
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "memory"}}},
                    "then": _closed({"type": {"const": "memory"}}),
                },
                {
                    "if": {"properties": {"type": {"const": "redis"}}},
                    "then": _closed(
                        {
                            "type": {"const": "redis"},
                            "url": {"type": "string", "minLength": 1},
                            "key_prefix": {"type": "string", "default": "quantum:"},
                            "stream_maxlen": {"type": "integer", "minimum": 1, "default": 100000},
                        },
                        required=["type", "url"],
                    ),
                },
            ],
        },
        "watch": {
            "type": "boolean",
            "default": True,
            "description": "broadcast changes made directly on disk",
        },
        "compression": {
            "type": "boolean",
            "default": False,
            "description": "permessage-deflate on /ws",
        },
        "uploads": _closed(
            {
                "expire": _duration(
                    "24h",
                    "an unfinished resumable upload is removed this long after its last write",
                ),
            },
            description="resumable uploads (/api/uploads)",
        ),
        "history": _closed(
            {
                "enabled": {
                    "type": "boolean",
                    "default": True,
                    "description": "keep every replaced and deleted file (docs/history.md)",
                },
                "keep_at_least": {
                    "type": "integer",
                    "minimum": 0,
                    "default": 3,
                    "description": "newest versions of each path that thinning and max_age keep",
                },
                "max_age": {
                    "oneOf": [{"type": "null"}, copy.deepcopy(DURATION_SCHEMA)],
                    "default": None,
                    "description": "versions and trash items older than this are purged",
                },
                "cap": {
                    "oneOf": [
                        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
                        copy.deepcopy(SIZE_SCHEMA),
                    ],
                    "default": "50%",
                    "description": "most space history may use: a percentage of (free space + "
                    'history) or a size such as "20GiB"',
                },
                "interval": _duration("1m", "how often retention runs"),
                "copies_below": _size(
                    "1MiB",
                    "live files up to this size are also copied into history, so an edit or "
                    "delete made on disk behind Quantum's back can be undone (0: none)",
                ),
            },
            description="file history: versions and trash",
        ),
    },
}


@dataclass(frozen=True, slots=True)
class AuthSettings:
    tokens: tuple[str, ...]
    token_file: Path | None


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_connections: int = 10000
    messages_per_second: float = 50.0
    message_burst: int = 100
    send_buffer: int = 1024
    max_message_size: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    interval: float = 30.0
    timeout: float = 90.0
    cleanup_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class JournalSettings:
    path: Path
    max_events: int = 100000
    max_age: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    type: Literal["memory", "redis"] = "memory"
    url: str | None = None
    key_prefix: str = "quantum:"
    stream_maxlen: int = 100000


@dataclass(frozen=True, slots=True)
class UploadSettings:
    expire: float = 86400.0


@dataclass(frozen=True, slots=True)
class HistorySettings:
    enabled: bool = True
    keep_at_least: int = 3
    max_age: float | None = None
    cap_fraction: float | None = 0.5
    """Of (free space + history's size); ``None`` when ``cap_bytes`` is set instead."""
    cap_bytes: int | None = None
    interval: float = 60.0
    copies_below: int = 1024 * 1024

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> HistorySettings:
        cap = options.get("cap", "50%")
        fraction, limit = None, None
        if isinstance(cap, str) and cap.strip().endswith("%"):
            fraction = float(cap.strip()[:-1]) / 100
        else:
            limit = parse_size(cap)
        max_age = options.get("max_age")
        return cls(
            enabled=bool(options.get("enabled", True)),
            keep_at_least=int(options.get("keep_at_least", 3)),
            max_age=None if max_age is None else parse_duration(max_age),
            cap_fraction=fraction,
            cap_bytes=limit,
            interval=parse_duration(options.get("interval", "1m")),
            copies_below=parse_size(options.get("copies_below", "1MiB")),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    root: Path
    enable_upload: bool
    max_upload_size: int
    metrics_path: str | None
    ui: bool
    auth: AuthSettings | None
    allowed_origins: tuple[str, ...] | None
    limits: LimitSettings
    heartbeat: HeartbeatSettings
    journal: JournalSettings
    broker: BrokerSettings
    watch: bool
    compression: bool
    uploads: UploadSettings = UploadSettings()
    history: HistorySettings = HistorySettings()


def parse_settings(options: Mapping[str, Any]) -> Settings:
    """Typed settings from options already validated against :data:`SCHEMA`.

    Raises ``ValueError`` for what the schema cannot express (e.g. a token file that is empty
    is only detected at provision time)."""
    root = Path(options["root"])
    auth_options = options.get("auth")
    limits = options.get("limits", {})
    heartbeat = options.get("heartbeat", {})
    journal = options.get("journal", {})
    broker = options.get("broker", {"type": "memory"})
    origins = options.get("allowed_origins")
    journal_path = journal.get("path")
    uploads = options.get("uploads", {})
    return Settings(
        root=root,
        enable_upload=bool(options.get("enable_upload", False)),
        max_upload_size=parse_size(options.get("max_upload_size", "1GiB")),
        metrics_path=options.get("metrics_path", "/metrics"),
        ui=bool(options.get("ui", True)),
        auth=None
        if auth_options is None
        else AuthSettings(
            tokens=tuple(auth_options.get("tokens", ())),
            token_file=Path(auth_options["token_file"]) if "token_file" in auth_options else None,
        ),
        allowed_origins=None if origins is None else tuple(origins),
        limits=LimitSettings(
            max_connections=int(limits.get("max_connections", 10000)),
            messages_per_second=float(limits.get("messages_per_second", 50)),
            message_burst=int(limits.get("message_burst", 100)),
            send_buffer=int(limits.get("send_buffer", 1024)),
            max_message_size=parse_size(limits.get("max_message_size", "64KiB")),
        ),
        heartbeat=HeartbeatSettings(
            interval=parse_duration(heartbeat.get("interval", "30s")),
            timeout=parse_duration(heartbeat.get("timeout", "90s")),
            cleanup_interval=parse_duration(heartbeat.get("cleanup_interval", "5m")),
        ),
        journal=JournalSettings(
            path=Path(journal_path) if journal_path else root / ".quantum" / "journal.sqlite3",
            max_events=int(journal.get("max_events", 100000)),
            max_age=parse_duration(journal.get("max_age", "7d")),
        ),
        broker=BrokerSettings(
            type=broker.get("type", "memory"),
            url=broker.get("url"),
            key_prefix=broker.get("key_prefix", "quantum:"),
            stream_maxlen=int(broker.get("stream_maxlen", 100000)),
        ),
        watch=bool(options.get("watch", True)),
        compression=bool(options.get("compression", False)),
        uploads=UploadSettings(expire=parse_duration(uploads.get("expire", "24h"))),
        history=HistorySettings.parse(options.get("history", {})),
    )
