"""File history in the page (static/history.js, docs/history.md): the versions of a file
(listed newest first, downloaded, restored) and the trash (listed, filtered, restored, restored
elsewhere after a conflict, emptied), both refreshed by the journaled ``Purge`` operation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, WebSocketRoute, expect

from tests.browser.conftest import BrowserPage, SyncServer, wait_for

pytestmark = pytest.mark.browser

TOKEN = "history-token"
OTHER = "laptop"  # the X-Quantum-Client of the changes this test makes through the API


# ---- helpers ---------------------------------------------------------------------------------


def call(server: SyncServer, method: str, path: str, payload: Any = None) -> Any:
    """A JSON API request from another client; returns the decoded answer (asserts a 2xx)."""
    headers = {"X-Quantum-Client": OTHER}
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    status, answer = server.request(method, path, body, headers)
    assert 200 <= status < 300, f"{method} {path}: {status} {answer!r}"
    return json.loads(answer) if answer else None


def put(server: SyncServer, path: str, data: bytes) -> None:
    status, answer = server.request("PUT", f"/api/files/{path}", data, {"X-Quantum-Client": OTHER})
    assert status in (200, 201), f"PUT {path}: {status} {answer!r}"


def delete(server: SyncServer, path: str) -> None:
    call(server, "DELETE", f"/api/files/{path}")


def version_ids(server: SyncServer, path: str) -> list[int]:
    return [version["id"] for version in call(server, "GET", f"/api/versions/{path}")["versions"]]


def trash_items(server: SyncServer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call(server, "GET", "/api/trash")["items"]
    return items


def received_operations(page: BrowserPage) -> list[dict[str, Any]]:
    """Every FileOperation the page's WebSockets receive (call before opening)."""
    operations: list[dict[str, Any]] = []

    def on_frame(payload: str | bytes) -> None:
        message = json.loads(payload)
        if message.get("type") == "FileOperation":
            operations.append(message["operation"])

    page.page.on("websocket", lambda socket: socket.on("framereceived", on_frame))
    return operations


class Panels:
    """The page's versions and trash panels."""

    def __init__(self, page: BrowserPage) -> None:
        self.page = page
        self.versions = page.page.locator("#versions-section")
        self.trash = page.page.locator("#trash-section")

    def version_items(self) -> Locator:
        return self.versions.locator("#versions-list > li")

    def trash_items(self) -> Locator:
        return self.trash.locator("#trash-list > li")

    def trash_item(self, path: str) -> Locator:
        return self.trash_items().filter(
            has=self.page.page.locator(".path", has_text=re.compile(f"^{re.escape(path)}$"))
        )

    def open_versions(self, path: str) -> None:
        self.page.row(path).click()
        self.page.page.get_by_role("button", name="Versions", exact=True).click()
        expect(self.versions).to_be_visible()
        expect(self.versions.get_by_role("heading")).to_have_text(f"Versions of {path}")
        expect(self.versions).not_to_have_attribute("aria-busy", "true")

    def open_trash(self) -> None:
        self.page.page.get_by_role("button", name="Trash", exact=True).click()
        expect(self.trash).to_be_visible()
        expect(self.trash).not_to_have_attribute("aria-busy", "true")

    def cancel(self, title: str) -> Locator:
        """Cancel the dialog ``title`` (Cancel has the focus); returns it for more checks."""
        dialog = self.page.page.get_by_role("dialog", name=title)
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        return dialog

    def confirm(self, title: str, button: str) -> None:
        dialog = self.page.page.get_by_role("dialog", name=title)
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name=button, exact=True).click()
        expect(dialog).to_be_hidden()


def three_edits(server: SyncServer, path: str = "notes.txt") -> None:
    """Create ``path`` and change it twice: two versions (8 B, then 4 B), 14 B live."""
    put(server, path, b"one\n")
    put(server, path, b"second!\n")
    put(server, path, b"third version\n")


# ---- versions --------------------------------------------------------------------------------


def test_versions_are_listed_newest_first_downloaded_and_restored(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    three_edits(server)
    older, newer = version_ids(server, "notes.txt")[::-1]
    page = open_page(server)
    page.wait_live()
    panels = Panels(page)
    expect(page.row("notes.txt").locator(".size")).to_have_text("14 B")

    panels.open_versions("notes.txt")
    items = panels.version_items()
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-id", str(newer))
    expect(items.nth(1)).to_have_attribute("data-id", str(older))
    expect(items.nth(0)).to_contain_text("8 B")
    expect(items.nth(1)).to_contain_text("4 B")
    expect(items.nth(0)).to_contain_text(f"by {OTHER}")
    expect(panels.versions.locator("#versions-current")).to_contain_text("Now: 14 B")
    expect(items.nth(0).locator("time")).to_have_attribute("datetime", re.compile(r"Z$"))
    page.screenshot("history-versions")

    # Download: the older version's bytes, under the file's name.
    with page.page.expect_download() as download_info:
        items.nth(1).get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_bytes() == b"one\n"

    # Restore asks first; Cancel changes nothing.
    items.nth(1).get_by_role("button", name="Restore").click()
    dialog = page.page.get_by_role("dialog", name="Restore this version?")
    expect(dialog).to_contain_text("“notes.txt” will be replaced for everyone")
    page.screenshot("history-confirm-restore")
    panels.cancel("Restore this version?")
    assert (server.root / "notes.txt").read_bytes() == b"third version\n"

    items.nth(1).get_by_role("button", name="Restore").click()
    panels.confirm("Restore this version?", "Restore")
    wait_for(
        lambda: (server.root / "notes.txt").read_bytes() == b"one\n",
        what="the restored content on disk",
    )
    # The restore's Update reaches the tree like any other change, and what it replaced is
    # now the newest version.
    expect(page.row("notes.txt").locator(".size")).to_have_text("4 B")
    expect(page.page.locator("#activity li").first).to_contain_text("updated notes.txt")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("14 B")
    expect(items.nth(0)).to_contain_text("by you")
    expect(panels.versions.locator("#versions-current")).to_contain_text("Now: 4 B")
    page.screenshot("history-restored")


def test_load_more_follows_the_next_cursor(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    for number in range(52):  # 51 versions: one page of 50 (PAGE_SIZE in history.js) and one
        put(server, "busy.txt", b"x" * (number + 1))
    page = open_page(server)
    page.wait_live()
    panels = Panels(page)
    panels.open_versions("busy.txt")
    items = panels.version_items()
    expect(items).to_have_count(50)
    expect(items.first).to_contain_text("51 B")
    more = panels.versions.get_by_role("button", name="Load more")
    more.click()
    expect(items).to_have_count(51)
    expect(items.last).to_contain_text("1 B")
    expect(more).to_be_hidden()


def test_a_version_download_carries_the_token(
    start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    server = start_server(tokens=[TOKEN])
    three_edits(server)
    page = open_page(server)
    dialog = page.page.get_by_role("dialog", name="Access token required")
    dialog.get_by_label("Access token").fill(TOKEN)
    dialog.get_by_role("button", name="Sign in").click()
    page.wait_live()
    panels = Panels(page)
    panels.open_versions("notes.txt")
    items = panels.version_items()
    expect(items).to_have_count(2)
    with page.page.expect_download() as download_info:
        items.nth(0).get_by_role("link", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_bytes() == b"second!\n"


def test_a_purge_refreshes_the_open_version_list_and_trash(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    three_edits(server)
    put(server, "gone.txt", b"deleted\n")
    delete(server, "gone.txt")
    older, newer = version_ids(server, "notes.txt")[::-1]
    page = open_page(server, path=None)
    operations = received_operations(page)
    page.open()
    page.wait_live()
    panels = Panels(page)
    panels.open_versions("notes.txt")
    panels.open_trash()
    expect(panels.version_items()).to_have_count(2)
    expect(panels.trash_item("gone.txt")).to_have_count(1)

    assert call(server, "DELETE", f"/api/versions/notes.txt?version={older}") == {"purged": 1}
    expect(panels.version_items()).to_have_count(1)
    expect(panels.version_items().first).to_have_attribute("data-id", str(newer))
    purges = [operation["Purge"] for operation in operations if "Purge" in operation]
    assert purges and "notes.txt" in purges[-1]["paths"]

    (item,) = trash_items(server)
    call(server, "DELETE", "/api/trash", {"ids": [item["id"]]})
    expect(panels.trash_items()).to_have_count(0)
    expect(panels.trash.get_by_role("status")).to_have_text("The trash is empty.")

    # The page still follows live changes after the Purges.
    put(server, "notes.txt", b"after the purge\n")
    expect(page.row("notes.txt").locator(".size")).to_have_text("16 B")
    expect(panels.version_items()).to_have_count(2)


def test_unknown_operation_kinds_are_ignored(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    put(server, "kept.txt", b"kept\n")
    page = open_page(server, path=None)
    routes: list[WebSocketRoute] = []

    def route(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        routes.append(socket)

    page.context.route_web_socket(re.compile(r"/ws$"), route)
    page.open()
    page.wait_live()
    panels = Panels(page)
    panels.open_versions("kept.txt")
    for operation in (
        {"Frobnicate": {"path": "kept.txt"}},
        {"Purge": {"paths": ["kept.txt"], "versions": 0, "trash": 0}},
        {},
        None,
    ):
        routes[-1].send(
            json.dumps({"type": "FileOperation", "operation": operation, "source_client": None})
        )
    put(server, "after.txt", b"after\n")
    expect(page.row("after.txt")).to_be_visible()
    expect(page.row("kept.txt")).to_be_visible()
    expect(page.page.locator("#activity")).not_to_contain_text("Frobnicate")
    assert page.errors == []


# ---- trash -----------------------------------------------------------------------------------


def test_the_trash_lists_deleted_files_and_folders_and_restores_them(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    put(server, "report.txt", b"quarterly report\n")
    put(server, "photos/a.jpg", b"a" * 1000)
    put(server, "photos/b.jpg", b"b" * 2000)
    page = open_page(server)
    page.wait_live()
    expect(page.row("photos/b.jpg")).to_be_visible()
    delete(server, "report.txt")
    delete(server, "photos")
    expect(page.row("photos")).to_have_count(0)
    expect(page.row("report.txt")).to_have_count(0)

    panels = Panels(page)
    panels.open_trash()
    items = panels.trash_items()
    expect(items).to_have_count(2)
    expect(items.nth(0).locator(".path")).to_have_text("photos")  # deleted last: first
    expect(items.nth(1).locator(".path")).to_have_text("report.txt")
    photos = panels.trash_item("photos")
    expect(photos).to_contain_text("folder")
    expect(photos).to_contain_text("2 files")
    expect(photos).to_contain_text("2.9 KB")
    expect(photos).to_contain_text(f"by {OTHER}")
    expect(photos.locator("time")).to_contain_text("deleted ")
    expect(panels.trash.locator("#trash-usage-text")).to_contain_text("History stores")
    expect(panels.trash.locator("#trash-usage-text")).to_contain_text("allowed")
    page.screenshot("history-trash")

    # The filter keeps the items at a path or below it (the server's `prefix` is a subtree).
    path_filter = panels.trash.get_by_label("Only in folder (or at path)")
    path_filter.fill("report.txt")
    expect(items).to_have_count(1)
    expect(items.first.locator(".path")).to_have_text("report.txt")
    path_filter.fill("rep")
    status = panels.trash.get_by_role("status")
    expect(status).to_have_text("Nothing in the trash is in or at “rep”.")
    path_filter.fill("")
    expect(items).to_have_count(2)

    photos.get_by_role("button", name="Restore", exact=True).click()
    wait_for(
        lambda: (
            (server.root / "photos" / "b.jpg").exists()
            and (server.root / "photos" / "a.jpg").read_bytes() == b"a" * 1000
        ),
        what="the restored folder on disk",
    )
    expect(page.row("photos")).to_be_visible()
    page.row("photos").locator(".twisty").click()  # a deleted folder comes back closed
    expect(page.row("photos/a.jpg")).to_be_visible()
    expect(page.row("photos/b.jpg")).to_be_visible()
    expect(items).to_have_count(1)
    expect(items.first.locator(".path")).to_have_text("report.txt")
    assert not (server.root / "report.txt").exists()


def test_a_taken_path_is_a_conflict_and_restore_to_puts_it_elsewhere(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    put(server, "notes.txt", b"the old notes\n")
    delete(server, "notes.txt")
    put(server, "notes.txt", b"new notes\n")
    page = open_page(server)
    page.wait_live()
    panels = Panels(page)
    panels.open_trash()
    item = panels.trash_item("notes.txt")
    expect(item).to_have_count(1)

    item.get_by_role("button", name="Restore", exact=True).click()
    expect(item.locator(".conflict")).to_have_text("Not restored: “notes.txt” already exists.")
    assert (server.root / "notes.txt").read_bytes() == b"new notes\n"
    page.screenshot("history-trash-conflict")

    item.get_by_role("button", name="Restore to…").click()
    dialog = page.page.get_by_role("dialog", name="Restore to another path")
    field = dialog.get_by_label("Restore “notes.txt” as")
    expect(field).to_have_value("notes.txt")
    dialog.get_by_role("button", name="Restore").click()
    expect(dialog.locator("#text-error")).to_have_text("“notes.txt” already exists.")
    field.fill("old-notes.txt")
    dialog.get_by_role("button", name="Restore").click()
    expect(dialog).to_be_hidden()
    wait_for(lambda: (server.root / "old-notes.txt").exists(), what="the item restored elsewhere")
    assert (server.root / "old-notes.txt").read_bytes() == b"the old notes\n"
    assert (server.root / "notes.txt").read_bytes() == b"new notes\n"
    expect(page.row("old-notes.txt")).to_be_visible()
    expect(panels.trash_items()).to_have_count(0)
    assert trash_items(server) == []


def test_empty_trash_asks_then_purges_everything(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        put(server, name, name.encode())
        delete(server, name)
    page = open_page(server)
    page.wait_live()
    panels = Panels(page)
    panels.open_trash()
    expect(panels.trash_items()).to_have_count(3)
    expect(panels.trash.locator("#trash-usage-text")).to_contain_text("3 in the trash")

    panels.trash.get_by_role("button", name="Empty trash").click()
    dialog = page.page.get_by_role("dialog", name="Empty the trash?")
    expect(dialog).to_contain_text("cannot be undone")
    page.screenshot("history-confirm-empty-trash")
    panels.cancel("Empty the trash?")
    assert len(trash_items(server)) == 3

    panels.trash.get_by_role("button", name="Empty trash").click()
    panels.confirm("Empty the trash?", "Empty trash")
    expect(panels.trash_items()).to_have_count(0)
    expect(panels.trash.get_by_role("status")).to_have_text("The trash is empty.")
    expect(panels.trash.locator("#trash-usage-text")).to_contain_text("0 in the trash")
    expect(panels.trash.get_by_role("button", name="Empty trash")).to_be_disabled()
    assert trash_items(server) == []
