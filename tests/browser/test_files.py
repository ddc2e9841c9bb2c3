"""Changing files through the page: upload (picker, drag-and-drop), download, rename/move,
delete, new folder — each checked on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserPage, SyncServer, wait_for

pytestmark = pytest.mark.browser


def test_upload_with_the_picker_shows_progress_and_lands_with_identical_bytes(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    page = open_page(server)
    page.wait_live()
    data = os.urandom(3 * 1024 * 1024 + 17)
    # Throttle the upload so progress is observable (about 2 s for 3 MiB).
    cdp = page.context.new_cdp_session(page.page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1_600_000},
    )

    page.page.set_input_files(
        "#file-input",
        files=[{"name": "big.bin", "mimeType": "application/octet-stream", "buffer": data}],
    )
    transfer = page.page.locator(".transfer").filter(has_text="big.bin")
    progress = transfer.get_by_role("progressbar", name="Upload of big.bin")
    wait_for(
        lambda: 0 < float(progress.evaluate("bar => bar.value / bar.max")) < 1,
        what="partial upload progress",
    )
    expect(transfer.locator(".transfer-status")).to_contain_text("%")
    page.screenshot("upload-progress")

    target = server.root / "big.bin"
    wait_for(lambda: target.exists() and target.read_bytes() == data, 15, "big.bin on disk")
    cdp.detach()
    expect(page.row("big.bin")).to_be_visible()
    expect(transfer.locator(".transfer-status")).to_contain_text("Uploaded")
    expect(page.page.locator("#activity li").first).to_contain_text("You created")


def test_drag_and_drop_onto_a_folder_uploads_into_it(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    (server.root / "inbox").mkdir()
    page = open_page(server)
    page.wait_live()
    folder = page.row("inbox")
    expect(folder).to_be_visible()

    content = bytes(range(256)) * 4
    transfer = page.page.evaluate_handle(
        """bytes => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "dropped.bin"));
            return data;
        }""",
        list(content),
    )
    folder.dispatch_event("dragenter", {"dataTransfer": transfer})
    folder.dispatch_event("dragover", {"dataTransfer": transfer})
    expect(page.page.locator("#drop-hint")).to_contain_text("Drop to upload to /inbox")
    expect(folder).to_have_class("row folder drop-target")
    page.screenshot("drag-and-drop")
    folder.dispatch_event("drop", {"dataTransfer": transfer})
    transfer.dispose()

    target = server.root / "inbox" / "dropped.bin"
    wait_for(lambda: target.exists() and target.read_bytes() == content, what="dropped file")
    expect(page.page.locator("#drop-hint")).to_be_hidden()
    expect(page.row("inbox/dropped.bin")).to_be_visible()


def test_download(server: SyncServer, open_page: Callable[..., BrowserPage]) -> None:
    content = os.urandom(70_000)
    (server.root / "data.bin").write_bytes(content)
    page = open_page(server)
    page.wait_live()
    page.row("data.bin").click()
    with page.page.expect_download() as download_info:
        page.page.get_by_role("button", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == "data.bin"
    assert Path(download.path()).read_bytes() == content


def test_rename_move_new_folder_and_delete_change_the_disk(
    tmp_path: Path, start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    root = tmp_path / "sync-data"
    (root / "archive").mkdir(parents=True)
    (root / "draft.txt").write_text("first draft\n")
    server = start_server(root=root)
    page = open_page(server)
    page.wait_live()

    # Rename + move into a folder in one go.
    page.row("draft.txt").click()
    page.page.get_by_role("button", name="Rename / move").click()
    dialog = page.page.get_by_role("dialog", name="Rename or move file")
    dialog.get_by_label("New path").fill("archive/final.txt")
    page.screenshot("rename")
    dialog.get_by_role("button", name="Rename").click()
    wait_for(lambda: (root / "archive" / "final.txt").exists(), what="moved file")
    assert not (root / "draft.txt").exists()
    assert (root / "archive" / "final.txt").read_text() == "first draft\n"
    moved = page.row("archive/final.txt")
    expect(moved).to_have_attribute("aria-selected", "true")
    expect(page.row("draft.txt")).to_have_count(0)

    # New folder, created in the selected file's folder.
    page.page.get_by_role("button", name="New folder").click()
    dialog = page.page.get_by_role("dialog", name="New folder")
    dialog.get_by_label("Name of the new folder in /archive").fill("2024")
    dialog.get_by_role("button", name="Create").click()
    wait_for(lambda: (root / "archive" / "2024").is_dir(), what="new folder")
    expect(page.row("archive/2024")).to_have_attribute("aria-selected", "true")

    # Renaming a folder (keyboard: F2) takes its content along, on disk and in the tree.
    page.row("archive").click()
    page.page.keyboard.press("F2")
    dialog = page.page.get_by_role("dialog", name="Rename or move folder")
    dialog.get_by_label("New path").fill("past")
    page.page.keyboard.press("Enter")
    wait_for(lambda: (root / "past" / "final.txt").exists(), what="renamed folder")
    assert not (root / "archive").exists()
    assert (root / "past" / "2024").is_dir()
    expect(page.row("past/final.txt")).to_be_visible()
    expect(page.row("past/2024")).to_be_visible()
    expect(page.row("archive/final.txt")).to_have_count(0)
    expect(page.row("past")).to_be_focused()

    # Delete asks first; Cancel keeps the file.
    moved = page.row("past/final.txt")
    moved.click()
    page.page.keyboard.press("Delete")
    confirm = page.page.get_by_role("dialog", name="Delete file?")
    expect(confirm).to_contain_text("“past/final.txt” will be deleted for everyone.")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    page.screenshot("confirm-delete")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    assert (root / "past" / "final.txt").exists()

    page.page.get_by_role("button", name="Delete").click()
    confirm.get_by_role("button", name="Delete").click()
    wait_for(lambda: not (root / "past" / "final.txt").exists(), what="deleted file")
    expect(page.row("past/final.txt")).to_have_count(0)

    # A folder goes with its content.
    page.row("past").click()
    page.page.get_by_role("button", name="Delete").click()
    confirm = page.page.get_by_role("dialog", name="Delete folder?")
    expect(confirm).to_contain_text("“past” and everything in it will be deleted for everyone.")
    confirm.get_by_role("button", name="Delete").click()
    wait_for(lambda: not (root / "past").exists(), what="deleted folder")
    expect(page.row("past/2024")).to_have_count(0)
    expect(page.page.locator("#tree-message")).to_be_visible()

    activity = page.page.locator("#activity")
    expect(activity).to_contain_text("You deleted folder past")
    expect(activity).to_contain_text("You renamed folder archive → past")
    expect(activity).to_contain_text("You moved draft.txt → archive/final.txt")
