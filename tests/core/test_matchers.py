"""Built-in matchers: Caddy's semantics for path, method, host, header, query, path_regexp, not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from quantum.handler import Matcher
from quantum.matchers import (
    MATCHER_SPECS,
    REGEXP_CAPTURES,
    HostMatcher,
    PathRegexpMatcher,
    clean_path,
    compile_path_pattern,
    match_escaped,
)
from quantum.plugins import discover
from quantum.routing import compile_matcher_sets

REGISTRY = discover()


def request(path: str = "/", method: str = "GET", headers: Mapping[str, str] | None = None) -> Any:
    return make_mocked_request(method, path, headers=dict(headers or {}))


def matcher(sets: Sequence[Mapping[str, Any]]) -> Matcher:
    return compile_matcher_sets(REGISTRY, sets)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("/", "/"),
        ("", "/"),
        ("/a/b", "/a/b"),
        ("/a/./b/../c/", "/a/c/"),
        ("//a///b//", "/a/b/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/b/..", "/a"),
        ("/a/..", "/"),
        ("/a/.", "/a"),
        ("a/b", "/a/b"),
        ("/.hidden/x", "/.hidden/x"),
        ("/a/...", "/a/..."),
    ],
)
def test_clean_path(raw: str, cleaned: str) -> None:
    assert clean_path(raw) == cleaned


@given(st.lists(st.sampled_from(["a", "B", "..", ".", "", "x.y", "%2e"]), max_size=8))
def test_clean_path_never_climbs_and_is_idempotent(segments: list[str]) -> None:
    cleaned = clean_path("/" + "/".join(segments))
    assert cleaned.startswith("/")
    assert "/../" not in cleaned + "/"
    assert "/./" not in cleaned + "/"
    assert "//" not in cleaned
    assert clean_path(cleaned) == cleaned


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("/exact", "/exactly", False),
        ("/Exact", "/eXACT", True),
        ("/api/*", "/api/x/y", True),
        ("/api/*", "/api/", True),
        ("/api/*", "/api", False),
        ("/api*", "/apix", True),
        ("/api*", "/api", True),
        ("*.txt", "/a/b/c.TXT", True),
        ("*.txt", "/a/b/c.txt/x", False),
        ("*/mid/*", "/x/mid/y", True),
        ("*/mid/*", "/x/middle/y", False),
        ("/a/*/c", "/a/b/c", True),
        ("/a/*/c", "/a/b/x/c", False),
        ("/a/?", "/a/z", True),
        ("/a/?", "/a/zz", False),
        ("/a/[bc]", "/a/c", True),
        ("/a/[^bc]", "/a/c", False),
        ("/a/[^bc]", "/a/d", True),
        ("*", "/anything/at/all", True),
        ("/x/*", "/x/../etc/passwd", False),
        ("/etc/*", "/x/../etc/passwd", True),
        ("/x/y", "/x//y", True),
        ("/x//y", "/x//y", True),
        ("/x//y", "/x/y", False),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    assert compile_path_pattern(pattern)(path) is expected


def test_path_pattern_list_is_any_of() -> None:
    test = compile_path_pattern(["/a", "/b/*", "*.css"])
    assert [test(p) for p in ["/a", "/b/x", "/s/x.css", "/c"]] == [True, True, True, False]


def test_malformed_glob_is_an_error() -> None:
    with pytest.raises(ValueError, match="unclosed"):
        compile_path_pattern("/a/[bc")


def test_path_matcher_matches_the_decoded_path() -> None:
    m = matcher([{"path": ["/files/a b.txt", "/x/y"]}])
    assert m.match(request("/files/a%20b.txt"))
    assert m.match(request("/x%2Fy"))
    assert not m.match(request("/files/a%2520b.txt"))


def test_method_is_exact() -> None:
    m = matcher([{"method": ["GET", "PUT"]}])
    assert m.match(request(method="PUT"))
    assert not m.match(request(method="POST"))


@pytest.mark.parametrize(
    ("hosts", "host", "expected"),
    [
        (["example.com"], "example.com", True),
        (["example.com"], "EXAMPLE.com:8080", True),
        (["example.com"], "www.example.com", False),
        (["*.example.com"], "a.example.com", True),
        (["*.example.com"], "a.b.example.com", False),
        (["*.example.com"], "example.com", False),
        (["*"], "localhost", True),
        (["*"], "example.com", False),
        (["::1"], "[::1]:8080", True),
    ],
)
def test_host(hosts: list[str], host: str, expected: bool) -> None:
    assert matcher([{"host": hosts}]).match(request(headers={"Host": host})) is expected


def test_repeated_host_is_refused() -> None:
    with pytest.raises(ValueError, match="repeated"):
        HostMatcher(["a.com", "A.com"])


@pytest.mark.parametrize(
    ("spec", "headers", "expected"),
    [
        ({"X-Key": ["abc"]}, {"X-Key": "abc"}, True),
        ({"x-key": ["abc"]}, {"X-KEY": "abc"}, True),
        ({"X-Key": ["abc"]}, {"X-Key": "ABC"}, False),
        ({"X-Key": ["ab*"]}, {"X-Key": "abz"}, True),
        ({"X-Key": ["*bc"]}, {"X-Key": "zbc"}, True),
        ({"X-Key": ["*b*"]}, {"X-Key": "abc"}, True),
        ({"X-Key": ["*"]}, {"X-Key": ""}, True),
        ({"X-Key": ["x", "abc"]}, {"X-Key": "abc"}, True),
        ({"X-Key": []}, {"X-Key": "whatever"}, True),
        ({"X-Key": []}, {}, False),
        ({"X-Key": None}, {}, True),
        ({"X-Key": None}, {"X-Key": "1"}, False),
        ({"X-A": ["1"], "X-B": ["2"]}, {"X-A": "1"}, False),
        ({"Host": ["example.*"]}, {"Host": "example.org"}, True),
    ],
)
def test_header(spec: dict[str, Any], headers: dict[str, str], expected: bool) -> None:
    assert matcher([{"header": spec}]).match(request(headers=headers)) is expected


@pytest.mark.parametrize(
    ("spec", "query", "expected"),
    [
        ({"q": ["1"]}, "?q=1", True),
        ({"q": ["1"]}, "?q=2", False),
        ({"q": ["1"]}, "?q=2&q=1", True),
        ({"q": ["*"]}, "?q=", True),
        ({"q": ["*"]}, "?other=1", False),
        ({"a": ["1"], "b": ["*"]}, "?a=1&b=x", True),
        ({"a": ["1"], "b": ["*"]}, "?a=1", False),
        ({}, "", True),
        ({}, "?x=1", False),
    ],
)
def test_query(spec: dict[str, list[str]], query: str, expected: bool) -> None:
    assert matcher([{"query": spec}]).match(request("/p" + query)) is expected


def test_path_regexp_exposes_captures() -> None:
    m = matcher([{"path_regexp": {"name": "doc", "pattern": r"^/docs/(?P<slug>[a-z]+)/(\d+)$"}}])
    req = request("/docs/intro/42")
    assert m.match(req)
    captures = req[REGEXP_CAPTURES]
    assert captures["doc.slug"] == captures["slug"] == "intro"
    assert captures["doc.2"] == "42"
    assert captures["doc.0"] == "/docs/intro/42"


def test_path_regexp_is_case_sensitive_and_on_the_cleaned_path() -> None:
    m = matcher([{"path_regexp": {"pattern": "^/secret/"}}])
    assert m.match(request("/public/../secret/x"))
    assert not m.match(request("/SECRET/x"))


@pytest.mark.parametrize(
    ("pattern", "name", "message"),
    [("(", "", "invalid regular expression"), ("x", "bad-name", "invalid regexp name")],
)
def test_path_regexp_errors(pattern: str, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PathRegexpMatcher(pattern, name)


def test_not_negates_ored_sets() -> None:
    m = matcher([{"not": [{"path": ["/a"]}, {"method": ["POST"], "path": ["/b"]}]}])
    assert not m.match(request("/a"))
    assert not m.match(request("/b", "POST"))
    assert m.match(request("/b"))
    assert m.match(request("/c", "POST"))


def test_keys_of_a_set_are_anded_and_sets_ored() -> None:
    m = matcher([{"path": ["/a"], "method": ["GET"]}, {"host": ["h.test"]}])
    assert m.match(request("/a"))
    assert not m.match(request("/a", "PUT"))
    assert m.match(request("/zzz", "PUT", {"Host": "h.test"}))


@pytest.mark.parametrize("spec", MATCHER_SPECS, ids=lambda s: s.name)
def test_matcher_schemas_are_valid_and_described(spec: Any) -> None:
    jsonschema.Draft202012Validator.check_schema(dict(spec.schema))
    assert spec.description
    assert spec.schema.get("description")
    assert REGISTRY.matcher_owner[spec.name] == "matchers"


def test_matchers_are_plain_predicates_of_web_requests() -> None:
    req = request("/a")
    assert isinstance(req, web.Request)
    assert matcher([{"path": ["/a"]}]).match(req)


@pytest.mark.parametrize(
    ("pattern", "escaped_path", "expected"),
    [
        ("/a%2fb", "/a%2fb", True),
        ("/a%2fb", "/a%2Fb", True),  # escapes compare case-insensitively
        ("/a%2fb", "/a/b", False),  # a real slash is not an escaped one
        ("/a%2fb", "/A%2fB", False),  # elsewhere the path is compared as sent, as in Caddy
        ("/x/%*/y", "/x/q%2fr%2fs/y", True),  # %* spans escaped slashes
        ("/x/%*/y", "/x/q/r/y", False),  # but not real ones
        ("/user/%40*", "/user/%40bob", True),
        ("/user/%40*", "/user/@bob", False),
        ("/a%2fb", "/a%zz", False),
    ],
)
def test_patterns_with_escapes_match_the_escaped_path(
    pattern: str, escaped_path: str, expected: bool
) -> None:
    assert match_escaped(pattern, escaped_path) is expected


def test_trailing_dots_and_spaces_do_not_dodge_a_suffix_pattern() -> None:
    php = compile_path_pattern("*.php")
    assert php("/index.php.")
    assert php("/index.php. .")
    assert not php("/index.php.txt")
