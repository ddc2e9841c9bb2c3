"""The ``/ws`` message protocol: parse and validate client messages, encode server messages.

Every client message is checked against ``schemas/ws-messages.schema.json`` (Draft 2020-12,
compiled once). ``{"type":"Ping"}`` and ``{"type":"Pong"}`` take a fast path that skips the
validator. Bad input raises :class:`ProtocolError` carrying the ``code`` of the ``Error`` reply.
The ``FileOperation`` message is ``ChangeEvent.frame`` (operations.py), serialised once per change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any, Final, TypeAlias

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from quantum_file_sync.patterns import PatternError, check_pattern

CLIENT_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")
"""What a client id may be (also what ``X-Quantum-Client`` should accept): use ``fullmatch``."""

CLIENT_TYPES: Final = ("Subscribe", "Ping", "Pong")
SERVER_TYPES: Final = ("Ack", "FileOperation", "Pong", "Ping", "Error")


class ErrorCode(StrEnum):
    """``Error.code`` values. Extend, never rename: clients branch on them."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN_PATH = "forbidden_path"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    TOO_SLOW = "too_slow"
    RESYNC_REQUIRED = "resync_required"


class ProtocolError(Exception):
    """A client message that is refused; answered with ``Error{message, code}``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- client messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Since:
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    client_id: str
    since: Since | None = None
    patterns: tuple[str, ...] | None = None
    """``None``: every operation; otherwise only those touching a matching path."""
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


ClientMessage: TypeAlias = Subscribe | Ping | Pong

PING: Final = Ping()
PONG: Final = Pong()


# --- server messages -------------------------------------------------------------------------


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Ack:
    client_id: str
    epoch: str
    seq: int
    recovered: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "Ack",
            "client_id": self.client_id,
            "epoch": self.epoch,
            "seq": self.seq,
            "recovered": self.recovered,
        }

    def encode(self) -> str:
        return _dumps(self.to_json())


@dataclass(frozen=True, slots=True)
class Error:
    message: str
    code: ErrorCode

    def to_json(self) -> dict[str, Any]:
        return {"type": "Error", "message": self.message, "code": str(self.code)}

    def encode(self) -> str:
        return _dumps(self.to_json())


PING_TEXT: Final = '{"type":"Ping"}'
PONG_TEXT: Final = '{"type":"Pong"}'


# --- schema ----------------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    """The message schema shipped in the package (identical to the exported ``schemas/`` copy)."""
    text = (resources.files("quantum_file_sync") / "schemas" / "ws-messages.schema.json").read_text(
        encoding="utf-8"
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


SCHEMA: Final = load_schema()
jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _validator_for(definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {
            "$schema": SCHEMA["$schema"],
            "$defs": SCHEMA["$defs"],
            "$ref": f"#/$defs/{definition}",
        }
    )


CLIENT_VALIDATORS: Final = {name: _validator_for(name) for name in CLIENT_TYPES}
"""The authority on client messages (the parser's Subscribe fast path is tested against it)."""
SERVER_VALIDATORS: Final = {name: _validator_for(name) for name in SERVER_TYPES}
"""For tests and clients that want to check what the server sends."""


# --- parsing ---------------------------------------------------------------------------------


def parse_client_message(data: str) -> ClientMessage:
    """Decode one text frame from a client; raises :class:`ProtocolError`."""
    if data == PING_TEXT:
        return PING
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid JSON: {_clip(str(exc))}") from None
    if type(message) is not dict:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"a message must be a JSON object, not {_json_type(message)}",
        )
    kind = message.get("type")
    if kind is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, 'a message needs a "type" field')
    if type(kind) is not str:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"type: must be a string, not {_json_type(kind)}"
        )
    if len(message) == 1:
        if kind == "Ping":
            return PING
        if kind == "Pong":
            return PONG
    if kind == "Subscribe" and _plainly_valid_subscribe(message):
        return _subscribe(message)
    validator = CLIENT_VALIDATORS.get(kind)
    if validator is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {_clip(kind)!r}; a client may send {', '.join(CLIENT_TYPES)}",
        )
    error = best_match(validator.iter_errors(message))
    if error is not None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, describe_error(error))
    if kind == "Subscribe":
        return _subscribe(message)
    return PING if kind == "Ping" else PONG


_SUBSCRIBE_FIELDS: Final = frozenset(("type", "client_id", "since", "patterns", "token"))


def _plainly_valid_subscribe(message: dict[str, Any]) -> bool:
    """A conservative check that implies schema validity (tested against the schema): every
    usual Subscribe skips the generic validator; anything unusual gets its full verdict."""
    if not message.keys() <= _SUBSCRIBE_FIELDS:
        return False
    client_id = message.get("client_id")
    if type(client_id) is not str or CLIENT_ID_PATTERN.fullmatch(client_id) is None:
        return False
    since = message.get("since")
    if since is not None:
        if type(since) is not dict or since.keys() != {"epoch", "seq"}:
            return False
        epoch, seq = since["epoch"], since["seq"]
        if type(epoch) is not str or not 1 <= len(epoch) <= 128:
            return False
        if type(seq) is not int or seq < 0:
            return False
    patterns = message.get("patterns")
    if patterns is not None:
        if type(patterns) is not list or not 1 <= len(patterns) <= 100:
            return False
        if any(type(p) is not str or not 1 <= len(p) <= 1024 for p in patterns):
            return False
    token = message.get("token")
    return token is None or (type(token) is str and len(token) <= 4096)


def _subscribe(message: dict[str, Any]) -> Subscribe:
    since = message.get("since")
    patterns = message.get("patterns")
    if patterns is not None:
        for index, pattern in enumerate(patterns):
            try:
                check_pattern(pattern)
            except PatternError as exc:
                raise ProtocolError(ErrorCode.FORBIDDEN_PATH, f"patterns[{index}]: {exc}") from None
    return Subscribe(
        client_id=message["client_id"],
        since=None if since is None else Since(epoch=since["epoch"], seq=since["seq"]),
        patterns=None if patterns is None else tuple(patterns),
        token=message.get("token"),
    )


def describe_error(error: ValidationError) -> str:
    """``json.path: what is wrong`` without echoing large values back."""
    where = _json_path(error.absolute_path)
    validator, expected = error.validator, error.validator_value
    if validator == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        what = f"must be {' or '.join(str(k) for k in kinds)}, not {_json_type(error.instance)}"
    elif validator == "required":
        missing = [name for name in expected if name not in error.instance]
        what = f"missing required field {missing[0]!r}" if missing else error.message
    elif validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        what = f"unexpected field {_clip(extra[0])!r}" if extra else "unexpected field"
    elif validator == "maxLength":
        what = f"must be at most {expected} characters"
    elif validator == "minLength":
        what = "must not be empty" if expected == 1 else f"must be at least {expected} characters"
    elif validator == "pattern" and error.absolute_path and error.absolute_path[-1] == "client_id":
        what = "may only contain letters, digits and . _ : @ + -"
    elif validator == "minimum":
        what = f"must be >= {expected}"
    elif validator == "minItems":
        what = "must not be empty (omit it to receive everything)"
    elif validator == "maxItems":
        what = f"must have at most {expected} items"
    elif validator == "oneOf" and error.context:
        # "X or null": report why X failed, which is what the client meant to send.
        meant = [e for e in error.context if e.validator_value != "null"]
        inner = best_match(meant)
        return describe_error(inner) if inner is not None else _clip(error.message)
    else:
        what = _clip(error.message)
    return f"{where}: {what}" if where else what


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
