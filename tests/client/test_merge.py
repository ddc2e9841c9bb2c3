"""merge.decide: exhaustive over every (base, local, remote) combination, plus named cases."""

from __future__ import annotations

import itertools

import pytest
from quantum_file_sync.client.merge import Action, Version, decide

A, B, C = Version.file("a" * 64), Version.file("b" * 64), Version.file("c" * 64)
D = Version.directory()
SIDES: list[Version | None] = [None, D, A, B, C]
ALL = list(itertools.product(SIDES, repeat=3))

MIRROR = {
    Action.DOWNLOAD: Action.UPLOAD,
    Action.UPLOAD: Action.DOWNLOAD,
    Action.MKDIR_LOCAL: Action.MKDIR_REMOTE,
    Action.MKDIR_REMOTE: Action.MKDIR_LOCAL,
    Action.DELETE_LOCAL: Action.DELETE_REMOTE,
    Action.DELETE_REMOTE: Action.DELETE_LOCAL,
}


def apply(
    action: Action, local: Version | None, remote: Version | None
) -> tuple[Version | None, Version | None, Version | None]:
    """(local, remote, conflict copy) after the action."""
    if action in (Action.DOWNLOAD, Action.MKDIR_LOCAL, Action.DELETE_LOCAL):
        return remote, remote, None
    if action in (Action.UPLOAD, Action.MKDIR_REMOTE, Action.DELETE_REMOTE):
        return local, local, None
    if action is Action.CONFLICT:
        return remote, remote, local
    return local, remote, None


@pytest.mark.parametrize(("base", "local", "remote"), ALL)
def test_every_combination_converges_without_losing_a_change(
    base: Version | None, local: Version | None, remote: Version | None
) -> None:
    action = decide(base, local, remote)
    new_local, new_remote, copy = apply(action, local, remote)
    assert new_local == new_remote, action
    # Every side that changed since the base (a modification, not a deletion) survives.
    survivors = {new_local, copy}
    for side in (local, remote):
        if side is not None and side != base:
            assert side in survivors, (action, side)


@pytest.mark.parametrize(("base", "local", "remote"), ALL)
def test_never_acts_on_a_side_it_has_not_seen_unchanged(
    base: Version | None, local: Version | None, remote: Version | None
) -> None:
    action = decide(base, local, remote)
    if action is Action.DELETE_LOCAL:
        assert local == base
    if action is Action.DELETE_REMOTE:
        assert remote == base
    if action in (Action.DOWNLOAD, Action.MKDIR_LOCAL):
        assert local in (base, None)
    if action in (Action.UPLOAD, Action.MKDIR_REMOTE):
        assert remote in (base, None)
    if action is Action.CONFLICT:
        assert None not in (local, remote)
        assert local != base and remote != base and local != remote


@pytest.mark.parametrize(("base", "local", "remote"), ALL)
def test_local_and_remote_are_symmetric_except_conflicts(
    base: Version | None, local: Version | None, remote: Version | None
) -> None:
    action, mirrored = decide(base, local, remote), decide(base, remote, local)
    if action is Action.CONFLICT:
        assert mirrored is Action.CONFLICT
    else:
        assert mirrored is MIRROR.get(action, action)


@pytest.mark.parametrize(
    ("base", "local", "remote", "expected"),
    [
        (None, None, None, Action.NOTHING),
        (A, A, A, Action.NOTHING),
        (D, D, D, Action.NOTHING),
        (A, None, None, Action.FORGET),
        (None, A, A, Action.ADOPT),  # first contact, identical: adopted, no transfer
        (A, B, B, Action.ADOPT),  # identical offline edits: not a conflict
        (None, D, D, Action.ADOPT),
        (None, None, A, Action.DOWNLOAD),
        (A, A, B, Action.DOWNLOAD),
        (None, A, None, Action.UPLOAD),
        (A, B, A, Action.UPLOAD),
        (A, None, A, Action.DELETE_REMOTE),
        (A, A, None, Action.DELETE_LOCAL),
        (D, None, D, Action.DELETE_REMOTE),
        (D, D, None, Action.DELETE_LOCAL),
        (None, D, None, Action.MKDIR_REMOTE),
        (None, None, D, Action.MKDIR_LOCAL),
        (A, A, D, Action.MKDIR_LOCAL),  # file replaced by a directory on the server
        (D, D, A, Action.DOWNLOAD),  # directory replaced by a file on the server
        (A, None, B, Action.DOWNLOAD),  # deleted here, modified there: modification wins
        (A, B, None, Action.UPLOAD),  # modified here, deleted there: modification wins
        (A, B, C, Action.CONFLICT),
        (None, A, B, Action.CONFLICT),  # first contact, different: conflict copy
        (None, D, A, Action.CONFLICT),
        (None, A, D, Action.CONFLICT),
    ],
)
def test_named_cases(
    base: Version | None, local: Version | None, remote: Version | None, expected: Action
) -> None:
    assert decide(base, local, remote) is expected


def test_first_contact_never_deletes() -> None:
    for local, remote in itertools.product(SIDES, repeat=2):
        assert decide(None, local, remote) not in (Action.DELETE_LOCAL, Action.DELETE_REMOTE)
