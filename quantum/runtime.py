"""The running application: the current build, its listeners, reload and shutdown.

A reload builds and provisions the new config completely, binds any new addresses, then swaps
every listener to the new build in one step (no await in between). Any failure leaves the old
build serving. Listeners whose address survives keep their socket.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from quantum.access_log import AccessLog
from quantum.config import Config, Validator, load_config, parse_config
from quantum.errors import BindError, ConfigError, ConfigIssue
from quantum.observe import HttpMetrics, new_registry
from quantum.plugins import PluginRegistry
from quantum.pool import UsagePool
from quantum.provision import Build, Builder, cleanup_unused
from quantum.server import Dispatcher, Listener, ListenerKey

log = structlog.get_logger("quantum.runtime")


class Runtime:
    def __init__(
        self,
        plugins: PluginRegistry,
        *,
        metrics_registry: CollectorRegistry | None = None,
        exported: Collector | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.plugins = plugins
        self.validator = Validator(plugins)
        self.registry = metrics_registry or new_registry()
        self.exported: Collector = exported or self.registry
        """What metrics endpoints serve (see ``ProvisionContext.exported``)."""
        self.metrics = HttpMetrics(self.registry)
        self.reuse_port = reuse_port
        self.build: Build | None = None
        self.shared = UsagePool()
        self.access_log = AccessLog()
        self.listeners: dict[ListenerKey, Listener] = {}
        self._lock = asyncio.Lock()
        self.source: Path | None = None

    @property
    def config(self) -> Config | None:
        return self.build.config if self.build else None

    async def load_file(self, path: Path) -> Config:
        """Load (first start) or reload from a file."""
        self.source = path
        try:
            config = load_config(path, self.validator)
        except ConfigError:
            self.metrics.reload_ok.set(0)
            raise
        return await self.apply(config)

    async def load_data(self, data: Any) -> Config:
        try:
            config = parse_config(data, self.validator, source=self.source)
        except ConfigError:
            self.metrics.reload_ok.set(0)
            raise
        return await self.apply(config)

    async def apply(self, config: Config) -> Config:
        async with self._lock:
            try:
                await self._apply(config)
            except ConfigError:
                self.metrics.reload_ok.set(0)
                raise
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set(time.time())
            return config

    async def _apply(self, config: Config) -> None:
        old = self.build
        new = await Builder(self.plugins, self.registry, old, self.shared, self.exported).build(
            config
        )
        wanted = {
            ListenerKey(address, server.config.tls): server
            for server in new.servers.values()
            for address in server.config.listen
        }
        started: dict[ListenerKey, Listener] = {}
        try:
            for key, server in wanted.items():
                if key in self.listeners:
                    continue
                listener = Listener(
                    Dispatcher(key, server, self.metrics, self.access_log),
                    reuse_port=self.reuse_port,
                    grace=config.grace_period,
                )
                try:
                    await listener.start()
                except OSError as exc:
                    raise BindError(
                        [
                            ConfigIssue(
                                f"apps.http.servers.{server.config.name}.listen",
                                f"cannot listen on {key.address}: {exc.strerror or exc}",
                            )
                        ]
                    ) from exc
                started[key] = listener
        except BaseException:
            for listener in started.values():
                await listener.close()
            await cleanup_unused(new, old)
            raise
        # The swap: no await from here until every dispatcher points at the new build.
        for key, listener in self.listeners.items():
            if key in wanted:
                listener.dispatcher.server = wanted[key]
        removed = [listener for key, listener in self.listeners.items() if key not in wanted]
        self.listeners = {key: self.listeners.get(key) or started[key] for key in wanted}
        self.build = new
        for listener in removed:
            await listener.stop_accepting()
            await listener.close()
        if old is not None:
            await cleanup_unused(old, new)
        log.info(
            "config loaded",
            servers=sorted(new.servers),
            listen=sorted(str(key.address) for key in wanted),
        )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then clean up."""
        async with self._lock:
            grace = grace if grace is not None else (self.config.grace_period if self.config else 5)
            deadline = time.monotonic() + grace
            for listener in self.listeners.values():
                await listener.stop_accepting()
            for listener in self.listeners.values():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(listener.dispatcher.wait_idle(), remaining)
                except TimeoutError:
                    log.warning("grace period over; closing in-flight requests")
            if self.build is not None:
                await cleanup_unused(self.build, None)
            for listener in self.listeners.values():
                await listener.close()
            self.listeners = {}
            self.build = None
            self.access_log.flush()
