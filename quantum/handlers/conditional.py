"""Conditional requests and byte ranges with the semantics of Go's ``http.ServeContent``.

Pure functions of the request headers, the representation's ETag/mtime/size: the file server
asks :func:`evaluate` what to answer and builds the response itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from aiohttp import hdrs
from multidict import CIMultiDictProxy


class Outcome(enum.Enum):
    FULL = "full"  # 200 with the whole body
    PARTIAL = "partial"  # 206 with ``ranges``
    NOT_MODIFIED = "not_modified"  # 304
    PRECONDITION_FAILED = "precondition_failed"  # 412
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    ranges: tuple[tuple[int, int], ...] = ()
    """(start, length) pairs, for ``PARTIAL``."""
    message: str = ""
    """Body text of a 416."""
    no_overlap: bool = False
    """A 416 because no range overlapped: answer ``Content-Range: bytes */SIZE``."""


FULL = Decision(Outcome.FULL)


def _etags(header: str) -> list[tuple[str, bool]]:
    """``(opaque-tag, weak)`` pairs of an ``If-Match``/``If-None-Match`` list; ``*`` as is."""
    tags: list[tuple[str, bool]] = []
    rest = header.strip()
    while rest:
        rest = rest.lstrip(" \t,")
        if not rest:
            break
        if rest.startswith("*"):
            tags.append(("*", False))
            rest = rest[1:]
            continue
        weak = rest.startswith("W/")
        if weak:
            rest = rest[2:]
        if not rest.startswith('"'):
            break
        end = rest.find('"', 1)
        if end < 0:
            break
        tags.append((rest[: end + 1], weak))
        rest = rest[end + 1 :]
    return tags


def _http_date(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _if_match(header: str, etag: str) -> bool:
    # Strong comparison: a weak tag never matches.
    return any(tag == "*" or (tag == etag and not weak) for tag, weak in _etags(header))


def _if_none_match(header: str, etag: str) -> bool:
    """True when the request's tags do NOT match (so the condition holds)."""
    return not any(tag == "*" or tag == etag for tag, _ in _etags(header))


def parse_ranges(header: str, size: int) -> tuple[list[tuple[int, int]] | None, str, bool]:
    """Go's ``parseRange``: ``(ranges, error, no_overlap)``; ranges is None on error."""
    if not header.startswith("bytes="):
        return None, "invalid range", False
    ranges: list[tuple[int, int]] = []
    no_overlap = False
    for spec in header[len("bytes=") :].split(","):
        spec = spec.strip(" \t")
        if not spec:
            continue
        start_text, sep, end_text = spec.partition("-")
        if not sep:
            return None, "invalid range", False
        start_text, end_text = start_text.strip(" \t"), end_text.strip(" \t")
        if not start_text:
            if not end_text.isdigit():
                return None, "invalid range", False
            suffix = min(int(end_text), size)
            if suffix == 0:
                no_overlap = True
            else:
                ranges.append((size - suffix, suffix))
            continue
        if not start_text.isdigit():
            return None, "invalid range", False
        start = int(start_text)
        if start >= size:
            no_overlap = True
            continue
        if not end_text:
            ranges.append((start, size - start))
            continue
        if not end_text.isdigit() or int(end_text) < start:
            return None, "invalid range", False
        end = min(int(end_text), size - 1)
        ranges.append((start, end - start + 1))
    if no_overlap and not ranges:
        return None, "invalid range: failed to overlap", True
    return ranges, "", False


def evaluate(
    method: str, headers: CIMultiDictProxy[str], etag: str, mtime: int, size: int
) -> Decision:
    """What to answer to a GET/HEAD of a representation (``mtime`` in whole seconds)."""
    if (
        hdrs.RANGE not in headers
        and hdrs.IF_NONE_MATCH not in headers
        and hdrs.IF_MODIFIED_SINCE not in headers
        and hdrs.IF_MATCH not in headers
        and hdrs.IF_UNMODIFIED_SINCE not in headers
    ):
        return FULL  # the common case, checked without building anything
    get_or_head = method in ("GET", "HEAD")
    if_match = headers.get(hdrs.IF_MATCH)
    if if_match is not None:
        if not _if_match(if_match, etag):
            return Decision(Outcome.PRECONDITION_FAILED)
    else:
        since = headers.get(hdrs.IF_UNMODIFIED_SINCE)
        limit = _http_date(since) if since else None
        if limit is not None and mtime > limit:
            return Decision(Outcome.PRECONDITION_FAILED)
    if_none_match = headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        if not _if_none_match(if_none_match, etag):
            return Decision(Outcome.NOT_MODIFIED if get_or_head else Outcome.PRECONDITION_FAILED)
    elif get_or_head:
        since = headers.get(hdrs.IF_MODIFIED_SINCE)
        limit = _http_date(since) if since else None
        if limit is not None and mtime <= limit:
            return Decision(Outcome.NOT_MODIFIED)
    range_header = headers.get(hdrs.RANGE)
    if not range_header or not get_or_head or not _if_range(headers, etag, mtime):
        return FULL
    ranges, error, no_overlap = parse_ranges(range_header, size)
    if ranges is None:
        return Decision(Outcome.UNSATISFIABLE, message=error, no_overlap=no_overlap)
    if not ranges or sum(length for _, length in ranges) > size:
        return FULL  # more bytes than the whole: an attack or a confused client; send it all
    return Decision(Outcome.PARTIAL, tuple(ranges))


def _if_range(headers: CIMultiDictProxy[str], etag: str, mtime: int) -> bool:
    """Whether a ``Range`` still applies given ``If-Range``."""
    if_range = headers.get(hdrs.IF_RANGE)
    if not if_range:
        return True
    tags = _etags(if_range)
    if tags and if_range.lstrip().startswith(('"', "W/")):
        tag, weak = tags[0]
        return not weak and tag == etag
    return _http_date(if_range) == mtime
