"""Durations in config: ``"10s"``, ``"5m"``, ``"1h30m"``, ``"7d"``, ``"250ms"`` or seconds."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_UNITS["d"] = 86400.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
DURATION_PATTERN = r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+$"
DURATION_SCHEMA = {
    "oneOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "description": 'seconds, or a Go-style duration such as "10s", "5m", "1h30m", "7d"',
}


def parse_duration(value: float | int | str) -> float:
    """Seconds as a float; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    pos = 0
    total = 0.0
    text = value.strip()
    for part in _PART.finditer(text):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if not text or pos != len(text):
        raise ValueError(f'invalid duration {value!r} (use e.g. "10s", "5m", "1h")')
    return total
