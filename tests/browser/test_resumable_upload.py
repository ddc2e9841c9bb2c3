"""Resumable uploads from the page (static/resumable.js, tus 1.0 on ``/api/uploads``): a big file
survives a reload of the page (picked again, it continues where it stopped) and a network drop
(retried by itself); cancel deletes the upload on the server.

The files are 64 MiB (the page switches to resumable uploads at 8 MiB and sends 8 MiB parts),
throttled with CDP so that the reload and the drop happen mid-upload; the tests wait for the
server's ``Upload-Offset`` (HEAD, from here) instead of sleeping."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import CDPSession, Request, Route, expect

from tests.browser.conftest import BrowserPage, SyncServer, wait_for

pytestmark = pytest.mark.browser

MiB = 1024 * 1024
BIG = 64 * MiB
THRESHOLD = 8 * MiB  # RESUMABLE_THRESHOLD in resumable.js
STORE_KEY = "quantum.uploads"


# ---- helpers ---------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    """Random content on disk (a real file: picked twice, it keeps its lastModified);
    returns its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def upload_offset(server: SyncServer, url: str) -> int | None:
    """The server's ``Upload-Offset`` of the upload at ``url`` (tus HEAD); None when it has
    none (404/410: cancelled or never created).

    Only while the page is not sending: like any request for the upload, a HEAD stops an append
    still running (the IETF draft's rule: the client asking has given up on it). A 423 (the
    stopped append still holds the upload) is waited out."""
    request = urllib.request.Request(url, method="HEAD")
    request.add_header("Tus-Resumable", "1.0.0")
    if server.tokens:
        request.add_header("Authorization", f"Bearer {server.tokens[0]}")
    found: list[int | None] = []

    def answered() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                found.append(int(response.headers["Upload-Offset"]))
                return True
        except urllib.error.HTTPError as error:
            with error:
                if error.code in (404, 410):
                    found.append(None)
                    return True
                if error.code == 423:
                    return False
                raise

    wait_for(answered, 10, "the upload's offset (not 423)")
    return found[0]


def stored_uploads(page: BrowserPage) -> dict[str, Any]:
    """What the page remembers in localStorage: upload key → {url, offset, path, …}."""
    stored: dict[str, Any] = page.page.evaluate(
        "key => JSON.parse(localStorage.getItem(key) ?? '{}')", STORE_KEY
    )
    return stored


def stored_upload_of(page: BrowserPage, path: str) -> dict[str, Any]:
    """Wait until the page has created the upload of ``path`` and remembered it."""
    found: list[dict[str, Any]] = []

    def created() -> bool:
        found[:] = [record for record in stored_uploads(page).values() if record["path"] == path]
        return bool(found)

    wait_for(created, 15, f"the upload of {path} in localStorage", page=page.page)
    return found[0]


def wait_acknowledged(page: BrowserPage, path: str) -> int:
    """Wait until the server has acknowledged part of the upload of ``path`` to the page (the
    ``Upload-Offset`` of a PATCH answer, which the page keeps in localStorage). Asking the
    server itself with HEAD would stop the page's running PATCH."""
    offsets: list[int] = []

    def acknowledged() -> bool:
        offsets[:] = [r["offset"] for r in stored_uploads(page).values() if r["path"] == path]
        return bool(offsets) and offsets[0] > 0

    wait_for(acknowledged, 30, f"a first part of {path} on the server", page=page.page)
    return offsets[0]


def throttle(page: BrowserPage, upload_bytes_per_second: int) -> CDPSession:
    cdp = page.context.new_cdp_session(page.page)
    cdp.send("Network.enable")
    set_network(cdp, upload=upload_bytes_per_second)
    return cdp


def set_network(cdp: CDPSession, *, upload: int = -1, offline: bool = False) -> None:
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload},
    )


class UploadRequests:
    """The page's requests to ``/api/uploads``: creations and each PATCH's ``Upload-Offset``."""

    def __init__(self, page: BrowserPage) -> None:
        self.creations: list[str] = []
        self.creation_headers: list[dict[str, str]] = []
        self.patch_offsets: list[int] = []
        self.deletes: list[str] = []
        page.page.on("request", self.record)

    def record(self, request: Request) -> None:
        if "/api/uploads" not in request.url:
            return
        if request.method == "POST":
            self.creations.append(request.url)
            self.creation_headers.append(request.headers)
        elif request.method == "PATCH":
            self.patch_offsets.append(int(request.headers["upload-offset"]))
        elif request.method == "DELETE":
            self.deletes.append(request.url)


def transfer_row(page: BrowserPage, name: str) -> Any:
    return page.page.locator(".transfer").filter(has_text=name)


def pick(page: BrowserPage, source: Path) -> None:
    page.page.set_input_files("#file-input", str(source))


def landed(server: SyncServer, name: str, digest: str) -> Callable[[], bool]:
    target = server.root / name
    # The server renames the finished file into place: once it exists, it is complete.
    return lambda: target.exists() and sha256_of(target) == digest


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, str]:
    source = tmp_path / "upload-source" / "movie.bin"
    source.parent.mkdir()
    return source, make_file(source, BIG)


# ---- tests -----------------------------------------------------------------------------------


def test_a_reload_mid_upload_resumes_when_the_file_is_picked_again(
    server: SyncServer, open_page: Callable[..., BrowserPage], big_file: tuple[Path, str]
) -> None:
    source, digest = big_file
    page = open_page(server)
    page.wait_live()
    page.page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" while uploading
    cdp = throttle(page, 8 * MiB)
    pick(page, source)
    record = stored_upload_of(page, "movie.bin")
    assert record["size"] == BIG
    row = transfer_row(page, "movie.bin")
    progress = row.get_by_role("progressbar", name="Upload of movie.bin")
    wait_for(
        lambda: 0 < float(progress.evaluate("bar => bar.value / bar.max")) < 1,
        30,
        "partial upload progress",
    )
    expect(row.locator(".transfer-status")).to_contain_text("%")
    wait_acknowledged(page, "movie.bin")

    page.page.reload()
    page.wait_live()
    at_reload = upload_offset(server, record["url"])
    assert at_reload is not None and 0 < at_reload < BIG
    assert not (server.root / "movie.bin").exists(), "nothing at the target before the end"
    row = transfer_row(page, "movie.bin")
    expect(row).to_have_attribute("data-state", "paused")
    expect(row.locator(".transfer-status")).to_contain_text("Paused at")
    expect(row.locator(".transfer-status")).to_contain_text("choose movie.bin again to resume")
    page.screenshot("resumable-paused")

    set_network(cdp)  # full speed for the rest
    requests = UploadRequests(page)
    with page.page.expect_file_chooser() as chooser:
        row.get_by_role("button", name="Resume upload of movie.bin").click()
    chooser.value.set_files(str(source))
    wait_for(landed(server, "movie.bin", digest), 60, "movie.bin on disk", page=page.page)

    assert requests.creations == [], "the upload continued, no new one was created"
    assert requests.patch_offsets, "the rest was sent with PATCH"
    resumed_at = requests.patch_offsets[0]
    assert resumed_at >= at_reload > 0
    sent_again = BIG - resumed_at
    assert sent_again < BIG
    assert stored_uploads(page) == {}, "a finished upload is forgotten"
    expect(row.locator(".transfer-status")).to_contain_text("Uploaded")
    expect(page.row("movie.bin")).to_be_visible()
    # Committed in the name of the client that created the upload: the page before the reload.
    expect(page.page.locator("#activity li").first).to_contain_text("created movie.bin")


def drop_file(page: BrowserPage, source: Path) -> None:
    """Drop a file from disk on the page (a real File, with its lastModified)."""
    page.page.evaluate(
        """() => {
            const input = document.createElement("input");
            input.type = "file";
            input.id = "test-drop-source";
            input.hidden = true;
            document.body.append(input);
        }"""
    )
    page.page.set_input_files("#test-drop-source", str(source))
    transfer = page.page.evaluate_handle(
        """() => {
            const data = new DataTransfer();
            data.items.add(document.getElementById("test-drop-source").files[0]);
            return data;
        }"""
    )
    files = page.page.locator("#files")
    for event in ("dragenter", "dragover", "drop"):
        files.dispatch_event(event, {"dataTransfer": transfer})
    transfer.dispose()


def test_after_a_reload_another_file_is_refused_and_dropping_the_same_one_resumes(
    server: SyncServer,
    open_page: Callable[..., BrowserPage],
    big_file: tuple[Path, str],
    tmp_path: Path,
) -> None:
    source, digest = big_file
    other = tmp_path / "upload-source" / "other.bin"
    make_file(other, THRESHOLD)
    page = open_page(server)
    page.wait_live()
    page.page.on("dialog", lambda dialog: dialog.accept())
    cdp = throttle(page, 8 * MiB)
    pick(page, source)
    record = stored_upload_of(page, "movie.bin")
    wait_acknowledged(page, "movie.bin")
    page.page.reload()
    page.wait_live()
    row = transfer_row(page, "movie.bin")
    expect(row).to_have_attribute("data-state", "paused")

    with page.page.expect_file_chooser() as chooser:
        row.get_by_role("button", name="Resume upload of movie.bin").click()
    chooser.value.set_files(str(other))
    expect(page.page.locator("#alerts")).to_contain_text(
        "That is not the file of this upload: choose “movie.bin”"
    )
    expect(row).to_have_attribute("data-state", "paused")
    assert upload_offset(server, record["url"]) is not None

    set_network(cdp)
    requests = UploadRequests(page)
    drop_file(page, source)
    wait_for(landed(server, "movie.bin", digest), 60, "movie.bin on disk", page=page.page)
    assert requests.creations == []
    assert requests.patch_offsets and requests.patch_offsets[0] > 0
    assert not (server.root / "other.bin").exists()
    assert stored_uploads(page) == {}


def test_a_network_drop_mid_upload_is_retried_and_completes(
    server: SyncServer, open_page: Callable[..., BrowserPage], big_file: tuple[Path, str]
) -> None:
    source, digest = big_file
    page = open_page(server)
    page.wait_live()
    requests = UploadRequests(page)
    cdp = throttle(page, 8 * MiB)
    pick(page, source)
    record = stored_upload_of(page, "movie.bin")
    acknowledged = wait_acknowledged(page, "movie.bin")

    set_network(cdp, offline=True)
    row = transfer_row(page, "movie.bin")
    expect(row.locator(".transfer-status")).to_contain_text("Connection lost", timeout=15_000)
    page.screenshot("resumable-retrying")
    before_drop = len(requests.patch_offsets)
    assert not (server.root / "movie.bin").exists()
    kept = upload_offset(server, record["url"])  # the page is offline: not sending now
    assert kept is not None and acknowledged <= kept < BIG

    set_network(cdp)
    wait_for(landed(server, "movie.bin", digest), 60, "movie.bin on disk", page=page.page)
    assert len(requests.creations) == 1, "the same upload continued"
    after = requests.patch_offsets[before_drop:]
    assert after and after[0] >= kept, "it went on from the server's offset, not from 0"
    expect(row.locator(".transfer-status")).to_contain_text("Uploaded")
    expect(page.page.locator("#activity li").first).to_contain_text("You created movie.bin")
    assert stored_uploads(page) == {}


def test_a_file_created_on_the_server_meanwhile_is_not_overwritten(
    server: SyncServer, open_page: Callable[..., BrowserPage], big_file: tuple[Path, str]
) -> None:
    """The upload of a new file carries If-None-Match: * from its creation: when someone else
    creates the file before the last part, the commit is refused and their file stays."""
    source, digest = big_file
    page = open_page(server)
    page.wait_live()
    requests = UploadRequests(page)
    cdp = throttle(page, 8 * MiB)
    pick(page, source)
    wait_acknowledged(page, "movie.bin")
    assert requests.creation_headers[0].get("if-none-match") == "*"
    assert "path=movie.bin" in requests.creations[0]
    theirs = server.root / "movie.bin"
    theirs.write_bytes(b"someone else's movie\n")

    set_network(cdp)
    row = transfer_row(page, "movie.bin")
    expect(row.locator(".transfer-status")).to_have_text(
        "Already exists on the server — not replaced", timeout=30_000
    )
    assert theirs.read_bytes() == b"someone else's movie\n"
    assert stored_uploads(page) == {}, "a refused upload cannot complete: it is forgotten"

    # "Replace anyway" sends it again without the precondition.
    expect(page.row("movie.bin")).to_be_visible()
    row.get_by_role("button", name="Replace anyway: movie.bin").click()
    wait_for(landed(server, "movie.bin", digest), 60, "our movie.bin on disk", page=page.page)
    assert len(requests.creations) == 2
    assert "if-none-match" not in requests.creation_headers[1]


def test_cancel_deletes_the_upload_on_the_server(
    server: SyncServer, open_page: Callable[..., BrowserPage], big_file: tuple[Path, str]
) -> None:
    source, _ = big_file
    page = open_page(server)
    page.wait_live()
    throttle(page, 8 * MiB)
    pick(page, source)
    record = stored_upload_of(page, "movie.bin")
    wait_acknowledged(page, "movie.bin")

    transfer_row(page, "movie.bin").get_by_role("button", name="Cancel upload of movie.bin").click()
    expect(transfer_row(page, "movie.bin")).to_have_count(0)
    wait_for(lambda: upload_offset(server, record["url"]) is None, 10, "the upload deleted")
    assert stored_uploads(page) == {}
    assert not (server.root / "movie.bin").exists()


def test_cancel_of_a_paused_upload_after_a_reload_deletes_it(
    server: SyncServer, open_page: Callable[..., BrowserPage], big_file: tuple[Path, str]
) -> None:
    source, _ = big_file
    page = open_page(server)
    page.wait_live()
    page.page.on("dialog", lambda dialog: dialog.accept())
    throttle(page, 8 * MiB)
    pick(page, source)
    record = stored_upload_of(page, "movie.bin")
    wait_acknowledged(page, "movie.bin")
    page.page.reload()
    page.wait_live()

    row = transfer_row(page, "movie.bin")
    expect(row).to_have_attribute("data-state", "paused")
    requests = UploadRequests(page)
    row.get_by_role("button", name="Cancel upload of movie.bin").click()
    expect(row).to_have_count(0)
    wait_for(lambda: upload_offset(server, record["url"]) is None, 10, "the upload deleted")
    assert requests.deletes == [record["url"]]
    assert stored_uploads(page) == {}
    page.page.reload()
    page.wait_live()
    expect(page.page.locator("#transfers-section")).to_be_hidden()


def test_a_server_without_resumable_uploads_gets_one_put(
    start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage], tmp_path: Path
) -> None:
    server = start_server()
    source = tmp_path / "nine.bin"
    digest = make_file(source, THRESHOLD + MiB)
    page = open_page(server)
    page.wait_live()
    methods: list[str] = []

    def no_uploads_route(route: Route) -> None:
        methods.append(route.request.method)
        route.fulfill(status=404, content_type="application/json", body='{"error":"Not found"}')

    page.page.route(re.compile(r".*/api/uploads(\?.*)?$"), no_uploads_route)
    pick(page, source)
    wait_for(landed(server, "nine.bin", digest), 30, "nine.bin on disk", page=page.page)
    assert methods == ["POST"]
    assert stored_uploads(page) == {}


def test_with_a_token_every_upload_request_carries_it(
    start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage], tmp_path: Path
) -> None:
    token = "resumable-token"
    server = start_server(tokens=[token])
    source = tmp_path / "nine.bin"
    digest = make_file(source, THRESHOLD + MiB)
    page = open_page(server)
    dialog = page.page.get_by_role("dialog", name="Access token required")
    dialog.get_by_label("Access token").fill(token)
    dialog.get_by_role("button", name="Sign in").click()
    page.wait_live()
    seen: list[tuple[str, str | None]] = []
    page.page.on(
        "request",
        lambda request: (
            seen.append((request.method, request.headers.get("authorization")))
            if "/api/uploads" in request.url
            else None
        ),
    )
    pick(page, source)
    wait_for(landed(server, "nine.bin", digest), 30, "nine.bin on disk", page=page.page)
    wait_for(lambda: len(seen) >= 3, what="the requests' events", page=page.page)
    assert [method for method, _ in seen] == ["POST", "PATCH", "PATCH"]
    assert {authorization for _, authorization in seen} == {f"Bearer {token}"}
