"""``realtime-sync-client``: the command line (reference: docs/sync-client.md).

    realtime-sync-client --server URL --local-path DIR [--realtime] [--initial-sync]
                         [--client-id ID] [--token TOKEN] [--ignore GLOB]... [-v | -q]

Without ``--realtime``: one reconciliation pass, then exit. With it: the pass, then keep both
sides in sync until SIGINT/SIGTERM. ``--initial-sync`` makes the first pass a full listing merge
even when the server's journal could replay what was missed. Exit statuses: :class:`ExitCode`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from quantum_file_sync.client import history_cli
from quantum_file_sync.client.exit_codes import ClientExit, ExitCode
from quantum_file_sync.client.logs import Logger
from quantum_file_sync.client.progress import Progress, SyncStats
from quantum_file_sync.client.server_arguments import add_server_arguments
from quantum_file_sync.client.sync import ClientOptions, RealtimeSyncClient

PROG = "realtime-sync-client"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Two-way sync of a local folder with a Quantum file_sync server.",
        epilog=(
            "Without --realtime: one reconciliation pass, then exit. With --realtime: keep "
            "syncing until interrupted. Exit statuses: 0 ok, 3 server unreachable, 4 "
            "authentication failed, 5 invalid local path, 6 mass-delete guard tripped, 7 some "
            "paths not synced, 8 not a file_sync server. History: realtime-sync-client "
            "{versions,restore,trash,undelete} --help. See docs/sync-client.md."
        ),
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--local-path", required=True, type=Path, metavar="DIR", help="the folder to sync"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="after the first pass, keep syncing both ways as changes happen",
    )
    parser.add_argument(
        "--initial-sync",
        action="store_true",
        help="make the first pass a full listing merge even when the journal could replay",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="this folder's client id (default: generated once per folder and kept)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave matching paths alone (repeatable; also read from DIR/.quantumignore)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="parallel transfers (default: 8)",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="do not stop when most tracked files (or all of them) disappear at once",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="heartbeat interval; a silent connection is dropped after 3 intervals",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log every transfer")
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only"
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def configure_logging(level: int, progress: Progress, stream: TextIO) -> Logger:
    """Log lines go above the progress bar when one is shown."""
    return Logger(level, progress.write, console=stream.isatty())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client. As the console script (``argv`` not given), the process then ends
    without the interpreter's teardown: everything was closed and flushed already, and freeing
    the objects of a large pass one by one would cost a short run a noticeable share."""
    words = sys.argv[1:] if argv is None else list(argv)
    history = bool(words) and words[0] in history_cli.COMMANDS  # docs/sync-client.md
    status = history_cli.main(words) if history else _main(argv)
    if argv is None and sys.gettrace() is None and sys.getprofile() is None:
        # (Under a tracer or profiler, such as coverage, the teardown writes its results.)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    stream = sys.stderr
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    options = ClientOptions(
        server=args.server,
        local_path=args.local_path,
        realtime=args.realtime,
        initial_sync=args.initial_sync,
        client_id=args.client_id,
        token=args.token or None,
        ignore=tuple(args.ignore),
        concurrency=args.concurrency,
        allow_mass_delete=args.allow_mass_delete,
        progress=stream.isatty() and not args.quiet,
        ping_interval=args.ping_interval,
    )
    client = RealtimeSyncClient(options, log=None)
    client.log = configure_logging(level, client.progress, stream)
    _tune_gc()
    try:
        stats = asyncio.run(_run(client))
    except ClientExit as exc:
        print(f"{PROG}: {exc.message}", file=stream)
        return int(exc.code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=stream)
        return int(ExitCode.INTERRUPTED)
    return _finish(client, stats, args.quiet, stream)


def _tune_gc() -> None:
    """Move everything allocated at start-up (the imported modules) out of the collector's
    sight and collect the young generation less often, as the server does: a pass allocates
    a few objects per file, and the collections they trigger traverse everything still
    young: 30-70 ms of a 5,000-file first sync of ~0.7 s (bench/initial_sync.py)."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


async def _run(client: RealtimeSyncClient) -> SyncStats:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, client.stop)
    try:
        return await client.run()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _finish(client: RealtimeSyncClient, stats: SyncStats, quiet: bool, stream: TextIO) -> int:
    if quiet:
        pass
    elif stream.isatty():
        print(f"{PROG}: {stats.summary()}", file=stream)
    else:
        client.log.info("summary", **stats.fields())
    if client.interrupted and not client.options.realtime:
        print(f"{PROG}: interrupted before the pass completed", file=stream)
        return int(ExitCode.INTERRUPTED)
    if stats.errors and stats.errors == stats.unreachable:
        print(f"{PROG}: lost the connection to {client.options.server}", file=stream)
        return int(ExitCode.SERVER_UNREACHABLE)
    if stats.errors or stats.refused:
        print(
            f"{PROG}: {stats.errors + stats.refused} paths could not be synced (see the log)",
            file=stream,
        )
        return int(ExitCode.INCOMPLETE)
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
