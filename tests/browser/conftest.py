"""Real headless Chromium (Debian's ``chromium``) driven by Playwright against a real Quantum.

The server is ``quantum run`` on ``configs/sync-config.json`` (moved to a free port and a
temporary root, admin disabled), so the page is reached exactly as a user reaches it: ``/`` is
contributed by the file_sync handler even though the config only routes ``/api/*`` and ``/ws``.
Screenshots of the main states go to ``test-artifacts/browser/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    expect,
    sync_playwright,
)

from tests.support.processes import QuantumProcess, free_port

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "configs" / "sync-config.json"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

expect.set_options(timeout=5_000)


def launch(playwright: Playwright, *extra_args: str) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*LAUNCH_ARGS, *extra_args]
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (install Debian's chromium package)")
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium package)")
    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = launch(playwright)
    yield instance
    instance.close()


# ---- the server ------------------------------------------------------------------------------


def sync_config(root: Path, port: int, *, tokens: list[str] | None = None) -> dict[str, Any]:
    """The seed's config, verbatim except for where it listens, what it serves and auth."""
    config: dict[str, Any] = json.loads(SEED_CONFIG.read_text())
    server = config["apps"]["http"]["servers"]["file_sync_server"]
    server["listen"] = [f"127.0.0.1:{port}"]
    handler = server["routes"][0]["handle"][0]
    handler["root"] = str(root)
    if tokens:
        handler["auth"] = {"tokens": tokens}
    config["admin"] = {"disabled": True}
    return config


@dataclass
class SyncServer:
    root: Path
    process: QuantumProcess
    tokens: list[str] | None = None

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> SyncServer:
        self.process.start()
        self.wait_ready()
        return self

    def stop(self) -> None:
        self.process.stop()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/list", timeout=2):
                    return
            except urllib.error.HTTPError as error:
                error.close()
                if error.code == 401 and self.tokens:
                    return
                if time.monotonic() > deadline:
                    raise
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready:\n{self.process.logs()}") from None
            time.sleep(0.05)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """A plain HTTP client (another user of the server, not the page)."""
        all_headers = dict(headers or {})
        if self.tokens:
            all_headers.setdefault("Authorization", f"Bearer {self.tokens[0]}")
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        for name, value in all_headers.items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., SyncServer]]:
    """Start ``quantum run`` on the seed config; every server started is stopped at teardown."""
    started: list[SyncServer] = []

    def start(
        *, tokens: list[str] | None = None, root: Path | None = None, port: int | None = None
    ) -> SyncServer:
        root = root or tmp_path / "sync-data"
        root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        process = QuantumProcess(
            sync_config(root, port, tokens=tokens), tmp_path, port=port, name=f"q{len(started)}"
        )

        server = SyncServer(root, process, tokens)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., SyncServer]) -> SyncServer:
    return start_server()


# ---- pages -----------------------------------------------------------------------------------


@dataclass
class BrowserPage:
    """A page in its own context (own sessionStorage), with what it logged and fetched."""

    page: Page
    context: BrowserContext
    origin: str
    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, path: str = "/") -> BrowserPage:
        self.page.goto(f"{self.origin}{path}")
        return self

    def wait_live(self) -> None:
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "live")

    def row(self, path: str) -> Any:
        return self.page.locator(f'li[role="treeitem"][data-path="{path}"]')

    def client_id(self) -> str:
        return self.page.locator("#client-id").inner_text()

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


def keep_evidence(handle: BrowserPage, name: str) -> None:
    """After a failed test: the page's screenshot and console, for whoever reads CI logs."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lines = [f"{message.type}: {message.text}" for message in handle.console]
    lines += [f"pageerror: {error}" for error in handle.errors]
    (ARTIFACTS / f"FAILED-{name}.log").write_text("\n".join(lines) + "\n")
    with contextlib.suppress(Exception):
        handle.page.screenshot(path=ARTIFACTS / f"FAILED-{name}.png", full_page=True)


@pytest.fixture
def open_page(
    browser: Browser, request: pytest.FixtureRequest
) -> Iterator[Callable[..., BrowserPage]]:
    """Open pages; at teardown, fail on uncaught page errors or any request off the server."""
    opened: list[BrowserPage] = []

    def open_(
        server: SyncServer,
        *,
        path: str | None = "/",
        viewport: dict[str, int] | None = None,
        using: Browser | None = None,
        origin: str | None = None,
    ) -> BrowserPage:
        """Open ``path`` of ``server`` in a new context (``path=None``: call ``.open()`` later)."""
        context = (using or browser).new_context(
            viewport=viewport or {"width": 1280, "height": 800}, accept_downloads=True
        )
        page = context.new_page()
        handle = BrowserPage(page, context, origin or server.url)
        page.on("console", lambda message: handle.console.append(message))
        page.on("pageerror", lambda error: handle.errors.append(str(error)))

        def record(request: Request) -> None:
            handle.requests.append(request.url)

        page.on("request", record)
        opened.append(handle)
        return handle if path is None else handle.open(path)

    yield open_
    problems: list[str] = []
    failed = request.node.stash.get(CALL_FAILED, False)
    for number, handle in enumerate(opened):
        if failed:
            keep_evidence(handle, f"{request.node.name}-{number}")
        problems += [f"page error: {error}" for error in handle.errors]
        own = re.compile(rf"^(https?|wss?)://{re.escape(handle.origin.split('://', 1)[1])}/")
        problems += [
            f"request off the server: {url}"
            for url in handle.requests
            if not own.match(url) and not url.startswith(("blob:", "data:"))
        ]
        handle.context.close()
    assert not problems, "\n".join(problems)


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    what: str = "condition",
    *,
    page: Page | None = None,
) -> None:
    """Poll ``predicate``. Pass ``page`` when it reads state fed by Playwright events: the sync
    API only dispatches them while a Playwright call is running."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if page is None:
            time.sleep(0.02)
        else:
            page.wait_for_timeout(20)
