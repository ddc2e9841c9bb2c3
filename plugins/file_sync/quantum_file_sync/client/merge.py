"""Three-way reconciliation of one path: merge base, local side, remote side → one action.

Pure and total: every combination of (absent | directory | file with a hash) on the three sides
maps to exactly one :class:`Action`. The rules (DESIGN.md, "The sync client"):

- a side *changed* when its content differs from the base (absent, a directory, or a file with
  another hash); sides are compared by content, never by timestamps;
- both sides agree → nothing to transfer (identical changes are not conflicts), just record the
  agreement as the new base, or forget it when the path is gone on both sides;
- only one side changed → propagate it to the other side;
- both changed and they differ → never lose data: a deletion loses to a modification (the
  modified side is propagated, the deletion undone); otherwise the local version is moved aside
  as a conflict copy and the remote version takes the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Version:
    """What a side holds at a path, by content: a directory, or a file with its SHA-256."""

    is_dir: bool
    hash: str | None = None

    @classmethod
    def file(cls, digest: str) -> Version:
        return cls(False, digest)

    @classmethod
    def directory(cls) -> Version:
        return cls(True, None)


class Action(StrEnum):
    NOTHING = "nothing"
    """All three agree."""
    ADOPT = "adopt"
    """Local and remote agree but the base does not: record the new base, transfer nothing."""
    FORGET = "forget"
    """Gone on both sides: drop the base."""
    DOWNLOAD = "download"
    MKDIR_LOCAL = "mkdir_local"
    DELETE_LOCAL = "delete_local"
    UPLOAD = "upload"
    MKDIR_REMOTE = "mkdir_remote"
    DELETE_REMOTE = "delete_remote"
    CONFLICT = "conflict"
    """Both changed, differently, neither deleted: local version → conflict copy, take remote."""


def decide(base: Version | None, local: Version | None, remote: Version | None) -> Action:
    if local == remote:
        if local is None:
            return Action.NOTHING if base is None else Action.FORGET
        return Action.NOTHING if base == local else Action.ADOPT
    if local == base:
        return _take(remote)
    if remote == base:
        return _push(local)
    # Both sides changed, differently.
    if local is None:
        return _take(remote)  # delete vs modify: the modification survives
    if remote is None:
        return _push(local)  # modify vs delete: the modification survives
    return Action.CONFLICT


def _take(remote: Version | None) -> Action:
    if remote is None:
        return Action.DELETE_LOCAL
    return Action.MKDIR_LOCAL if remote.is_dir else Action.DOWNLOAD


def _push(local: Version | None) -> Action:
    if local is None:
        return Action.DELETE_REMOTE
    return Action.MKDIR_REMOTE if local.is_dir else Action.UPLOAD
