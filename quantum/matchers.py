"""Built-in request matchers, with Caddy's names and JSON values.

``path``, ``method``, ``host``, ``header``, ``query``, ``path_regexp`` and ``not`` behave like
Caddy's ``http.matchers.*`` modules. Path matching is on the hot path: patterns are compiled once
into set lookups and ``str.startswith``/``endswith`` tuples, and each distinct request path is
cleaned and lower-cased once (a bounded LRU cache).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from aiohttp import web

import quantum
from quantum.handler import Matcher, MatcherSpec

BuildMatcherSets = Callable[[Sequence[Mapping[str, Any]]], Matcher]

REGEXP_CAPTURES: web.RequestKey[dict[str, str]] = web.RequestKey("quantum.regexp", dict)
"""Captures of ``path_regexp`` matchers: ``{"name.1": ..., "1": ..., "name.group": ...}``,
read by the ``{http.regexp.*}`` placeholders."""


def clean_path(path: str, *, merge_slashes: bool = True) -> str:
    """Resolve ``.``, ``..`` and (by default) ``//`` in a decoded URL path.

    ``path`` is the percent-decoded path (aiohttp's ``request.path``). The result always starts
    with ``/``, never climbs above the root, and keeps a trailing slash (like Caddy's
    ``CleanPath``), so ``/a/./b/../c/`` becomes ``/a/c/``.
    """
    if path.startswith("/") and "/." not in path and (not merge_slashes or "//" not in path):
        return path
    segments: list[str] = []
    parts = path.split("/")
    last = len(parts) - 1
    for index, part in enumerate(parts):
        if part == "..":
            if segments:
                segments.pop()
        elif part == "." or (part == "" and (merge_slashes or index in (0, last))):
            continue
        else:
            segments.append(part)
    cleaned = "/" + "/".join(segments)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


_CACHED_PATH_LENGTH = 256


def normalize_path(path: str) -> str:
    """The form path patterns are matched against: lower-cased, trailing dots and spaces dropped
    (Windows ignores them, so ``/x.php.`` must still match ``*.php``, as in Caddy), cleaned,
    slashes merged."""
    if len(path) > _CACHED_PATH_LENGTH:  # keep the cache small whatever clients send
        return clean_path(path.lower().rstrip(". "))
    return _normalize_cached(path)


@functools.lru_cache(maxsize=4096)
def _normalize_cached(path: str) -> str:
    return clean_path(path.lower().rstrip(". "))


def _normalize_path_keeping_slashes(path: str) -> str:
    return clean_path(path.lower().rstrip(". "), merge_slashes=False)


_BAD_ESCAPE = re.compile("%(?![0-9a-fA-F]{2})")


def has_malformed_escapes(path: str) -> bool:
    """Whether a raw path has a ``%`` that does not start two hex digits (Go's server, hence
    Caddy, answers such requests 400)."""
    return "%" in path and _BAD_ESCAPE.search(path) is not None


def _path_unescape(text: str) -> str:
    """Go's ``url.PathUnescape``: every ``%`` must start two hex digits."""
    if has_malformed_escapes(text):
        raise ValueError(f"invalid escape in {text!r}")
    return unquote(text)


def match_escaped(pattern: str, escaped_path: str) -> bool:
    """Caddy's match of a path pattern holding ``%`` escapes (``/a%2fb``, ``/x/%*/y``) against the
    escaped request path: where the pattern has an escape the path's escape must be the same,
    elsewhere the path is compared decoded; ``%*`` is a wildcard over the escaped form. A port of
    ``MatchPath.matchPatternWithEscapeSequence`` (Caddy 2.6), quirks included, checked against
    Caddy by the oracle test."""
    built: list[str] = []
    i_pattern = i_path = 0
    while i_pattern < len(pattern) and i_path < len(escaped_path):
        path_char = escaped_path[i_path]
        escaped_char = ""
        if path_char == "%" and len(escaped_path) >= i_path + 3:
            escaped_char = escaped_path[i_path : i_path + 3].lower()
            try:
                path_char = _path_unescape(escaped_char)
            except ValueError:
                return False
            i_path += 2
        normalize = True
        pattern_char = pattern[i_pattern]
        if pattern_char == "%":
            if len(pattern) >= i_pattern + 3 and pattern[i_pattern + 1] != "*":
                built.append(escaped_char)  # compared in escaped form
                i_path += 1
                i_pattern += 3
                continue
            i_pattern += 1  # "%*": a wildcard over the escaped form
            normalize = False
            pattern_char = "*"
        if pattern_char == "*":
            remaining = escaped_path[i_path:]
            until = len(remaining)
            if i_pattern < len(pattern) - 1:
                until = remaining.find(pattern[i_pattern + 1])
                if until == -1:
                    return False
            if until:
                span = remaining[:until]
                if normalize:
                    try:
                        span = _path_unescape(span)
                    except ValueError:
                        return False
                built.append(span)
                i_path += until
        else:
            built.append(path_char)
            i_path += 1
        i_pattern += 1
    construct = "".join(built)
    if not construct.startswith("/"):
        construct = "/" + construct
    regex = _escaped_glob(pattern.replace("%*", "*"))
    return regex.match(construct) is not None


@functools.lru_cache(maxsize=256)
def _escaped_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(glob_regex(pattern) + r"\Z", re.S)


def glob_regex(pattern: str) -> str:
    """Translate Go's ``path.Match`` syntax (``*``, ``?``, ``[...]``, ``\\``) to a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            i += 1
            if i >= len(pattern):
                raise ValueError(f"invalid path pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"invalid path pattern {pattern!r}: unclosed '['")
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            if not body:
                raise ValueError(f"invalid path pattern {pattern!r}: empty character class")
            escaped = body.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
            out.append(f"[^/{escaped}]" if negate else f"[{escaped}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


class _CompiledPaths:
    """A list of Caddy path patterns compiled into the cheapest checks that implement them."""

    __slots__ = (
        "escaped",
        "exact",
        "globs",
        "match_all",
        "normalize",
        "prefixes",
        "slash_sensitive",
    )

    def __init__(self, patterns: Sequence[str], *, merge_slashes: bool = True) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        substrings: list[str] = []
        globs: list[str] = []
        unmerged: list[str] = []
        escaped: list[str] = []
        self.match_all = False
        self.normalize = normalize_path if merge_slashes else _normalize_path_keeping_slashes
        for raw in patterns:
            pattern = raw.lower()
            if pattern == "*":
                self.match_all = True
            elif "%" in pattern:
                glob_regex(pattern.replace("%*", "*"))  # malformed globs fail at config time
                escaped.append(pattern)  # compared with the escaped path: see match_escaped
            elif merge_slashes and "//" in pattern:
                unmerged.append(pattern)  # Caddy keeps the request's "//" for such patterns
            elif pattern.count("*") == 2 and len(pattern) > 2 and pattern[0] == pattern[-1] == "*":
                substrings.append(pattern[1:-1])
            elif pattern.count("*") == 1 and pattern[0] == "*":
                suffixes.append(pattern[1:])
            elif pattern.count("*") == 1 and pattern[-1] == "*":
                prefixes.append(pattern[:-1])
            elif not any(c in pattern for c in "*?[\\"):
                exact.add(pattern)
            else:
                globs.append(glob_regex(pattern))
        self.exact = frozenset(exact)
        self.prefixes = (tuple(prefixes), tuple(suffixes), tuple(substrings))
        self.globs = re.compile("(?:" + "|".join(globs) + r")\Z", re.S).match if globs else None
        self.slash_sensitive = _CompiledPaths(unmerged, merge_slashes=False) if unmerged else None
        self.escaped = tuple(escaped)

    def test(self, normalized: str) -> bool:
        """Match an already normalized path (see :func:`normalize_path`)."""
        if self.match_all or normalized in self.exact:
            return True
        prefixes, suffixes, substrings = self.prefixes
        if prefixes and normalized.startswith(prefixes):
            return True
        if suffixes and normalized.endswith(suffixes):
            return True
        if substrings and any(s in normalized for s in substrings):
            return True
        return self.globs is not None and self.globs(normalized) is not None

    def __call__(self, path: str) -> bool:
        if self.test(self.normalize(path)):
            return True
        return self.slash_sensitive is not None and self.slash_sensitive(path)

    def match_request(self, request: web.Request) -> bool:
        if self(request.path):
            return True
        if not self.escaped:
            return False
        raw = request.raw_path.partition("?")[0]
        return any(
            match_escaped(pattern, clean_path(raw, merge_slashes="//" not in pattern))
            for pattern in self.escaped
        )


def compile_path_pattern(pattern: str | Sequence[str]) -> Callable[[str], bool]:
    """Compile Caddy path pattern(s) into a predicate on a decoded request path.

    The predicate takes the decoded path as is (``request.path``) and cleans and lower-cases it
    itself (cached). Syntax: exact unless ``*``; ``/x/*`` and ``/x*`` prefix; ``*.ext`` suffix;
    ``*x*`` substring; otherwise Go's ``path.Match`` globbing (``*`` does not cross ``/``).
    Raises ``ValueError`` for a malformed glob.
    """
    return _CompiledPaths([pattern] if isinstance(pattern, str) else list(pattern))


# --- matchers ----------------------------------------------------------------------------------


class PathMatcher(Matcher):
    __slots__ = ("_paths",)

    def __init__(self, patterns: Sequence[str]) -> None:
        self._paths = _CompiledPaths(patterns)

    def match(self, request: web.Request) -> bool:
        return self._paths.match_request(request)


class MethodMatcher(Matcher):
    __slots__ = ("_methods",)

    def __init__(self, methods: Sequence[str]) -> None:
        self._methods = frozenset(methods)

    def match(self, request: web.Request) -> bool:
        return request.method in self._methods


def split_host(host: str) -> str:
    """The host name of a ``Host`` value, without port or IPv6 brackets."""
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host[1:]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return host


class HostMatcher(Matcher):
    __slots__ = ("_exact", "_wildcards")

    def __init__(self, hosts: Sequence[str]) -> None:
        seen: set[str] = set()
        wildcards: list[tuple[str, ...]] = []
        for host in hosts:
            lowered = host.lower()
            if lowered in seen:
                raise ValueError(f"host {host!r} is repeated")
            seen.add(lowered)
            if "*" in lowered:
                wildcards.append(tuple(lowered.split(".")))
        self._exact = frozenset(h for h in seen if "*" not in h)
        self._wildcards = tuple(wildcards)

    def match(self, request: web.Request) -> bool:
        host = split_host(request.host).lower()
        if host in self._exact:
            return True
        if not self._wildcards:
            return False
        labels = host.split(".")
        return any(
            len(pattern) == len(labels)
            and all(p == "*" or p == label for p, label in zip(pattern, labels, strict=True))
            for pattern in self._wildcards
        )


def compile_value_pattern(pattern: str) -> Callable[[str], bool]:
    """Caddy's header-value wildcards: ``*`` any; ``*x*`` contains; ``*x`` suffix; ``x*`` prefix."""
    if pattern == "*":
        return lambda value: True
    if len(pattern) > 1 and pattern.startswith("*") and pattern.endswith("*"):
        inner = pattern[1:-1]
        return lambda value: inner in value
    if pattern.startswith("*"):
        suffix = pattern[1:]
        return lambda value: value.endswith(suffix)
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return lambda value: value.startswith(prefix)
    return lambda value: value == pattern


def header_values(request: web.Request, name: str) -> list[str] | None:
    """Every value of header ``name`` (``Host`` is the request's host), or ``None`` if absent."""
    if name.lower() == "host":
        return [request.host]
    values = request.headers.getall(name, None)
    return list(values) if values is not None else None


class HeaderMatcher(Matcher):
    """``{name: [values]}``: any value matches; ``[]`` = present; ``null`` = absent."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, Sequence[str] | None]) -> None:
        self._fields = tuple(
            (name, None if values is None else tuple(compile_value_pattern(v) for v in values))
            for name, values in fields.items()
        )

    def match(self, request: web.Request) -> bool:
        for name, allowed in self._fields:
            actual = header_values(request, name)
            if allowed is None:
                if actual is not None:
                    return False
                continue
            if actual is None:
                return False
            if not allowed:
                continue
            if not any(test(value) for value in actual for test in allowed):
                return False
        return True


class QueryMatcher(Matcher):
    """``{key: [values]}``: every key present with one of its values (``*`` = any); ``{}`` =
    no query at all."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, Sequence[str]]) -> None:
        self._keys = tuple((key, "*" in values, frozenset(values)) for key, values in keys.items())

    def match(self, request: web.Request) -> bool:
        query = request.query
        if not self._keys:
            return not query
        for key, any_value, allowed in self._keys:
            values = query.getall(key, None)
            if values is None:
                return False
            if not any_value and allowed.isdisjoint(values):
                return False
        return True


class PathRegexpMatcher(Matcher):
    """A regular expression searched in the cleaned, decoded path (case-sensitive).

    On a match the captures become ``{http.regexp.NAME.N}`` / ``{http.regexp.N}`` placeholders.
    """

    __slots__ = ("_name", "_regex")

    def __init__(self, pattern: str, name: str = "") -> None:
        if name and not re.fullmatch(r"\w+", name):
            raise ValueError(f"invalid regexp name {name!r} (must contain only word characters)")
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        self._name = name

    def match(self, request: web.Request) -> bool:
        found = self._regex.search(clean_path(request.path))
        if found is None:
            return False
        captures = request.get(REGEXP_CAPTURES)
        if captures is None:
            captures = request[REGEXP_CAPTURES] = {}
        prefix = self._name + "." if self._name else ""
        groups = [found.group(0), *found.groups()]
        for index, value in enumerate(groups):
            captures[str(index)] = value or ""
            if prefix:
                captures[f"{prefix}{index}"] = value or ""
        for group_name, value in found.groupdict().items():
            captures[group_name] = value or ""
            if prefix:
                captures[prefix + group_name] = value or ""
        return True


class NotMatcher(Matcher):
    __slots__ = ("_inner",)

    def __init__(self, inner: Matcher | None) -> None:
        self._inner = inner

    def match(self, request: web.Request) -> bool:
        return self._inner is None or not self._inner.match(request)


# --- specs -------------------------------------------------------------------------------------

_STRING_LIST = {"type": "array", "items": {"type": "string"}}


def _path(value: Sequence[str], _build: BuildMatcherSets) -> Matcher:
    return PathMatcher(value)


def _method(value: Sequence[str], _build: BuildMatcherSets) -> Matcher:
    return MethodMatcher(value)


def _host(value: Sequence[str], _build: BuildMatcherSets) -> Matcher:
    return HostMatcher(value)


def _header(value: Mapping[str, Sequence[str] | None], _build: BuildMatcherSets) -> Matcher:
    return HeaderMatcher(value)


def _query(value: Mapping[str, Sequence[str]], _build: BuildMatcherSets) -> Matcher:
    return QueryMatcher(value)


def _path_regexp(value: Mapping[str, str], _build: BuildMatcherSets) -> Matcher:
    return PathRegexpMatcher(value["pattern"], value.get("name", ""))


def _not(value: Sequence[Mapping[str, Any]], build: BuildMatcherSets) -> Matcher:
    return NotMatcher(build(value) if value else None)


MATCHER_SPECS: tuple[MatcherSpec, ...] = (
    MatcherSpec(
        name="path",
        schema={
            **_STRING_LIST,
            "description": "Caddy path patterns (case-insensitive, on the cleaned decoded path): "
            "exact unless '*'; '/x/*' prefix; '*.ext' suffix; '*x*' substring; "
            "'*' elsewhere globs within one segment.",
            "items": {"type": "string", "minLength": 1},
        },
        factory=_path,
        description="Matches the request path against any of the patterns.",
    ),
    MatcherSpec(
        name="method",
        schema={
            **_STRING_LIST,
            "items": {"type": "string", "minLength": 1},
            "description": "HTTP methods, compared exactly (use upper case).",
        },
        factory=_method,
        description="Matches the request method.",
    ),
    MatcherSpec(
        name="host",
        schema={
            **_STRING_LIST,
            "items": {"type": "string", "minLength": 1},
            "uniqueItems": True,
            "description": "Host names (case-insensitive, port ignored); '*' stands for exactly "
            "one label, e.g. '*.example.com'.",
        },
        factory=_host,
        description="Matches the Host of the request.",
    ),
    MatcherSpec(
        name="header",
        schema={
            "type": "object",
            "additionalProperties": {"oneOf": [_STRING_LIST, {"type": "null"}]},
            "description": "Header name -> values; any value matches ('*' wildcards at the start "
            "and/or end); [] = header present; null = header absent.",
        },
        factory=_header,
        description="Matches request header fields.",
    ),
    MatcherSpec(
        name="query",
        schema={
            "type": "object",
            "additionalProperties": _STRING_LIST,
            "description": "Query key -> accepted values ('*' = any value); every key must be "
            "present; {} matches only requests without a query string.",
        },
        factory=_query,
        description="Matches the query string.",
    ),
    MatcherSpec(
        name="path_regexp",
        schema={
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": r"^\w*$",
                    "description": "Prefix of the capture placeholders {http.regexp.NAME.N}.",
                },
                "pattern": {
                    "type": "string",
                    "description": "Regular expression searched in the cleaned, decoded path.",
                },
            },
            "required": ["pattern"],
            "additionalProperties": False,
            "description": "A regular expression on the request path (case-sensitive).",
        },
        factory=_path_regexp,
        description="Matches the path with a regular expression and exposes its captures.",
    ),
    MatcherSpec(
        name="not",
        schema={
            "type": "array",
            # The core's matcher-set definition: nested sets are validated like top-level ones.
            "items": {"$ref": "#/$defs/matcher_set"},
            "description": "Matcher sets (OR-ed); the request matches when none of them does.",
        },
        factory=_not,
        description="Negates nested matcher sets.",
    ),
)


@quantum.hookimpl
def quantum_register_matchers() -> Sequence[MatcherSpec]:
    return MATCHER_SPECS
