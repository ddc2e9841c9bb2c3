"""Fixtures of the convergence test: real servers and real sync clients."""

from tests.client.conftest import sync_clients  # noqa: F401  (fixture re-export)
from tests.file_sync.conftest import start_quantum  # noqa: F401  (fixture re-export)
