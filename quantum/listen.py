"""Listen addresses in Caddy's form: ``":8080"``, ``"127.0.0.1:8081"``, ``"[::1]:8082"``,
``"localhost:9000"`` and ``"tcp/:8080"``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ListenAddress:
    host: str | None
    """``None`` binds every interface (Caddy's ``":8080"``)."""
    port: int

    def __str__(self) -> str:
        if self.host is None:
            return f":{self.port}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """Parse one address; raises ``ValueError`` with a specific reason."""
    text = value.strip()
    if text.startswith("tcp/"):
        text = text[4:]
    if "/" in text:
        raise ValueError(f"unsupported network in {value!r} (only tcp)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid listen address {value!r} (expected [IPv6]:PORT)")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid listen address {value!r}: missing ':PORT'")
        if ":" in host:
            raise ValueError(f"invalid listen address {value!r}: IPv6 hosts need brackets")
    if not port_text.isdigit():
        raise ValueError(f"invalid port in listen address {value!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in listen address {value!r}")
    return ListenAddress(host or None, port)


def overlaps(a: ListenAddress, b: ListenAddress) -> bool:
    """Whether two addresses would fight over the same socket."""
    return a.port == b.port and (a.host is None or b.host is None or a.host == b.host)
