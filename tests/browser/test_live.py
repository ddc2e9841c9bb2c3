"""Live updates between pages, reconnection with catch-up, and the seed's browser snippet."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Playwright,
    WebSocket,
    WebSocketRoute,
    expect,
)

from tests.browser.conftest import BrowserPage, SyncServer, launch, wait_for

pytestmark = pytest.mark.browser

# The "Web Browser Client" example of seed/websocket-sync-guide.md, verbatim.
SEED_SNIPPET = """\
// Connect to WebSocket endpoint
const ws = new WebSocket('ws://localhost:8080/ws');
// Register for updates
ws.onopen = () => {
  ws.send(JSON.stringify({ type: "Subscribe", client_id: "browser-client-123" }));
};
// Handle file operation broadcasts
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  if (message.type === "FileOperation") {
    console.log("File changed:", message.operation);
    // Update UI with real-time changes
  }
};
"""


def sent_frames(page: BrowserPage) -> list[dict[str, Any]]:
    """Record every JSON frame the page sends on its WebSockets (call before opening)."""
    frames: list[dict[str, Any]] = []

    def on_socket(socket: WebSocket) -> None:
        socket.on("framesent", lambda payload: frames.append(json.loads(payload)))

    page.page.on("websocket", on_socket)
    return frames


def seconds_until_retry(page: BrowserPage) -> int:
    """The countdown next to "Offline — reconnecting" ("in 3 s"), 0 when there is none."""
    match = re.fullmatch(r"in (\d+) s", page.page.locator("#connection-detail").inner_text())
    return int(match[1]) if match else 0


def upload(page: BrowserPage, name: str, data: bytes) -> None:
    page.page.set_input_files(
        "#file-input", files=[{"name": name, "mimeType": "text/plain", "buffer": data}]
    )


def test_two_pages_see_each_others_changes(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    first = open_page(server)
    second = open_page(server)
    first.wait_live()
    second.wait_live()
    first_id, second_id = first.client_id(), second.client_id()
    assert first_id != second_id

    upload(first, "from-first.txt", b"hello from the first page\n")
    expect(second.row("from-first.txt")).to_be_visible()
    latest = second.page.locator("#activity li").first
    expect(latest).to_contain_text(f"{first_id} created")
    expect(latest).to_contain_text("from-first.txt")

    second.row("from-first.txt").click()
    second.page.get_by_role("button", name="Delete").click()
    second.page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(first.row("from-first.txt")).to_have_count(0)
    expect(first.page.locator("#activity li").first).to_contain_text(f"{second_id} deleted")
    assert not (server.root / "from-first.txt").exists()
    second.screenshot("activity")


def test_reconnects_and_catches_up_with_what_it_missed(
    server: SyncServer, open_page: Callable[..., BrowserPage]
) -> None:
    page = open_page(server, path=None)
    frames = sent_frames(page)
    # Route /ws through Playwright so the test can cut the page's connection (a network drop)
    # while the server keeps running; connected routes pass every frame through unchanged.
    cut_off = False
    routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    def route(socket: WebSocketRoute) -> None:
        if cut_off:
            socket.close()
            return
        routes.append((socket, socket.connect_to_server()))

    page.context.route_web_socket(re.compile(r"/ws$"), route)
    page.open()
    page.wait_live()
    upload(page, "before.txt", b"before\n")
    expect(page.row("before.txt")).to_be_visible()

    cut_off = True
    for page_side, server_side in routes:
        page_side.close()
        server_side.close()
    expect(page.page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(page.page.get_by_role("status")).to_have_text("Offline — reconnecting")
    page.screenshot("offline")

    status, _ = server.request("PUT", "/api/files/while-away.txt", b"missed while offline\n")
    assert status == 201
    subscribes = [frame for frame in frames if frame["type"] == "Subscribe"]
    last_seen = subscribes[0]["since"]

    # Refused reconnections back off (0.5 s, 1 s, 2 s, ...): once the next try is seconds away,
    # let the network back and skip the wait with "Retry now".
    wait_for(
        lambda: seconds_until_retry(page) >= 2,
        what="a retry at least a second away",
        page=page.page,
    )
    cut_off = False
    page.page.get_by_role("button", name="Retry now").click()
    page.wait_live()
    expect(page.row("while-away.txt")).to_be_visible()
    resumed = [frame for frame in frames if frame["type"] == "Subscribe"][-1]
    assert resumed["since"]["epoch"] == last_seen["epoch"]
    assert resumed["since"]["seq"] > last_seen["seq"], "catch-up must resume after 'before.txt'"
    expect(page.page.locator("#activity li").first).to_contain_text("Server created")


@pytest.fixture
def localhost_8080(playwright: Playwright, server: SyncServer) -> Iterator[Browser]:
    """A browser in which ``localhost:8080`` (the snippet's hard-coded address) is the server."""
    browser = launch(
        playwright, f"--host-resolver-rules=MAP localhost:8080 127.0.0.1:{server.port}"
    )
    yield browser
    browser.close()


def test_seed_snippet_logs_file_changed_for_an_upload(
    server: SyncServer, open_page: Callable[..., BrowserPage], localhost_8080: Browser
) -> None:
    page = open_page(server, using=localhost_8080, origin="http://localhost:8080")
    page.wait_live()
    received: list[str] = []
    sockets: list[WebSocket] = []

    def on_socket(socket: WebSocket) -> None:  # only the snippet's: the page's is already open
        sockets.append(socket)
        socket.on("framereceived", lambda payload: received.append(str(payload)))

    page.page.on("websocket", on_socket)
    # Evaluated the way the DevTools console does (a Playwright `evaluate` would call the
    # function the snippet's last statement evaluates to).
    console = page.context.new_cdp_session(page.page)
    result = console.send("Runtime.evaluate", {"expression": SEED_SNIPPET, "replMode": True})
    assert "exceptionDetails" not in result, result
    console.detach()
    wait_for(
        lambda: any('"Ack"' in frame for frame in received),
        what="the snippet's Ack",
        page=page.page,
    )
    assert [socket.url for socket in sockets] == ["ws://localhost:8080/ws"]

    with page.page.expect_console_message(
        lambda message: message.text.startswith("File changed:")
    ) as message_info:
        upload(page, "seen-by-snippet.txt", b"snippet\n")
    message: ConsoleMessage = message_info.value
    operation = message.args[1].json_value()
    assert operation == {"Create": {"metadata": operation["Create"]["metadata"]}}
    assert operation["Create"]["metadata"]["path"] == "seen-by-snippet.txt"
    wait_for(lambda: (server.root / "seen-by-snippet.txt").exists(), what="uploaded file")
