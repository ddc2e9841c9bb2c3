"""Accept-Encoding negotiation for file_server's precompressed sidecars (Caddy's rules; the
oracle test checks the same against Caddy itself)."""

from __future__ import annotations

import pytest

from quantum.handlers.precompressed import Precompressed

ALL = {"gzip": {}, "zstd": {}, "br": {}}


@pytest.mark.parametrize(
    ("accept", "order", "expected"),
    [
        ("", [], []),
        ("gzip", [], ["gzip"]),
        ("deflate, identity, *", [], []),
        ("gzip, zstd", [], ["gzip", "zstd"]),  # ties keep the client's order...
        ("gzip, zstd", ["zstd"], ["zstd", "gzip"]),  # ...unless precompressed_order says
        ("gzip;q=0.5, br;q=0.8", ["gzip"], ["br", "gzip"]),  # q first, always
        ("GZIP ; Q=0.5 , Br", [], ["br", "gzip"]),
        ("gzip;q=0, zstd;q=0.000", [], []),  # q=0: not acceptable
        ("gzip;q=bogus, zstd;q=0.9", [], ["gzip", "zstd"]),  # invalid q counts as 1
        ("gzip;q=7, zstd;q=0.9", [], ["gzip", "zstd"]),  # so does one out of range
        ("gzip;q=0.5;level=1, zstd;q=0.6", [], ["zstd", "gzip"]),  # only the first parameter
    ],
)
def test_candidates(accept: str, order: list[str], expected: list[str]) -> None:
    assert [coding for coding, _ in Precompressed(ALL, order).candidates(accept)] == expected


def test_only_configured_codings_are_offered() -> None:
    assert Precompressed({"br": {}}, []).candidates("gzip, br, zstd") == [("br", ".br")]
