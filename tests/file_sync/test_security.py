"""Bearer tokens, the Origin allow-list and CORS, over real HTTP and WebSocket."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from quantum_file_sync.security import TokenAuth, normalise_origin, read_token_file

from tests.file_sync.conftest import RunningQuantum, StartQuantum, file_sync_config, http

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-1"
ALLOWED = "http://localhost:3000"
OTHER = "https://evil.example"


@pytest.fixture(scope="module")
def server(start_module_quantum: StartQuantum) -> RunningQuantum:
    """configs/auth-origins.json, its inline example token swapped for a token file."""
    config = json.loads((REPO / "configs" / "auth-origins.json").read_text())
    handler = config["apps"]["http"]["servers"]["file_sync_server"]["routes"][0]["handle"][0]
    assert handler["auth"] == {"tokens": ["replace-this-example-token"]}
    handler["auth"] = {"token_file": "./tokens.txt"}
    tokens = f"# one token per line\n\n{TOKEN}\n  second-token  \n"
    return start_module_quantum(config, files={"tokens.txt": tokens})


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_requires_a_bearer_token(server: RunningQuantum) -> None:
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}):
        reply = http("GET", server.url + "/api/list", headers=headers)
        assert reply.status == 401
        assert reply.json()["code"] == "unauthorized"
        assert reply.header("WWW-Authenticate").startswith("Bearer")
    refused = http("PUT", server.url + "/api/files/x.txt", b"x")
    assert refused.status == 401
    assert not (server.root / "x.txt").exists()
    assert http("GET", server.url + "/api/list", headers=bearer()).status == 200
    assert http("GET", server.url + "/api/list", headers=bearer("second-token")).status == 200
    assert http("GET", server.url + f"/api/list?token={TOKEN}").status == 200
    assert http("PUT", server.url + "/api/files/x.txt", b"x", bearer()).status == 201


def test_api_description_and_metrics_are_public(server: RunningQuantum) -> None:
    document = http("GET", server.url + "/api/openapi.json")
    assert document.status == 200
    assert document.json()["security"] == [{"bearer": []}]
    assert http("GET", server.url + "/metrics").status == 200


def test_preflight_for_an_allowed_origin(server: RunningQuantum) -> None:
    reply = http(
        "OPTIONS",
        server.url + "/api/files/a.txt",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "authorization, if-match, content-type",
        },
    )
    assert reply.status == 204
    assert reply.header("Access-Control-Allow-Origin") == ALLOWED
    assert "PUT" in reply.header("Access-Control-Allow-Methods")
    allowed_headers = reply.header("Access-Control-Allow-Headers").lower()
    for name in ("authorization", "if-match", "if-none-match", "x-quantum-client", "content-type"):
        assert name in allowed_headers
    assert int(reply.header("Access-Control-Max-Age")) > 0


def test_responses_to_an_allowed_origin_carry_cors_headers(server: RunningQuantum) -> None:
    http("PUT", server.url + "/api/files/cors.txt", b"cors", bearer())
    reply = http("GET", server.url + "/api/files/cors.txt", headers={"Origin": ALLOWED, **bearer()})
    assert reply.status == 200
    assert reply.header("Access-Control-Allow-Origin") == ALLOWED
    assert "Origin" in reply.header("Vary")
    assert "ETag" in reply.header("Access-Control-Expose-Headers")
    unauthorised = http("GET", server.url + "/api/list", headers={"Origin": ALLOWED})
    assert unauthorised.status == 401  # and the page may read why:
    assert unauthorised.header("Access-Control-Allow-Origin") == ALLOWED


def test_other_origins_get_403_and_no_cors_headers(server: RunningQuantum) -> None:
    preflight = http(
        "OPTIONS",
        server.url + "/api/list",
        headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 403
    assert preflight.header("Access-Control-Allow-Origin") is None
    for method, path, body in (("GET", "/api/list", None), ("PUT", "/api/files/e.txt", b"e")):
        reply = http(method, server.url + path, body, {"Origin": OTHER, **bearer()})
        assert reply.status == 403
        assert reply.json()["code"] == "forbidden_origin"
        assert reply.header("Access-Control-Allow-Origin") is None
    assert not (server.root / "e.txt").exists()


async def test_websocket_checks_origin_and_token_before_the_upgrade(
    server: RunningQuantum,
) -> None:
    ws_url = server.url + "/ws"
    async with aiohttp.ClientSession() as session:
        for headers, status in (
            ({"Origin": OTHER, **bearer()}, 403),
            (bearer("wrong"), 401),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url, headers=headers)
            assert refused.value.status == status
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url + "?token=wrong")
        assert refused.value.status == 401
        async with session.ws_connect(ws_url, headers={"Origin": ALLOWED, **bearer()}) as ws:
            await ws.send_json({"type": "Subscribe", "client_id": "sec-1"})
            ack = await ws.receive_json(timeout=5)
            assert ack["type"] == "Ack"


async def test_default_policy_is_same_origin(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config())
    same = f"http://127.0.0.1:{server.port}"
    assert http("GET", server.url + "/api/list", headers={"Origin": same}).status == 200
    assert http("GET", server.url + "/api/list").status == 200  # no Origin: curl, sync client
    assert http("GET", server.url + "/api/list", headers={"Origin": OTHER}).status == 403
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(server.url + "/ws", headers={"Origin": OTHER})
        assert refused.value.status == 403
        async with session.ws_connect(server.url + "/ws", headers={"Origin": same}) as ws:
            await ws.send_json({"type": "Subscribe", "client_id": "same-origin"})
            assert (await ws.receive_json(timeout=5))["type"] == "Ack"


def test_star_allows_any_origin(start_quantum: StartQuantum) -> None:
    server = start_quantum(file_sync_config(allowed_origins=["*"]))
    reply = http("GET", server.url + "/api/list", headers={"Origin": OTHER})
    assert reply.status == 200
    assert reply.header("Access-Control-Allow-Origin") == OTHER


def test_token_checks_and_token_file_parsing(tmp_path: Path) -> None:
    auth = TokenAuth(["alpha", "beta"])
    assert auth.check("alpha")
    assert auth.check("beta")
    assert not auth.check("alph")
    assert not auth.check("alphaa")
    assert not auth.check("")
    assert not auth.check(None)
    token_file = tmp_path / "tokens"
    token_file.write_text("# comment\n\n gamma \ndelta\n")
    assert read_token_file(token_file) == ["gamma", "delta"]
    with pytest.raises(ValueError, match="no token"):
        TokenAuth([])


@pytest.mark.parametrize(
    ("origin", "normalised"),
    [
        ("http://LocalHost:3000", "http://localhost:3000"),
        ("https://files.example.com:443", "https://files.example.com"),
        ("http://example.com:80", "http://example.com"),
        ("null", None),
        ("not a url", None),
    ],
)
def test_origin_normalisation(origin: str, normalised: str | None) -> None:
    assert normalise_origin(origin) == normalised
