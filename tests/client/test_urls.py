from __future__ import annotations

import pytest
from quantum_file_sync.client.urls import (
    InvalidServerUrl,
    api_url,
    file_url,
    normalize_server,
    ws_url,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("localhost:8080", "http://localhost:8080"),
        ("HTTPS://example.com/sync/", "https://example.com/sync"),
        ("ws://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("wss://example.com", "https://example.com"),
        ("http://example.com/base?x=1#frag", "http://example.com/base"),
    ],
)
def test_normalize_server(raw: str, normalized: str) -> None:
    assert normalize_server(raw) == normalized


@pytest.mark.parametrize("raw", ["", "   ", "ftp://example.com", "http://", "file:///tmp/x"])
def test_invalid_server_urls(raw: str) -> None:
    with pytest.raises(InvalidServerUrl):
        normalize_server(raw)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("http://localhost:8080", "ws://localhost:8080/ws"),
        ("https://example.com", "wss://example.com/ws"),
        ("https://example.com/sync", "wss://example.com/sync/ws"),
    ],
)
def test_ws_url(server: str, expected: str) -> None:
    assert ws_url(server) == expected


def test_api_and_file_urls_encode_each_segment() -> None:
    server = "http://h:1/prefix"
    assert str(api_url(server, "list")) == "http://h:1/prefix/api/list"
    url = file_url(server, "dir with space/r%sum?#é.txt")
    assert url.raw_path == "/prefix/api/files/dir%20with%20space/r%25sum%3F%23%C3%A9.txt"
    assert url.path == "/prefix/api/files/dir with space/r%sum?#é.txt"
