"""The command-line options every ``realtime-sync-client`` command shares to reach a server."""

from __future__ import annotations

import argparse
import os

TOKEN_ENV = "QUANTUM_TOKEN"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--server URL`` (required) and ``--token TOKEN`` (default: ``$QUANTUM_TOKEN``)."""
    parser.add_argument("--server", required=True, metavar="URL", help="e.g. http://localhost:8080")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        metavar="TOKEN",
        help=f"bearer token for the server (default: ${TOKEN_ENV})",
    )
