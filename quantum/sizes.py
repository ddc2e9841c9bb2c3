"""Sizes in config: an integer number of bytes or ``"64KiB"``, ``"100MB"``, ``"1GiB"``."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT][iI]?)?[bB]?\s*$"
SIZE_SCHEMA = {
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": SIZE_PATTERN},
    ],
    "description": 'bytes, or a size such as "64KiB", "100MB", "1GiB"',
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes as an int; raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: negative")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f'invalid size {value!r} (use e.g. "64KiB", "100MB")')
    unit = (match.group(2) or "").lower()
    if unit and not unit.endswith("b"):
        unit += "b"
    return int(float(match.group(1)) * _UNITS[unit])
