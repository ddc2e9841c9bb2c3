"""A server's ``errors`` routes (Caddy's handle_errors): what the oracle test cannot compare
because Caddy answers an unrouted request with an empty 200 rather than an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import QuantumProcess, free_port


def config(port: int) -> dict[str, Any]:
    page = "{http.error.status_code} {http.error.status_text}: {http.error.message}"
    known = {"handler": "static_response", "body": "known [{http.error.status_code}]"}
    shown = {"handler": "static_response", "status_code": "{http.error.status_code}", "body": page}
    server = {
        "listen": [f"127.0.0.1:{port}"],
        "routes": [{"match": [{"path": ["/known"]}], "handle": [known]}],
        "errors": {"routes": [{"handle": [shown]}]},
    }
    return {"admin": {"disabled": True}, "apps": {"http": {"servers": {"web": server}}}}


async def test_error_routes_also_answer_requests_no_route_took(
    quantum_factory: type[QuantumProcess], tmp_path: Path
) -> None:
    port = free_port()
    server = quantum_factory(config(port), tmp_path, port=port).start()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/nowhere") as response:
            assert response.status == 404
            assert await response.text() == "404 Not Found: no route for GET /nowhere"
        async with session.get(f"{server.url}/known") as response:
            # outside the error routes the error placeholders are empty
            assert (response.status, await response.text()) == (200, "known []")
