"""Glob patterns over relative paths: which operations a WebSocket subscriber receives.

Syntax (paths use ``/``, matching is case-sensitive):

- ``*`` any run of characters inside one path segment, ``?`` one character,
  ``[abc]`` / ``[!abc]`` a character class;
- ``**`` as a whole segment: any number of segments, including none
  (``**/*.txt`` matches ``a.txt`` and ``x/y/a.txt``).

A pattern selects a path when it matches the path itself or one of its parent directories, as
in ``.gitignore``: ``docs`` and ``docs/*`` both select everything below ``docs/``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

MAX_PATTERN_LENGTH = 1024
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class PatternError(ValueError):
    """A pattern that could select paths outside the root (absolute, ``..``) or is malformed."""


def check_pattern(pattern: str) -> None:
    """Refuse patterns that are absolute, climb out with ``..``, or contain NUL/backslashes."""
    if not pattern:
        raise PatternError("a pattern must not be empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"a pattern must be at most {MAX_PATTERN_LENGTH} characters")
    if "\x00" in pattern:
        raise PatternError("a pattern must not contain NUL")
    if "\\" in pattern:
        raise PatternError("a pattern uses '/' as separator, not '\\'")
    if pattern.startswith("/") or _DRIVE.match(pattern):
        raise PatternError(f"pattern {_clip(pattern)!r} is absolute; patterns are relative")
    if ".." in pattern.split("/"):
        raise PatternError(f"pattern {_clip(pattern)!r} leaves the root with '..'")


class PathFilter:
    """A compiled set of patterns; :meth:`matches_any` is what the broadcaster calls."""

    __slots__ = ("_regex", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            check_pattern(pattern)
        self.patterns = tuple(patterns)
        alternatives = "|".join(_pattern_regex(p) for p in self.patterns)
        # The optional "/..." tail implements "or one of its parent directories".
        self._regex = re.compile(f"(?:{alternatives})(?:/.*)?", re.DOTALL)

    def matches(self, path: str) -> bool:
        return self._regex.fullmatch(path) is not None

    def matches_any(self, paths: Iterable[str]) -> bool:
        fullmatch = self._regex.fullmatch
        return any(fullmatch(path) is not None for path in paths)

    def __repr__(self) -> str:
        return f"PathFilter({list(self.patterns)!r})"


@functools.lru_cache(maxsize=1024)
def compile_patterns(patterns: tuple[str, ...]) -> PathFilter:
    """One shared :class:`PathFilter` per distinct pattern tuple (subscribers often share one)."""
    return PathFilter(patterns)


def _pattern_regex(pattern: str) -> str:
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    if not segments:
        return ".*"
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == "**":
            if i == last:
                out.append(".*" if i == 0 else ".+")
            else:
                out.append("(?:[^/]+/)*")
            continue
        out.append(_segment_regex(segment))
        if i != last:
            out.append("/")
    return "".join(out)


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "*":
            while i < n and segment[i] == "*":
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 1 if i < n and segment[i] in "!^" else i)
            if end == -1 or end == i:
                out.append(re.escape(char))
                continue
            body = segment[i:end]
            i = end + 1
            negate = body[0] in "!^"
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
