"""structlog, configured once by the CLI: JSON when stderr is not a terminal, console otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

REDACTED = "REDACTED"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def redact_headers(headers: Any) -> dict[str, str]:
    """Headers fit for a log line: credentials replaced by ``REDACTED``."""
    return {
        str(name): (REDACTED if name.lower() in SENSITIVE_HEADERS else str(value))
        for name, value in headers.items()
    }


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SENSITIVE_HEADERS:
            event[key] = REDACTED
    headers = event.get("headers")
    if isinstance(headers, dict):
        event["headers"] = redact_headers(headers)
    return event


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time (so a replaced and closed stream, as in tests
    that capture output, is never written to later)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


STDERR: TextIO = _CurrentStderr()  # type: ignore[assignment]


@dataclass(frozen=True)
class LogSettings:
    level: int
    json: bool
    stream: TextIO


_settings = LogSettings(LEVELS["INFO"], json=True, stream=STDERR)


def settings() -> LogSettings:
    """What :func:`configure` last set (the access log follows it)."""
    return _settings


def configure(
    level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """(Re)configure logging for the whole process."""
    global _settings
    out = stream or STDERR
    numeric = LEVELS[level.upper()]
    if json is None:
        json = not out.isatty()
    _settings = LogSettings(numeric, json, out)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, asyncio) log through the standard library: keep their warnings.
    logging.basicConfig(stream=out, level=max(numeric, logging.WARNING), force=True)
