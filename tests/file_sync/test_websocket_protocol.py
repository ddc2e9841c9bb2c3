"""Message serialisation and deserialisation, the schema, and subscription patterns."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quantum_file_sync.operations import ChangeEvent, Delete
from quantum_file_sync.patterns import PathFilter, PatternError, compile_patterns
from quantum_file_sync.protocol import (
    CLIENT_VALIDATORS,
    PING,
    PONG,
    SCHEMA,
    SERVER_VALIDATORS,
    Ack,
    ClientMessage,
    Error,
    ErrorCode,
    ProtocolError,
    Since,
    Subscribe,
    parse_client_message,
)

from tests.file_sync.websocket_harness import create, move

REPO = Path(__file__).resolve().parents[2]
RUNTIME_SCHEMA = REPO / "plugins/file_sync/quantum_file_sync/schemas/ws-messages.schema.json"
EXPORTED_SCHEMA = REPO / "schemas/ws-messages.schema.json"

# (frame text, expected code): every one must be refused with exactly this code.
MALFORMED = [
    ("not json", ErrorCode.INVALID_JSON),
    ('{"type": "Ping"', ErrorCode.INVALID_JSON),
    ("", ErrorCode.INVALID_JSON),
    ("[" * 50_000, ErrorCode.INVALID_JSON),
    ("[]", ErrorCode.INVALID_MESSAGE),
    ('["Subscribe"]', ErrorCode.INVALID_MESSAGE),
    ("42", ErrorCode.INVALID_MESSAGE),
    ("null", ErrorCode.INVALID_MESSAGE),
    ('"Ping"', ErrorCode.INVALID_MESSAGE),
    ("{}", ErrorCode.INVALID_MESSAGE),
    ('{"type": 1}', ErrorCode.INVALID_MESSAGE),
    ('{"type": null}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Hello"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "FileOperation", "operation": {}}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "subscribe", "client_id": "a"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "Subscribe"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": 7}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": null}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": ""}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "' + "x" * 10_240 + '"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "has space"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a/b"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "since": 5}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "since": {"seq": 1}}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "since": {"epoch": "e"}}', ErrorCode.INVALID_MESSAGE),
    (
        '{"type": "Subscribe", "client_id": "a", "since": {"epoch": "e", "seq": -1}}',
        ErrorCode.INVALID_MESSAGE,
    ),
    (
        '{"type": "Subscribe", "client_id": "a", "since": {"epoch": "e", "seq": "3"}}',
        ErrorCode.INVALID_MESSAGE,
    ),
    (
        '{"type": "Subscribe", "client_id": "a", "since": {"epoch": "e", "seq": 1.5}}',
        ErrorCode.INVALID_MESSAGE,
    ),
    ('{"type": "Subscribe", "client_id": "a", "patterns": "docs/*"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "patterns": []}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "patterns": [1]}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "patterns": ["../x"]}', ErrorCode.FORBIDDEN_PATH),
    (
        '{"type": "Subscribe", "client_id": "a", "patterns": ["a/../../x"]}',
        ErrorCode.FORBIDDEN_PATH,
    ),
    ('{"type": "Subscribe", "client_id": "a", "patterns": ["/etc/*"]}', ErrorCode.FORBIDDEN_PATH),
    ('{"type": "Subscribe", "client_id": "a", "patterns": ["C:\\\\x"]}', ErrorCode.FORBIDDEN_PATH),
    ('{"type": "Subscribe", "client_id": "a", "token": 5}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Subscribe", "client_id": "a", "colour": "red"}', ErrorCode.INVALID_MESSAGE),
    ('{"type": "Ping", "extra": true}', ErrorCode.INVALID_MESSAGE),
]


@pytest.mark.parametrize(("text", "code"), MALFORMED, ids=[t[:40] for t, _ in MALFORMED])
def test_websocket_malformed_messages_are_refused_with_their_code(
    text: str, code: ErrorCode
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(text)
    assert caught.value.code is code
    assert caught.value.message
    # Errors never echo big inputs back.
    assert len(caught.value.message) < 300


def test_websocket_error_messages_name_the_field() -> None:
    cases = {
        '{"type": "Subscribe"}': "client_id",
        '{"type": "Subscribe", "client_id": "a", "since": {"epoch": "e", "seq": -1}}': "since.seq",
        '{"type": "Subscribe", "client_id": "a", "patterns": [1]}': "patterns[0]",
        '{"type": "Subscribe", "client_id": "a", "patterns": ["ok", "../x"]}': "patterns[1]",
    }
    for text, field in cases.items():
        with pytest.raises(ProtocolError) as caught:
            parse_client_message(text)
        assert field in caught.value.message, caught.value.message


def test_websocket_client_messages_parse_to_typed_values() -> None:
    assert parse_client_message('{"type":"Ping"}') is PING
    assert parse_client_message('{ "type" : "Ping" }') is PING
    assert parse_client_message('{"type":"Pong"}') is PONG
    # The seed's browser snippet message.
    assert parse_client_message(
        json.dumps({"type": "Subscribe", "client_id": "browser-client-123"})
    ) == Subscribe("browser-client-123")
    full = {
        "type": "Subscribe",
        "client_id": "laptop:alice@home+1",
        "since": {"epoch": "e1", "seq": 42},
        "patterns": ["docs/*", "**/*.txt"],
        "token": "secret",
    }
    assert parse_client_message(json.dumps(full)) == Subscribe(
        "laptop:alice@home+1", Since("e1", 42), ("docs/*", "**/*.txt"), "secret"
    )
    nulls = {"type": "Subscribe", "client_id": "c", "since": None, "patterns": None, "token": None}
    assert parse_client_message(json.dumps(nulls)) == Subscribe("c")
    assert parse_client_message(json.dumps({"type": "Subscribe", "client_id": "x" * 128}))


def test_websocket_server_messages_round_trip_and_match_the_schema() -> None:
    ack = json.loads(Ack("c1", "epoch-1", 7, True).encode())
    assert ack == {
        "type": "Ack",
        "client_id": "c1",
        "epoch": "epoch-1",
        "seq": 7,
        "recovered": True,
    }
    error = json.loads(Error("bad", ErrorCode.RATE_LIMITED).encode())
    assert error == {"type": "Error", "message": "bad", "code": "rate_limited"}
    event = ChangeEvent(move("a.txt", "b/c.txt"), "me", "epoch-1", 3, "f" * 32)
    operation = json.loads(event.frame)
    assert operation["operation"]["Move"]["from"] == "a.txt"
    assert ChangeEvent.from_message(operation) == event
    for message in (ack, error, operation, {"type": "Pong"}, {"type": "Ping"}):
        SERVER_VALIDATORS[message["type"]].validate(message)
    jsonschema.Draft202012Validator(SCHEMA).validate(operation)
    deleted = json.loads(ChangeEvent(Delete("d", True), None, "e", 1, "x").frame)
    SERVER_VALIDATORS["FileOperation"].validate(deleted)


def test_websocket_schema_rejects_what_the_parser_rejects() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert not validator.is_valid({"type": "Subscribe"})
    assert not validator.is_valid({"type": "Nope"})
    assert validator.is_valid({"type": "Subscribe", "client_id": "a", "patterns": ["x/*"]})


def test_websocket_schema_exported_copy_is_identical_to_the_runtime_copy() -> None:
    assert EXPORTED_SCHEMA.read_bytes() == RUNTIME_SCHEMA.read_bytes()
    assert json.loads(RUNTIME_SCHEMA.read_text()) == SCHEMA
    codes = SCHEMA["$defs"]["ErrorCode"]["enum"]
    assert codes == [str(code) for code in ErrorCode]


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["docs/*"], "docs/a.txt", True),
        (["docs/*"], "docs/sub/a.txt", True),  # its parent docs/sub matches
        (["docs/*"], "docs", False),
        (["docs/*"], "other/a.txt", False),
        (["docs"], "docs/deep/er/a.txt", True),
        (["**/*.txt"], "a.txt", True),
        (["**/*.txt"], "x/y/a.txt", True),
        (["**/*.txt"], "x/y/a.md", False),
        (["*.md"], "README.md", True),
        (["*.md"], "docs/README.md", False),
        (["a/**/z.txt"], "a/z.txt", True),
        (["a/**/z.txt"], "a/b/c/z.txt", True),
        (["a/**/z.txt"], "b/z.txt", False),
        (["file?.txt"], "file1.txt", True),
        (["file?.txt"], "file10.txt", False),
        (["[ab]*"], "beta", True),
        (["[!ab]*"], "beta", False),
        (["[!ab]*"], "gamma", True),
        (["Docs/*"], "docs/a", False),
        (["x.txt", "y/*"], "y/q", True),
        (["a+b(1).txt"], "a+b(1).txt", True),
        (["**"], "anything/at/all", True),
    ],
)
def test_websocket_patterns_select_paths(patterns: list[str], path: str, expected: bool) -> None:
    assert PathFilter(patterns).matches(path) is expected


def test_websocket_patterns_are_shared_and_checked() -> None:
    assert compile_patterns(("docs/*",)) is compile_patterns(("docs/*",))
    for bad in ("../x", "/abs", "a/../b", "a\\b", "x\x00", ""):
        with pytest.raises(PatternError):
            PathFilter([bad])
    # A move is delivered to a client watching either side.
    assert PathFilter(["in/*"]).matches_any(("out/a", "in/a"))
    assert create("x").metadata.path == "x"


_texts = st.one_of(
    st.sampled_from(["", "a", "docs/*", "x" * 128, "x" * 129, "abc\n", "a b", "e1", "../x"]),
    st.text(max_size=12),
)
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False), _texts
)
_subscribe_messages = st.fixed_dictionaries(
    {"type": st.just("Subscribe")},
    optional={
        "client_id": _values,
        "since": st.one_of(
            _values,
            st.fixed_dictionaries(
                {}, optional={"epoch": _values, "seq": _values, "extra": _values}
            ),
        ),
        "patterns": st.one_of(_values, st.lists(_values, max_size=3)),
        "token": _values,
        "colour": _values,
    },
)


@settings(max_examples=400, deadline=None)
@given(_subscribe_messages)
def test_websocket_subscribe_is_accepted_exactly_when_the_schema_says_so(
    message: dict[str, object],
) -> None:
    """The parser's fast path for Subscribe never disagrees with the published schema."""
    schema_valid = CLIENT_VALIDATORS["Subscribe"].is_valid(message)
    parsed = _parse_or_error(json.dumps(message))
    if isinstance(parsed, ProtocolError):
        assert not schema_valid or parsed.code is ErrorCode.FORBIDDEN_PATH, (message, parsed)
    else:
        assert schema_valid, message
        assert isinstance(parsed, Subscribe)
        assert parsed.client_id == message["client_id"]


def _parse_or_error(text: str) -> ClientMessage | ProtocolError:
    try:
        return parse_client_message(text)
    except ProtocolError as error:
        return error
