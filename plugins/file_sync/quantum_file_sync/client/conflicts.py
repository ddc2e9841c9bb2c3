"""Names of conflict copies: ``NAME.sync-conflict-YYYYMMDD-HHMMSS-<client>.EXT``.

The losing side of a conflict is kept under such a name (time in UTC, ``<client>`` the id of the
client that found the conflict, ``.EXT`` the last extension, if any) and synced like any file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from quantum_file_sync.paths import MAX_NAME_BYTES

MARKER = ".sync-conflict-"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_COPY = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9_-]+(?:\.|$)")


def conflict_name(rel: str, client_id: str, when: datetime | None = None) -> str:
    """The conflict-copy path for ``rel`` (same directory)."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    directory, _, name = rel.rpartition("/")
    stem, ext = _split_extension(name)
    tag = f"{MARKER}{moment:%Y%m%d-%H%M%S}-{_safe_client(client_id)}"
    budget = MAX_NAME_BYTES - len((tag + ext).encode("utf-8"))
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
    new_name = f"{stem}{tag}{ext}"
    return f"{directory}/{new_name}" if directory else new_name


def free_conflict_name(
    rel: str, client_id: str, exists: Callable[[str], bool], when: datetime | None = None
) -> str:
    """:func:`conflict_name`, with ``-2``, ``-3``... after the client id if the name is taken."""
    candidate = conflict_name(rel, client_id, when)
    number = 1
    while exists(candidate):
        number += 1
        candidate = conflict_name(rel, f"{client_id}-{number}", when)
    return candidate


def is_conflict_copy(rel: str) -> bool:
    return _COPY.search(rel.rpartition("/")[2]) is not None


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:  # "Makefile", ".bashrc": no extension
        return name, ""
    return stem, "." + ext


def _safe_client(client_id: str) -> str:
    return _UNSAFE.sub("-", client_id).strip("-")[:64] or "client"
