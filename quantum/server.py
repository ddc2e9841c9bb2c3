"""Listeners: one aiohttp server per listen address, dispatching to whichever configured
server currently owns that address (so a reload swaps routes without closing the socket)."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import structlog
from aiohttp import HttpVersion11, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from quantum.access_log import AccessLog
from quantum.config import ServerConfig, TLSConfig
from quantum.handler import HANDLER_ERROR_KEY, HandlerError
from quantum.handlers.responses import BareResponse
from quantum.listen import ListenAddress
from quantum.matchers import has_malformed_escapes
from quantum.observe import HttpMetrics
from quantum.provision import BuiltServer
from quantum.routing import HANDLER_NAME_KEY

log = structlog.get_logger("quantum.server")

IDLE_POLL = 0.01
"""Seconds between checks for in-flight requests during a graceful shutdown."""
WRITTEN_AT_ONCE = 2**16
"""Bodies up to this size go to the transport without waiting for the client (aiohttp's
write buffer limit)."""

NOT_FOUND_HTML = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>404 Not Found</title>"
    "</head><body><h1>404 Not Found</h1><p>Nothing is configured to answer this path.</p>"
    '<p><a href="/">Go to the start page</a></p></body></html>'
)


def error_response(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status)


async def not_found(request: web.Request) -> web.StreamResponse:
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(status=404, text=NOT_FOUND_HTML, content_type="text/html")
    return error_response(404, f"no route for {request.method} {request.path}", "not_found")


async def _expect(request: web.Request) -> None:
    """``Expect: 100-continue`` (curl sends it before large uploads): tell the client to go on
    (aiohttp's router did this; the low-level server leaves it to us)."""
    if request.version != HttpVersion11:
        return
    if request.headers[hdrs.EXPECT].lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers[hdrs.EXPECT]}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    return web.Response(status=exc.status, reason=exc.reason, text=exc.text, headers=exc.headers)


async def _unrouted(request: web.Request) -> web.StreamResponse:
    """With ``errors`` routes, a request no route answered is an error they can answer too."""
    raise HandlerError(404, f"no route for {request.method} {request.path}")


def unanswered_error(error: HandlerError) -> web.Response:
    """What the client gets for ``error`` when no ``errors`` route answers it (as Caddy)."""
    return BareResponse(status=error.status, headers=error.headers)


async def _answer_error(
    server: BuiltServer, request: web.Request, error: HandlerError
) -> web.StreamResponse:
    """Caddy's error handling: the server's ``errors`` routes answer; when they answer nothing
    (or fail themselves), the client gets the error's status and headers with an empty body."""
    plain = unanswered_error(error)
    routes = server.error_routes
    if routes is None:
        return plain

    async def unanswered(_: web.Request) -> web.StreamResponse:
        return plain

    request[HANDLER_ERROR_KEY] = error
    try:
        response = await routes.dispatch(request, unanswered)
    except HandlerError as nested:
        log.error("error routes failed", path=request.path, status=nested.status, error=str(nested))
        return plain
    except web.HTTPException as exc:
        return _from_http_exception(exc)
    if response is not plain and not response.prepared:
        for name, value in error.headers.items():  # e.g. WWW-Authenticate, as Caddy keeps them
            if name not in response.headers:
                response.headers.add(name, value)
    return response


def _size_before_sending(response: web.StreamResponse) -> int | None:
    """The body size of a small in-memory response, which aiohttp then sends after the handler
    returns; None when it is sent here (to learn its size, and so that a graceful shutdown
    waits for it: a body larger than the transport's buffer may wait for the client)."""
    if response.prepared or not isinstance(response, web.Response) or response.compression:
        return None
    length = response.content_length
    return length if length is not None and length <= WRITTEN_AT_ONCE else None


async def _send(request: web.Request, response: web.StreamResponse) -> int:
    """Send ``response`` (if the handler has not) and return the body size sent."""
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()
    length = response.content_length
    return response.body_length if length is None else length


@dataclass(frozen=True)
class ListenerKey:
    address: ListenAddress
    tls: TLSConfig | None


class Dispatcher:
    """The aiohttp handler of one listener."""

    def __init__(
        self, key: ListenerKey, server: BuiltServer, metrics: HttpMetrics, access_log: AccessLog
    ) -> None:
        self.key = key
        self.access_log = access_log
        self.server = server
        self.metrics = metrics
        self.in_flight = 0  # requests a graceful shutdown waits for (not open WebSockets)

    async def wait_idle(self) -> None:
        # Polled: only a shutdown waits, and an Event costs every request a set() and a clear().
        while self.in_flight:
            await asyncio.sleep(IDLE_POLL)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        server = self.server  # one consistent snapshot per request, even across a reload
        config: ServerConfig = server.config
        name = config.name
        started = time.perf_counter()
        headers = request.headers
        counted = hdrs.UPGRADE not in headers or headers[hdrs.UPGRADE].lower() != "websocket"
        if counted:
            self.in_flight += 1
        flight = self.metrics.in_flight_of(name)
        flight.value += 1
        status = 500
        size = 0
        response: web.StreamResponse
        try:
            try:
                if hdrs.EXPECT in headers:
                    await _expect(request)
                raw = request.raw_path
                if "%" in raw and has_malformed_escapes(raw.partition("?")[0]):
                    response = error_response(
                        400, "malformed percent-encoding in the request path", "bad_request"
                    )
                else:
                    fallback = not_found if server.error_routes is None else _unrouted
                    response = await server.routes.dispatch(request, fallback)
            except HandlerError as error:
                response = await _answer_error(server, request, error)
            except web.HTTPException as exc:
                response = _from_http_exception(exc)
            except (asyncio.CancelledError, ConnectionResetError):
                status = 499  # the client went away
                raise
            except Exception:
                log.exception("handler failed", server=name, path=request.path)
                response = error_response(500, "internal server error", "internal")
            status = response.status
            known = _size_before_sending(response)
            size = await _send(request, response) if known is None else known
            return response
        finally:
            flight.value -= 1
            if counted:
                self.in_flight -= 1
            elapsed = time.perf_counter() - started
            try:
                handler = request[HANDLER_NAME_KEY]
            except KeyError:
                handler = "none"
            self.metrics.observe(name, handler, status, request.method, elapsed, size)
            if config.access_log:
                self.access_log.record(request, name, handler, status, size, elapsed)


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.certificate_file), str(tls.key_file))
    return context


MAX_BUFFERED_BODY = 1024**2
"""``request.read()`` limit; handlers that take large bodies stream ``request.content``."""


def _make_request(
    message: RawRequestMessage,
    payload: StreamReader,
    protocol: RequestHandler,
    writer: AbstractStreamWriter,
    task: asyncio.Task[None],
) -> web.Request:
    return web.Request(
        message,
        payload,
        protocol,
        writer,
        task,
        asyncio.get_running_loop(),
        client_max_size=MAX_BUFFERED_BODY,
    )


class Listener:
    """One bound socket (TCPSite) served by aiohttp's low-level server: Quantum's router
    replaces aiohttp's, so a request goes straight from the parser to the Dispatcher."""

    def __init__(self, dispatcher: Dispatcher, *, reuse_port: bool, grace: float) -> None:
        self.dispatcher = dispatcher
        self.grace = grace
        self.reuse_port = reuse_port
        self.site: web.TCPSite | None = None
        self.runner: web.ServerRunner | None = None

    async def start(self) -> None:
        key = self.dispatcher.key
        config = self.dispatcher.server.config
        server = web.Server(
            self.dispatcher,  # type: ignore[arg-type]  # it takes the web.Request we make
            request_factory=_make_request,
            access_log=None,
            max_field_size=config.max_header_size,
            max_line_size=config.max_header_size,
            keepalive_timeout=config.idle_timeout,
        )
        # Our own grace period runs before close(); this only bounds stragglers.
        self.runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=min(self.grace, 1.0)
        )
        await self.runner.setup()
        self.site = web.TCPSite(
            self.runner,
            host=key.address.host,
            port=key.address.port,
            ssl_context=ssl_context(key.tls) if key.tls else None,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        try:
            await self.site.start()
        except BaseException:
            await self.runner.cleanup()
            raise

    async def stop_accepting(self) -> None:
        if self.site is not None:
            await self.site.stop()
        server = self.runner.server if self.runner else None
        if server is not None:
            server.pre_shutdown()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
