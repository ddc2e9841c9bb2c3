"""``authentication``: HTTP Basic authentication against bcrypt hashes (Caddy's ``http_basic``).

Passwords are bcrypt hashes, either in modular crypt form (``$2a$14$...``) or base64 of it
(what ``caddy hash-password`` prints). bcrypt is deliberately slow, so it runs in a thread and a
successful verification is remembered under a SHA-256 of the credentials: later requests with
the same credentials cost one hash lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

import bcrypt
from aiohttp import hdrs, web

from quantum.handler import Handler, HandlerError, HandlerSpec, Next
from quantum.handlers.placeholders import AUTH_USER_ID

SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "providers": {
            "type": "object",
            "description": "Authentication providers; the request passes if one accepts it.",
            "properties": {
                "http_basic": {
                    "type": "object",
                    "description": "HTTP Basic authentication.",
                    "properties": {
                        "accounts": {
                            "type": "array",
                            "minItems": 1,
                            "description": "The accepted users.",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "username": {"type": "string", "minLength": 1},
                                    "password": {
                                        "type": "string",
                                        "minLength": 1,
                                        "description": "bcrypt hash, '$2a$...' or its base64.",
                                    },
                                },
                                "required": ["username", "password"],
                                "additionalProperties": False,
                            },
                        },
                        "realm": {
                            "type": "string",
                            "default": "restricted",
                            "description": "Realm announced in WWW-Authenticate.",
                        },
                        "hash": {
                            "type": "object",
                            "description": "Hash algorithm of the passwords.",
                            "properties": {"algorithm": {"const": "bcrypt"}},
                            "additionalProperties": False,
                        },
                        "hash_cache": {
                            "type": "object",
                            "description": "Accepted for Caddy compatibility; verifications are "
                            "always cached.",
                        },
                    },
                    "required": ["accounts"],
                    "additionalProperties": False,
                },
            },
            "required": ["http_basic"],
            "additionalProperties": False,
        },
    },
    "required": ["providers"],
}

CACHE_SIZE = 1000


def decode_hash(stored: str) -> bytes:
    """The modular-crypt bcrypt hash from either of its configured forms."""
    if stored.startswith("$2"):
        return stored.encode()
    try:
        decoded = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded.startswith(b"$2"):
        raise ValueError("password must be a bcrypt hash ('$2a$...') or the base64 of one")
    return decoded


def parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class Authentication(Handler):
    def __init__(self, options: Mapping[str, Any]) -> None:
        basic = options["providers"]["http_basic"]
        self._accounts: dict[str, bytes] = {}
        for index, account in enumerate(basic["accounts"]):
            if account["username"] in self._accounts:
                raise ValueError(f"accounts[{index}]: username {account['username']!r} repeated")
            try:
                self._accounts[account["username"]] = decode_hash(account["password"])
            except ValueError as exc:
                raise ValueError(f"accounts[{index}]: {exc}") from None
        realm = basic.get("realm", "restricted").replace("\\", "\\\\").replace('"', '\\"')
        self._challenge: dict[str, str] = {hdrs.WWW_AUTHENTICATE: f'Basic realm="{realm}"'}
        self._verified: dict[bytes, str] = {}
        self._dummy_hash = next(iter(self._accounts.values()))
        self._bcrypt_slots = asyncio.Semaphore(os.cpu_count() or 1)

    async def serve(self, request: web.Request, next: Next) -> web.StreamResponse:
        credentials = parse_basic(request.headers.get(hdrs.AUTHORIZATION, ""))
        if credentials is None:
            raise self._unauthorized()
        username, password = credentials
        key = hashlib.sha256(f"{username}\0{password}".encode()).digest()
        user = self._verified.get(key)
        if user is None:
            if not await self._verify(username, password):
                raise self._unauthorized()
            _remember(self._verified, key, username)
            user = username
        request[AUTH_USER_ID] = user
        return await next(request)

    async def _verify(self, username: str, password: str) -> bool:
        stored = self._accounts.get(username)
        # An unknown user costs one bcrypt too, so timing does not reveal which users exist.
        candidate = stored if stored is not None else self._dummy_hash
        async with self._bcrypt_slots:
            ok = await asyncio.to_thread(_checkpw, password.encode(), candidate)
        return ok and stored is not None and hmac.compare_digest(candidate, stored)

    def _unauthorized(self) -> HandlerError:
        return HandlerError(401, "not authenticated", self._challenge)


def _remember(cache: dict[bytes, str], key: bytes, username: str) -> None:
    if len(cache) >= CACHE_SIZE:
        del cache[next(iter(cache))]  # the oldest entry: dicts keep insertion order
    cache[key] = username


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


SPEC = HandlerSpec(
    name="authentication",
    schema=SCHEMA,
    factory=Authentication,
    description="Requires HTTP Basic credentials checked against bcrypt password hashes.",
)
