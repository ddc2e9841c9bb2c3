"""authentication (http_basic): bcrypt hashes in both forms, 401 challenge, cached verification."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import bcrypt
import pytest

from quantum.handlers import authentication
from quantum.handlers.authentication import Authentication
from quantum.handlers.static_response import StaticResponse
from tests.core.handler_harness import chain, serving

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
HASH_B64 = base64.b64encode(HASH.encode()).decode()
basic = aiohttp.encode_basic_auth
WHO = StaticResponse({"body": "user={http.auth.user.id}"})


def options(**extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "http_basic": {
                "accounts": [
                    {"username": "alice", "password": HASH},
                    {"username": "bob", "password": HASH_B64},
                ],
                **extra,
            }
        }
    }


@pytest.mark.parametrize("user", ["alice", "bob"])
async def test_valid_credentials_pass_and_name_the_user(user: str) -> None:
    async with serving(Authentication(options()), chain(WHO)) as client:
        response = await client.get("/", headers={"Authorization": basic(user, "s3cret")})
        assert response.status == 200
        assert await response.text() == f"user={user}"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer token"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"Authorization": basic("alice", "wrong")},
        {"Authorization": basic("mallory", "s3cret")},
    ],
)
async def test_anything_else_gets_the_challenge(headers: dict[str, str]) -> None:
    async with serving(Authentication(options()), chain(WHO)) as client:
        response = await client.get("/", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="restricted"'
        assert await response.read() == b""


async def test_custom_realm() -> None:
    async with serving(Authentication(options(realm='Team "A"')), chain(WHO)) as client:
        response = await client.get("/")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Team \\"A\\""'


async def test_successful_verification_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real_checkpw = authentication._checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(authentication, "_checkpw", counting_checkpw)
    async with serving(Authentication(options()), chain(WHO)) as client:
        for _ in range(5):
            response = await client.get("/", headers={"Authorization": basic("alice", "s3cret")})
            assert response.status == 200
        for _ in range(2):
            response = await client.get("/", headers={"Authorization": basic("alice", "wrong")})
            assert response.status == 401
    assert calls == [b"s3cret", b"wrong", b"wrong"]


@pytest.mark.parametrize(
    ("accounts", "message"),
    [
        ([{"username": "a", "password": "plain-text"}], r"accounts\[0\]: password must be"),
        ([{"username": "a", "password": HASH}, {"username": "a", "password": HASH}], "repeated"),
    ],
)
def test_bad_accounts_are_refused(accounts: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Authentication({"providers": {"http_basic": {"accounts": accounts}}})
