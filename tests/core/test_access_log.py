"""The access log's template renderer gives the same JSON as a serializer would, for any text."""

from __future__ import annotations

import calendar
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from quantum.access_log import AccessLog, Entry

text = st.text(min_size=1, max_size=40)
token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    return (
        draw(st.floats(min_value=1e9, max_value=4e9)),
        draw(text),  # server name (from the config: any string)
        draw(text),  # handler name
        draw(token),  # method: an HTTP token, checked by aiohttp's parser
        draw(text),  # path as sent
        draw(st.integers(100, 999)),
        draw(st.integers(0, 2**40)),
        draw(st.floats(min_value=0, max_value=1e4)),
        draw(st.none() | text),  # X-Request-Id from the client
        draw(st.none() | st.sampled_from(["127.0.0.1", "::1"])),
        draw(st.none() | st.dictionaries(text, text, max_size=3)),
    )


@given(st.lists(entries(), min_size=1, max_size=5))
def test_rendered_lines_parse_to_the_recorded_fields(batch: list[Entry]) -> None:
    log = AccessLog()
    lines = log.render(batch).split("\n")
    assert lines[-1] == ""
    assert len(lines) == len(batch) + 1
    for line, entry in zip(lines, batch, strict=False):
        parsed = json.loads(line)
        now, server, handler, method, path, status, size, elapsed, rid, remote, headers = entry
        assert parsed["server"] == server
        assert parsed["handler"] == handler
        assert parsed["method"] == method
        assert parsed["path"] == path
        assert (parsed["status"], parsed["bytes"]) == (status, size)
        assert abs(parsed["duration"] - elapsed) <= 1e-6
        if rid:
            assert parsed["request_id"] == rid
        else:
            assert len(parsed["request_id"]) == 16
        assert parsed["remote"] == remote
        assert parsed.get("headers") == headers
        assert (parsed["event"], parsed["level"]) == ("request", "info")
        stamp = time.strptime(parsed["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")
        assert calendar.timegm(stamp) == int(now)
        assert parsed["timestamp"].endswith("Z")
