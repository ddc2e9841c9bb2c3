"""Token auth in the page: asked for on 401, kept for the tab only, sent on HTTP and /ws."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Request, WebSocket, expect

from tests.browser.conftest import BrowserPage, SyncServer, wait_for

pytestmark = pytest.mark.browser

TOKEN = "correct-horse-battery-staple"


def test_token_is_asked_for_kept_for_the_session_and_sent(
    start_server: Callable[..., SyncServer], open_page: Callable[..., BrowserPage]
) -> None:
    server = start_server(tokens=[TOKEN])
    (server.root / "secret.txt").write_text("only with a token\n")
    page = open_page(server, path=None)
    frames: list[dict[str, Any]] = []
    authorizations: list[str | None] = []

    def on_socket(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    def on_request(request: Request) -> None:
        if "/api/" in request.url:
            authorizations.append(request.headers.get("authorization"))

    page.page.on("websocket", on_socket)
    page.page.on("request", on_request)
    page.open()

    dialog = page.page.get_by_role("dialog", name="Access token required")
    expect(dialog).to_be_visible()
    token_input = dialog.get_by_label("Access token")
    expect(token_input).to_be_focused()
    page.screenshot("token-prompt")

    token_input.fill("wrong-token")
    dialog.get_by_role("button", name="Sign in").click()
    expect(dialog.locator("#token-error")).to_have_text("That token was not accepted. Try again.")
    token_input.fill(TOKEN)
    dialog.get_by_role("button", name="Sign in").click()
    expect(dialog).to_be_hidden()
    page.wait_live()
    expect(page.row("secret.txt")).to_be_visible()

    assert f"Bearer {TOKEN}" in authorizations
    subscribe = [frame for frame in frames if frame["type"] == "Subscribe"][-1]
    assert subscribe["token"] == TOKEN
    assert page.page.evaluate("sessionStorage.getItem('quantum.token')") == TOKEN
    assert page.page.evaluate("localStorage.length") == 0

    # Uploads and downloads carry the token too.
    page.page.set_input_files(
        "#file-input", files=[{"name": "up.txt", "mimeType": "text/plain", "buffer": b"up\n"}]
    )
    wait_for(lambda: (server.root / "up.txt").exists(), what="authorised upload")
    page.row("secret.txt").click()
    with page.page.expect_download() as download_info:
        page.page.get_by_role("button", name="Download").click()
    assert download_info.value.suggested_filename == "secret.txt"

    # Same tab, reloaded: no prompt. A new session (context): asked again.
    page.page.reload()
    page.wait_live()
    expect(dialog).to_be_hidden()
    other = open_page(server)
    expect(other.page.get_by_role("dialog", name="Access token required")).to_be_visible()
    other.page.get_by_role("button", name="Cancel").click()
    expect(other.page.get_by_role("status")).to_have_text("Sign-in required")
    expect(other.page.get_by_role("button", name="Enter token")).to_be_visible()
