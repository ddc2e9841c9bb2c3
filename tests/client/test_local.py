from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from quantum_file_sync.client.ignore import IgnoreRules
from quantum_file_sync.client.local import (
    FileUnstable,
    LocalState,
    LocalTree,
    StatKey,
    TargetChanged,
    TempDownload,
    UnsafeLocalPath,
    Unsupported,
    parse_modified,
    sha256_file,
)
from quantum_file_sync.client.state import BaseEntry


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> LocalTree:
    root = tmp_path / "root"
    (root / ".quantum-sync" / "tmp").mkdir(parents=True)
    return LocalTree(root, root / ".quantum-sync" / "tmp", IgnoreRules(["*.tmp"]))


def old(path: Path) -> None:
    """Make a file's mtime old enough for its stat identity to be trusted."""
    os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


async def test_probe_hashes_only_when_the_stat_identity_changed(tree: LocalTree) -> None:
    file = tree.root / "a.txt"
    file.write_bytes(b"one")
    old(file)
    state = await tree.probe("a.txt", None)
    assert isinstance(state, LocalState)
    assert state.hash == sha(b"one")
    key = state.key
    base = BaseEntry("a.txt", False, "pretend-hash", key.size, key.mtime_ns, key.inode, 1)
    trusted = await tree.probe("a.txt", base)
    assert isinstance(trusted, LocalState)
    assert trusted.hash == "pretend-hash"  # not re-read: the identity matches the base
    file.write_bytes(b"two")
    changed = await tree.probe("a.txt", base)
    assert isinstance(changed, LocalState)
    assert changed.hash == sha(b"two")


async def test_recent_files_are_always_rehashed(tree: LocalTree) -> None:
    file = tree.root / "fresh.txt"
    file.write_bytes(b"abc")
    st = file.stat()
    base = BaseEntry("fresh.txt", False, "stale", st.st_size, st.st_mtime_ns, st.st_ino, 1)
    state = await tree.probe("fresh.txt", base)
    assert isinstance(state, LocalState)
    assert state.hash == sha(b"abc")


async def test_probe_kinds(tree: LocalTree) -> None:
    (tree.root / "d").mkdir()
    os.symlink("/etc/passwd", tree.root / "link")
    assert await tree.probe("missing", None) is None
    assert await tree.probe("missing/below", None) is None
    directory = await tree.probe("d", None)
    assert isinstance(directory, LocalState)
    assert directory.key.is_dir
    assert isinstance(await tree.probe("link", None), Unsupported)


def test_hashing_notices_a_file_changing_underneath(tree: LocalTree) -> None:
    file = tree.root / "grow.bin"
    file.write_bytes(b"x" * 10)
    stale = StatKey.of(file.stat())
    file.write_bytes(b"x" * 11)
    with pytest.raises(FileUnstable):
        sha256_file(str(file), stale)


def test_scan_skips_reserved_ignored_links_and_bad_names(tree: LocalTree) -> None:
    (tree.root / "sub").mkdir()
    (tree.root / "sub" / "keep.txt").write_text("k")
    (tree.root / "sub" / "skip.tmp").write_text("t")
    (tree.root / ".quantumignore").write_text("")
    (tree.root / "back\\slash").write_text("b")
    os.symlink("sub", tree.root / "link")
    found, skipped = tree.scan()
    assert sorted(found) == ["sub", "sub/keep.txt"]
    reasons = dict(skipped)
    assert "symbolic link" in reasons["link"]
    assert "backslash" in reasons["back\\slash"]


def test_install_writes_only_over_what_was_decided_on(tree: LocalTree) -> None:
    with TempDownload(tree.tmp_dir) as temp:
        temp.write(b"remote")
        temp.finish()
        key = tree.install(temp, "new/dir/f.txt", None, 1_700_000_000_000_000_000)
    assert (tree.root / "new/dir/f.txt").read_bytes() == b"remote"
    assert key.mtime_ns == 1_700_000_000_000_000_000
    assert list(tree.tmp_dir.iterdir()) == []

    (tree.root / "busy.txt").write_bytes(b"local edit")
    with TempDownload(tree.tmp_dir) as temp:
        temp.write(b"remote")
        temp.finish()
        with pytest.raises(TargetChanged):
            tree.install(temp, "busy.txt", None, None)  # decided on "absent"
    assert (tree.root / "busy.txt").read_bytes() == b"local edit"
    assert list(tree.tmp_dir.iterdir()) == []  # the temp file is discarded


def test_writes_never_pass_through_a_symbolic_link(tree: LocalTree, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tree.root / "escape")
    with pytest.raises(UnsafeLocalPath):
        tree.ensure_parents("escape/x.txt")
    (tree.root / "file").write_text("f")
    with pytest.raises(UnsafeLocalPath, match="not a directory"):
        tree.make_dir("file/sub")
    assert list(outside.iterdir()) == []


def test_remove_file_rechecks_first(tree: LocalTree) -> None:
    file = tree.root / "f"
    file.write_bytes(b"v1")
    key = StatKey.of(file.stat())
    file.write_bytes(b"v2, longer")
    with pytest.raises(TargetChanged):
        tree.remove_file("f", key)
    assert file.exists()
    tree.remove_file("f", StatKey.of(file.stat()))
    assert not file.exists()


def test_remove_dir_only_when_empty(tree: LocalTree) -> None:
    (tree.root / "d").mkdir()
    (tree.root / "d" / "x").write_text("x")
    assert not tree.remove_dir("d")
    (tree.root / "d" / "x").unlink()
    assert tree.remove_dir("d")
    assert tree.remove_dir("d")  # already gone


def test_move_refuses_to_overwrite(tree: LocalTree) -> None:
    (tree.root / "a").write_text("a")
    (tree.root / "b").write_text("b")
    with pytest.raises(TargetChanged):
        tree.move("a", "b", None)
    tree.move("a", "c/d", StatKey.of((tree.root / "a").stat()))
    assert (tree.root / "c/d").read_text() == "a"


def test_parse_modified() -> None:
    assert parse_modified("2024-01-15T10:30:00Z") == 1_705_314_600_000_000_000
    assert parse_modified("2024-01-15T10:30:00.5+00:00") == 1_705_314_600_500_000_000
    assert parse_modified("yesterday") is None
    assert parse_modified("2024-01-15T10:30:00") is None  # no zone: ambiguous
