"""Server URL handling: normalise what the user typed, derive the API and ``/ws`` URLs.

A server URL may carry a path prefix (``https://host/sync``, behind a reverse proxy); every
endpoint is appended to it. ``http`` maps to ``ws`` and ``https`` to ``wss``.
"""

from __future__ import annotations

from urllib.parse import quote

from yarl import URL

_WS_SCHEMES = {"http": "ws", "https": "wss"}
_HTTP_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class InvalidServerUrl(ValueError):
    pass


def normalize_server(raw: str) -> str:
    """``localhost:8080`` → ``http://localhost:8080``; trailing slashes, query and fragment go.

    ``ws://`` and ``wss://`` are accepted and mapped to their HTTP scheme."""
    text = raw.strip()
    if not text:
        raise InvalidServerUrl("the server URL is empty")
    if "://" not in text:
        text = "http://" + text
    try:
        url = URL(text)
    except ValueError as exc:
        raise InvalidServerUrl(f"{raw!r} is not a URL: {exc}") from None
    scheme = _HTTP_SCHEMES.get(url.scheme.lower())
    if scheme is None:
        raise InvalidServerUrl(f"{raw!r}: the scheme must be http or https")
    if not url.host:
        raise InvalidServerUrl(f"{raw!r} has no host")
    base = url.with_scheme(scheme).with_query(None).with_fragment(None).with_user(None)
    return str(base).rstrip("/")


def ws_url(server: str) -> str:
    """The ``/ws`` endpoint of a normalised server URL (``http`` → ``ws``, ``https`` → ``wss``)."""
    url = URL(server)
    scheme = _WS_SCHEMES[url.scheme]
    return str(url.with_scheme(scheme)).rstrip("/") + "/ws"


def api_url(server: str, endpoint: str) -> URL:
    """``api_url(s, "list")`` → ``s/api/list``."""
    return URL(f"{server}/api/{endpoint}", encoded=True)


def file_url(server: str, rel: str) -> URL:
    """``/api/files/{path}`` with every segment percent-encoded (``/`` kept as separator)."""
    return URL(f"{server}/api/files/{quote(rel, safe='/')}", encoded=True)
