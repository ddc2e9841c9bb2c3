"""``file_server``'s ``precompressed``: serve ``file.gz`` / ``file.br`` / ``file.zst`` written next
to ``file`` when the client accepts that coding, as Caddy does.

Negotiation follows Caddy's: ``Accept-Encoding`` entries sorted by q-value (highest first, q=0
refused, an invalid q counts as 1), ties broken by ``precompressed_order`` (earlier wins) and then
by the client's order; ``*`` and codings without a sidecar are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUFFIXES = {"gzip": ".gz", "br": ".br", "zstd": ".zst"}

SCHEMA: Mapping[str, Any] = {
    "precompressed": {
        "type": "object",
        "properties": {
            name: {"type": "object", "properties": {}, "additionalProperties": False}
            for name in SUFFIXES
        },
        "additionalProperties": False,
        "description": "Serve precompressed sidecar files (file.gz, file.br, file.zst) to "
        'clients that accept the coding, e.g. {"gzip": {}, "br": {}}.',
    },
    "precompressed_order": {
        "type": "array",
        "items": {"enum": sorted(SUFFIXES)},
        "uniqueItems": True,
        "description": "Preferred codings when the client accepts several equally.",
    },
}

_EPSILON = 0.00001


class Precompressed:
    """The sidecar codings one ``file_server`` serves, in negotiation order."""

    def __init__(self, codings: Mapping[str, Any], order: Sequence[str]) -> None:
        self.suffixes = {coding: SUFFIXES[coding] for coding in codings}
        self._rank = {coding: len(order) - index for index, coding in enumerate(order)}

    def candidates(self, accept_encoding: str) -> list[tuple[str, str]]:
        """``(coding, suffix)`` pairs to try, best first."""
        preferences: list[tuple[float, int, int, str]] = []
        for position, entry in enumerate(accept_encoding.split(",")):
            name, _, params = entry.partition(";")
            coding = name.strip().lower()
            if coding not in self.suffixes:
                continue
            quality = _quality(params)
            if quality < _EPSILON:
                continue
            preferences.append((quality, self._rank.get(coding, -1), position, coding))
        preferences.sort(key=lambda p: (-round(p[0] / _EPSILON), -p[1], p[2]))
        return [(coding, self.suffixes[coding]) for *_, coding in preferences]


def _quality(params: str) -> float:
    value = params.split(";", 1)[0].strip().lower()  # the first parameter, as Caddy reads it
    if not value.startswith("q="):
        return 1.0
    try:
        quality = float(value[2:])
    except ValueError:
        return 1.0
    return quality if 0 <= quality <= 1 else 1.0
