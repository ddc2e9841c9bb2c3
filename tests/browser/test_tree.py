"""The live file tree: initial listing, disk changes pushed over /ws, keyboard, narrow screens."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserPage, SyncServer

pytestmark = pytest.mark.browser


def test_page_shows_the_existing_tree(
    tmp_path: Path, start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    root = tmp_path / "sync-data"
    (root / "docs" / "notes").mkdir(parents=True)
    (root / "docs" / "notes" / "todo.md").write_text("# todo\n")
    (root / "docs" / "report.pdf").write_bytes(b"%PDF" * 300)
    (root / "photos").mkdir()
    (root / "readme.txt").write_text("hello\n")
    server = start_server(root=root)

    page = open_page(server)
    page.wait_live()

    tree = page.page.get_by_role("tree", name="Files")
    expect(tree).to_be_visible()
    for path, level in [
        ("docs", 1),
        ("docs/notes", 2),
        ("docs/notes/todo.md", 3),
        ("docs/report.pdf", 2),
        ("photos", 1),
        ("readme.txt", 1),
    ]:
        expect(page.row(path)).to_have_attribute("aria-level", str(level))
    # Folders first, then files, in name order; sizes in human units.
    paths = page.page.locator('li[role="treeitem"]').evaluate_all(
        "rows => rows.map(row => row.dataset.path)"
    )
    assert paths == [
        "docs",
        "docs/notes",
        "docs/notes/todo.md",
        "docs/report.pdf",
        "photos",
        "readme.txt",
    ]
    expect(page.row("docs/report.pdf").locator(".size")).to_have_text("1.2 KB")
    # Rows are named by the file name alone (size and date are descriptions).
    expect(tree.get_by_role("treeitem", name="todo.md", exact=True)).to_have_attribute(
        "aria-level", "3"
    )
    expect(page.row("docs")).to_have_attribute("aria-expanded", "true")
    page.screenshot("tree")


def test_a_file_written_on_disk_appears_within_a_second(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    page = open_page(server)
    page.wait_live()
    expect(page.page.locator("#tree-message")).to_have_text(
        "No files yet. Choose Upload or drop files here."
    )

    (server.root / "from-disk.txt").write_text("written directly into root\n")
    started = time.monotonic()
    expect(page.row("from-disk.txt")).to_be_visible(timeout=1_000)
    assert time.monotonic() - started < 1.0
    expect(page.page.locator("#activity li").first).to_contain_text("Server created")
    expect(page.page.locator("#activity li").first).to_contain_text("from-disk.txt")
    page.screenshot("live-disk-change")


def test_keyboard_operation_and_focus(
    tmp_path: Path, start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    root = tmp_path / "sync-data"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha" / "inner.txt").write_text("inner\n")
    (root / "beta.txt").write_text("beta\n")
    server = start_server(root=root)
    page = open_page(server)
    page.wait_live()
    expect(page.row("beta.txt")).to_be_visible()

    # Tab reaches the tree (one tab stop), focus is visible.
    focused_row = page.page.locator('li[role="treeitem"]:focus')
    for _ in range(15):
        page.page.keyboard.press("Tab")
        if focused_row.count():
            break
    expect(focused_row).to_have_attribute("data-path", "alpha")
    outline = focused_row.evaluate("row => getComputedStyle(row).outlineStyle")
    assert outline != "none"

    keyboard = page.page.keyboard
    keyboard.press("ArrowLeft")  # collapse alpha
    expect(page.row("alpha")).to_have_attribute("aria-expanded", "false")
    expect(page.row("alpha/inner.txt")).to_have_count(0)
    keyboard.press("ArrowRight")  # expand again
    keyboard.press("ArrowRight")  # into its first child
    expect(page.row("alpha/inner.txt")).to_be_focused()
    expect(page.row("alpha/inner.txt")).to_have_attribute("aria-selected", "true")
    expect(page.page.locator("#destination")).to_have_text("/alpha")
    keyboard.press("End")
    expect(page.row("beta.txt")).to_be_focused()
    expect(page.page.locator("#download-button")).to_be_enabled()
    keyboard.press("Home")
    expect(page.row("alpha")).to_be_focused()
    expect(page.page.locator("#download-button")).to_be_disabled()

    # F2 opens the rename dialog with the name (without extension) selected; Escape closes it.
    keyboard.press("ArrowDown")
    keyboard.press("F2")
    dialog = page.page.get_by_role("dialog", name="Rename or move file")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("New path")).to_be_focused()
    selected = page.page.evaluate(
        "() => { const i = document.activeElement;"
        " return i.value.slice(i.selectionStart, i.selectionEnd); }"
    )
    assert selected == "inner"
    keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert (root / "alpha" / "inner.txt").exists()


def test_narrow_screen(
    tmp_path: Path, start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    root = tmp_path / "sync-data"
    (root / "a folder with a rather long name" / "nested").mkdir(parents=True)
    (root / "a folder with a rather long name" / "nested" / "file.txt").write_text("x" * 5000)
    (root / "notes.md").write_text("# notes\n")
    server = start_server(root=root)

    page = open_page(server, viewport={"width": 360, "height": 740})
    page.wait_live()
    expect(page.row("notes.md")).to_be_visible()
    overflow = page.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "the page scrolls sideways on a narrow screen"
    expect(page.row("notes.md").locator(".modified")).to_be_hidden()
    for button in ["Upload", "New folder", "Download", "Rename / move", "Delete"]:
        expect(page.page.get_by_role("button", name=button)).to_be_visible()
    page.screenshot("narrow")


def test_not_found_page_links_to_the_browser(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    page = open_page(server, path=None)
    response = page.page.goto(f"{server.url}/no/such/page")
    assert response is not None
    assert response.status == 404
    page.page.locator('a[href="/"]').first.click()
    page.wait_live()
    expect(page.page).to_have_url(f"{server.url}/")
    expect(page.page.locator("#tree-message")).to_have_text(
        "No files yet. Choose Upload or drop files here."
    )
