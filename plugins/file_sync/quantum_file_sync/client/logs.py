"""The client's log lines: ``log.info("event", key=value, ...)``, one line per event.

JSON objects when stderr is not a terminal (``{"key": value, ..., "event", "level",
"timestamp"}``, the shape structlog's JSON renderer produces), ``TIME [level] event key=value``
on a terminal. A dozen lines instead of structlog, whose import (it pulls in rich) would cost a
short one-shot run a noticeable share of its start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Write = Callable[[str], None]


class Logger:
    def __init__(self, level: int, write: Write, *, console: bool) -> None:
        self.level = level
        self._write = write
        self._console = console

    def debug(self, event: str, **fields: Any) -> None:
        if self.level <= logging.DEBUG:
            self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        if self.level <= logging.INFO:
            self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        if self.level <= logging.WARNING:
            self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        if self.level <= logging.ERROR:
            self._emit("error", event, fields)

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if self._console:
            pairs = "".join(f" {key}={value!r}" for key, value in fields.items())
            line = f"{timestamp} [{level:<9}] {event:<30}{pairs}"
        else:
            record = {**fields, "event": event, "level": level, "timestamp": timestamp}
            line = json.dumps(record, default=str)
        self._write(line + "\n")
