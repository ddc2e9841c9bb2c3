"""file_server: files, index and canonical redirects, validators, ranges, hide, browse, cache."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from quantum.handlers.file_cache import FileCache
from quantum.handlers.file_server import FileServer
from tests.core.handler_harness import raw_request, serving

SMALL = b"hello, world\n"
LARGE = bytes(range(256)) * 1200  # 300 KiB: sent with sendfile, not cached


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(SMALL)
    (root / "page.html").write_text("<p>page</p>")
    (root / "data.json").write_text('{"a": 1}')
    (root / "noext").write_bytes(b"\x00\x01binary")
    (root / "big.bin").write_bytes(LARGE)
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    (root / ".env").write_text("SECRET=1")
    (root / "private").mkdir()
    (root / "private" / "key.txt").write_text("key")
    (tmp_path / "outside.txt").write_text("outside")
    return root


def server(root: Path, **options: object) -> FileServer:
    return FileServer({"root": str(root), **options})


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/a.txt", "text/plain; charset=utf-8"),
        ("/page.html", "text/html; charset=utf-8"),
        ("/data.json", "application/json"),
        ("/noext", None),
    ],
)
async def test_serves_files_with_validators(
    site: Path, path: str, content_type: str | None
) -> None:
    async with serving(server(site)) as client:
        response = await client.get(path)
        body = await response.read()
    assert response.status == 200
    assert body == (site / path.lstrip("/")).read_bytes()
    assert response.headers.get("Content-Type") == content_type
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-z]+"', response.headers["ETag"])
    assert response.headers["Last-Modified"].endswith(" GMT")


async def test_head_has_headers_but_no_body(site: Path) -> None:
    async with serving(server(site)) as client:
        for path, size in (("/a.txt", len(SMALL)), ("/big.bin", len(LARGE))):
            response = await client.head(path)
            assert response.status == 200
            assert response.headers["Content-Length"] == str(size)
            assert await response.read() == b""


async def test_large_file_is_sent_whole_and_by_range(site: Path) -> None:
    async with serving(server(site)) as client:
        whole = await client.get("/big.bin")
        assert await whole.read() == LARGE
        part = await client.get("/big.bin", headers={"Range": "bytes=1000-200999"})
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes 1000-200999/{len(LARGE)}"
        assert await part.read() == LARGE[1000:201000]


async def test_index_file_and_canonical_redirect(site: Path) -> None:
    async with serving(server(site)) as client:
        redirect = await client.get("/docs?x=1", allow_redirects=False)
        assert redirect.status == 308
        assert redirect.headers["Location"] == "/docs/?x=1"
        assert await redirect.text() == '<a href="/docs/?x=1">Permanent Redirect</a>.\n\n'
        index = await client.get("/docs/")
        assert index.status == 200
        assert await index.text() == "<h1>docs</h1>"


async def test_canonical_redirect_never_leaves_the_site(site: Path) -> None:
    async with serving(server(site)) as client:
        assert client.port is not None
        reply = await raw_request(
            client.port, b"GET //docs HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
    assert b" 308 " in reply.split(b"\r\n", 1)[0]
    assert b"\r\nLocation: /docs/\r\n" in reply


async def test_missing_things_are_404_without_body(site: Path) -> None:
    async with serving(server(site)) as client:
        for path in ("/missing", "/a.txt/", "/empty/", "/docs/nope.txt"):
            response = await client.get(path)
            assert response.status == 404, path
            assert await response.read() == b""
            assert "X-Next" not in response.headers


async def test_special_files_are_not_served(site: Path) -> None:
    os.mkfifo(site / "pipe")  # opening it would block until a writer comes
    async with serving(server(site)) as client:
        assert (await client.get("/pipe")).status == 404


async def test_pass_thru_continues_with_next(site: Path) -> None:
    async with serving(server(site, pass_thru=True)) as client:
        response = await client.get("/missing")
        assert response.headers["X-Next"] == "reached"
        assert (await client.get("/a.txt")).status == 200


async def test_only_get_and_head(site: Path) -> None:
    async with serving(server(site)) as client:
        response = await client.post("/a.txt", data=b"x")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "target",
    [b"/../outside.txt", b"/docs/../../outside.txt", b"/%2e%2e/outside.txt", b"/..%2foutside.txt"],
)
async def test_traversal_stays_inside_root(site: Path, target: bytes) -> None:
    async with serving(server(site)) as client:
        assert client.port is not None
        reply = await raw_request(
            client.port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
    status_line = reply.split(b"\r\n", 1)[0]
    assert b" 404 " in status_line or b" 400 " in status_line, reply
    assert b"outside" not in reply.split(b"\r\n\r\n", 1)[1]


async def test_conditional_requests(site: Path) -> None:
    async with serving(server(site)) as client:
        first = await client.get("/a.txt")
        etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
        await first.read()

        not_modified = await client.get("/a.txt", headers={"If-None-Match": etag})
        assert not_modified.status == 304
        assert not_modified.headers["ETag"] == etag
        assert "Last-Modified" not in not_modified.headers
        assert await not_modified.read() == b""

        weak = await client.get("/a.txt", headers={"If-None-Match": f'"x", W/{etag}'})
        assert weak.status == 304

        since = await client.get("/a.txt", headers={"If-Modified-Since": last_modified})
        assert since.status == 304

        changed = await client.get("/a.txt", headers={"If-None-Match": '"other"'})
        assert changed.status == 200

        failed = await client.get("/a.txt", headers={"If-Match": '"other"'})
        assert failed.status == 412

        stale_range = await client.get(
            "/a.txt", headers={"Range": "bytes=0-1", "If-Range": '"other"'}
        )
        assert stale_range.status == 200
        assert await stale_range.read() == SMALL

        fresh_range = await client.get("/a.txt", headers={"Range": "bytes=0-1", "If-Range": etag})
        assert fresh_range.status == 206


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-4", 206, SMALL[:5], f"bytes 0-4/{len(SMALL)}"),
        ("bytes=7-", 206, SMALL[7:], f"bytes 7-{len(SMALL) - 1}/{len(SMALL)}"),
        ("bytes=-6", 206, SMALL[-6:], f"bytes {len(SMALL) - 6}-{len(SMALL) - 1}/{len(SMALL)}"),
        ("bytes=5-1000", 206, SMALL[5:], f"bytes 5-{len(SMALL) - 1}/{len(SMALL)}"),
        ("bytes=100-", 416, b"invalid range: failed to overlap\n", f"bytes */{len(SMALL)}"),
        ("bytes=a-b", 416, b"invalid range\n", None),
        ("lines=1-2", 416, b"invalid range\n", None),
    ],
)
async def test_single_ranges(
    site: Path, range_header: str, status: int, body: bytes, content_range: str | None
) -> None:
    async with serving(server(site)) as client:
        response = await client.get("/a.txt", headers={"Range": range_header})
        assert response.status == status
        assert await response.read() == body
        assert response.headers.get("Content-Range") == content_range


async def test_multiple_ranges_are_multipart(site: Path) -> None:
    async with serving(server(site)) as client:
        response = await client.get("/a.txt", headers={"Range": "bytes=0-1,5-6"})
        body = await response.read()
    assert response.status == 206
    content_type = response.headers["Content-Type"]
    boundary = content_type.split("boundary=")[1]
    assert content_type.startswith("multipart/byteranges; ")
    assert (
        body
        == (
            f"--{boundary}\r\nContent-Range: bytes 0-1/{len(SMALL)}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + SMALL[0:2]
        + (
            f"\r\n--{boundary}\r\nContent-Range: bytes 5-6/{len(SMALL)}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode()
        + SMALL[5:7]
        + f"\r\n--{boundary}--\r\n".encode()
    )


async def test_hide_by_name_and_by_path(site: Path) -> None:
    handler = server(site, hide=[".*", str(site / "private")], browse={})
    async with serving(handler) as client:
        assert (await client.get("/.env")).status == 404
        assert (await client.get("/private/key.txt")).status == 404
        assert (await client.get("/private/")).status == 404
        listing = await client.get("/", headers={"Accept": "application/json"})
        names = {entry["name"] for entry in await listing.json()}
    assert ".env" not in names
    assert "private/" not in names
    assert {"a.txt", "docs/", "big.bin"} <= names


async def test_browse_lists_as_json_or_html(site: Path) -> None:
    async with serving(server(site, browse={})) as client:
        redirect = await client.get("/empty", allow_redirects=False)
        assert redirect.status == 308
        assert redirect.headers["Location"] == "/empty/"

        listing = await client.get("/", headers={"Accept": "application/json"})
        entries = await listing.json()
        assert listing.headers["Content-Type"] == "application/json"
        assert [e["name"] for e in entries][:3] == ["docs/", "empty/", "private/"]
        a_txt = next(e for e in entries if e["name"] == "a.txt")
        assert a_txt["size"] == len(SMALL)
        assert a_txt["url"] == "./a.txt"
        assert a_txt["is_dir"] is False
        assert a_txt["mode"] == os.stat(site / "a.txt").st_mode & 0o777
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", a_txt["mod_time"])

        by_size = await client.get(
            "/?sort=size&order=desc&limit=1", headers={"Accept": "application/json"}
        )
        assert [e["name"] for e in await by_size.json()] == ["big.bin"]

        page = await client.get("/")
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        html = await page.text()
        assert '<a href="./a.txt">a.txt</a>' in html
        assert "<title>/</title>" in html


async def test_without_browse_a_directory_is_404(site: Path) -> None:
    async with serving(server(site)) as client:
        assert (await client.get("/empty/")).status == 404


async def test_cache_notices_changes_in_place_and_by_rename(site: Path) -> None:
    target = site / "a.txt"
    async with serving(server(site)) as client:
        assert await (await client.get("/a.txt")).read() == SMALL
        target.write_bytes(b"HELLO, WORLD\n")  # same size
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert await (await client.get("/a.txt")).read() == b"HELLO, WORLD\n"

        replacement = site / "a.txt.new"
        replacement.write_bytes(b"replaced\n")
        os.replace(replacement, target)
        assert await (await client.get("/a.txt")).read() == b"replaced\n"

        target.unlink()
        assert (await client.get("/a.txt")).status == 404


async def test_custom_index_names(site: Path) -> None:
    (site / "empty" / "start.txt").write_text("start")
    async with serving(server(site, index_names=["start.txt"])) as client:
        assert await (await client.get("/empty/")).text() == "start"
        assert (await client.get("/docs/")).status == 404


async def test_canonical_uris_can_be_disabled(site: Path) -> None:
    async with serving(server(site, canonical_uris=False)) as client:
        response = await client.get("/docs", allow_redirects=False)
        assert response.status == 200
        assert await response.text() == "<h1>docs</h1>"


def test_a_root_with_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match=r"root: unknown placeholder \{http.vars.root\}"):
        FileServer({"root": "/srv/{http.vars.root}"})


@pytest.fixture
def vhosts(tmp_path: Path) -> Path:
    for host in ("a.example", "b.example"):
        (tmp_path / "sites" / host).mkdir(parents=True)
        (tmp_path / "sites" / host / "index.html").write_text(f"site {host}")
    (tmp_path / "sites" / "shared.txt").write_text("not part of any site")
    (tmp_path / "outside.txt").write_text("outside")
    return tmp_path / "sites"


async def test_a_root_with_the_host_serves_one_directory_per_site(vhosts: Path) -> None:
    async with serving(server(vhosts / "{http.request.host}")) as client:
        a = await client.get("/", headers={"Host": "a.example:8080"})
        b = await client.get("/index.html", headers={"Host": "b.example"})
        assert (a.status, await a.text()) == (200, "site a.example")
        assert (b.status, await b.text()) == (200, "site b.example")
        unknown = await client.get("/", headers={"Host": "c.example"})
        assert unknown.status == 404


@pytest.mark.parametrize("host", ["..", ".", "a.example/..", "..%2f", "a\\b"])
async def test_request_values_cannot_move_a_placeholder_root(vhosts: Path, host: str) -> None:
    async with serving(server(vhosts / "{http.request.host}")) as client:
        for path in ("/shared.txt", "/../outside.txt", "/sites/shared.txt"):
            port = client.port
            answer = await raw_request(
                port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.split(b"\r\n", 1)[0] in (
                b"HTTP/1.1 404 Not Found",
                b"HTTP/1.1 400 Bad Request",
            )
            assert b"not part of any site" not in answer
            assert b"outside" not in answer


async def test_an_environment_variable_may_hold_a_whole_root(
    vhosts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_ROOT", str(vhosts / "a.example"))
    async with serving(server("{env.SITE_ROOT}")) as client:
        response = await client.get("/")
        assert (response.status, await response.text()) == (200, "site a.example")


def test_file_cache_is_bounded_and_validated_by_stat(tmp_path: Path) -> None:
    files = []
    for index in range(4):
        path = tmp_path / f"f{index}"
        path.write_bytes(b"x" * 10)
        files.append(str(path))
    (tmp_path / "large").write_bytes(b"x" * 11)
    cache: FileCache[int] = FileCache(
        lambda name, st: st.st_size, max_file_size=10, max_total=25, max_entries=3
    )
    for name in files:
        entry = cache.get(name, os.stat(name))
        assert entry is not None
        assert entry.body == b"x" * 10
    assert len(cache) == 2  # 25 bytes hold two 10-byte files
    by_count: FileCache[int] = FileCache(lambda name, st: 0, max_file_size=10, max_entries=3)
    for name in files:
        by_count.get(name, os.stat(name))
    assert len(by_count) == 3
    assert cache.get(str(tmp_path / "large"), os.stat(tmp_path / "large")) is None
    stale = os.stat(files[-1])
    Path(files[-1]).write_bytes(b"y" * 5)
    fresh = cache.get(files[-1], os.stat(files[-1]))
    assert fresh is not None
    assert (fresh.body, fresh.meta) == (b"y" * 5, 5)
    assert fresh.stamp != (stale.st_mtime_ns, stale.st_size, stale.st_ino)


# -- precompressed sidecars (Caddy's `precompressed`; negotiation is also checked against Caddy
#    itself in test_caddy_oracle.py) ---------------------------------------------------------------

GZIPPED = b"\x1f\x8b pretend gzip"
BIG_GZIPPED = bytes(reversed(LARGE))  # sent with sendfile


@pytest.fixture
def sidecars(site: Path) -> Path:
    (site / "a.txt.gz").write_bytes(GZIPPED)
    (site / "a.txt.zst").write_bytes(b"zstd bytes")
    (site / "big.bin.gz").write_bytes(BIG_GZIPPED)
    return site


def precompressing(root: Path) -> FileServer:
    return server(root, precompressed={"gzip": {}, "zstd": {}})


async def test_a_sidecar_is_sent_with_its_coding_and_the_original_type(sidecars: Path) -> None:
    async with serving(precompressing(sidecars)) as client:
        gzip = await client.get("/a.txt", headers={"Accept-Encoding": "gzip"})
        gzip_body = await gzip.read()
        head = await client.head("/a.txt", headers={"Accept-Encoding": "gzip"})
        plain = await client.get("/a.txt", headers={"Accept-Encoding": "br"})
        plain_body = await plain.read()
        big = await client.get("/big.bin", headers={"Accept-Encoding": "gzip;q=0.5, br"})
        big_body = await big.read()
    assert gzip_body == GZIPPED
    assert gzip.headers["Content-Encoding"] == "gzip"
    assert gzip.headers["Vary"] == "Accept-Encoding"
    assert gzip.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert head.headers["Content-Length"] == str(len(GZIPPED))  # what a GET sends
    assert plain_body == SMALL
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["ETag"] != gzip.headers["ETag"]  # two representations, two tags
    assert big_body == BIG_GZIPPED
    assert big.headers["Content-Encoding"] == "gzip"


async def test_sidecar_validators_and_ranges_are_its_own(sidecars: Path) -> None:
    async with serving(precompressing(sidecars)) as client:
        first = await client.get("/a.txt", headers={"Accept-Encoding": "zstd"})
        etag = first.headers["ETag"]
        again = await client.get(
            "/a.txt", headers={"Accept-Encoding": "zstd", "If-None-Match": etag}
        )
        part = await client.get("/a.txt", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-1"})
        part_body = await part.read()
        (sidecars / "a.txt.zst").write_bytes(b"rebuilt zstd sidecar")
        rebuilt = await client.get(
            "/a.txt", headers={"Accept-Encoding": "zstd", "If-None-Match": etag}
        )
        rebuilt_body = await rebuilt.read()
    assert again.status == 304
    assert again.headers["Vary"] == "Accept-Encoding"
    assert part.status == 206
    assert part_body == GZIPPED[:2]
    assert part.headers["Content-Range"] == f"bytes 0-1/{len(GZIPPED)}"
    assert rebuilt.status == 200
    assert rebuilt_body == b"rebuilt zstd sidecar"


async def test_without_precompressed_sidecars_are_ordinary_files(sidecars: Path) -> None:
    async with serving(server(sidecars)) as client:
        response = await client.get("/a.txt", headers={"Accept-Encoding": "gzip"})
        body = await response.read()
    assert body == SMALL
    assert "Content-Encoding" not in response.headers
