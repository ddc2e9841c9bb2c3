"""Errors the core reports to users as one line each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config, located by its JSON path (``apps.http.servers.s.listen[0]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot run. ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def json_path(parts: Sequence[str | int]) -> str:
    """``["apps", "http", "servers", "s", "routes", 0]`` → ``apps.http.servers.s.routes[0]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class BindError(ConfigError):
    """A listen address could not be bound (exit status 1, not 2: the config itself is fine)."""
