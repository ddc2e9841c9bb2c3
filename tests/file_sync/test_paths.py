"""The safe path resolver, the tree walk, the index and the path locks, on real directories."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from quantum_file_sync.index import Entry, Index, walk
from quantum_file_sync.metadata import StatKey, rfc3339
from quantum_file_sync.paths import PathError, SafeRoot, ancestors, decode_url_path, validate
from quantum_file_sync.storage import TreeLocks


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b.txt",
        "ünïcode/文件.md",
        "name with spaces",
        ".hidden",
        "...",
        "a..b",
        "docs/.quantum",  # reserved only at the top level
        "x" * 255,
        "é" * 127,  # 254 bytes
    ],
)
def test_valid_paths_are_returned_unchanged(path: str) -> None:
    assert validate(path) == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        (".", "'.'"),
        ("a//b", "empty path segment"),
        ("a/", "empty path segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("\x7f", "control"),
        ("\u0085", "control"),
        ("x" * 256, "longer than 255"),
        ("é" * 128, "longer than 255"),
        ("a/" * 2100 + "a", "longer than 4096"),
        ("\ud800", "UTF-8"),
    ],
)
def test_invalid_paths_are_refused_with_400(path: str, message: str) -> None:
    with pytest.raises(PathError, match=message) as refused:
        validate(path)
    assert (refused.value.status, refused.value.code) == (400, "bad_path")


@pytest.mark.parametrize("path", [".quantum", ".quantum/journal", ".quantum-sync/x", ".QUANTUM"])
def test_reserved_paths_are_refused_with_403(path: str) -> None:
    with pytest.raises(PathError) as refused:
        validate(path)
    assert (refused.value.status, refused.value.code) == (403, "reserved")


def test_the_root_is_only_accepted_where_allowed() -> None:
    assert validate("", allow_root=True) == ""
    assert validate("/", allow_root=True) == ""
    with pytest.raises(PathError):
        validate(None)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [("a%20b", "a b"), ("%2e%2e", ".."), ("a%2Fb", "a/b"), ("%C3%A9", "é"), ("plain", "plain")],
)
def test_url_paths_are_percent_decoded(raw: str, decoded: str) -> None:
    assert decode_url_path(raw) == decoded


@pytest.mark.parametrize("raw", ["%c0%ae", "%ff", "%e2%82", "%ed%a0%80"])
def test_invalid_or_overlong_utf8_is_refused(raw: str) -> None:
    with pytest.raises(PathError, match="UTF-8"):
        decode_url_path(raw)


@pytest.fixture
def tree(tmp_path: Path) -> SafeRoot:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "dir" / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("secret")
    (root / "dir" / "file.txt").write_text("file")
    (root / ".quantum").mkdir()
    (root / ".quantum" / "journal").write_text("j")
    os.symlink(outside, root / "out-dir")
    os.symlink(outside / "secret", root / "out-file")
    os.symlink(root / "dir" / "file.txt", root / "in-file")
    os.symlink(root / ".quantum", root / "to-reserved")
    return SafeRoot(root)


def test_reads_follow_links_only_inside_root(tree: SafeRoot) -> None:
    assert tree.resolve_for_read("in-file") == tree.path / "dir" / "file.txt"
    with pytest.raises(PathError, match="leaves the root"):
        tree.resolve_for_read("out-file")
    with pytest.raises(PathError, match="leaves the root"):
        tree.resolve_for_read("out-dir/secret")
    with pytest.raises(PathError) as reserved:
        tree.resolve_for_read("to-reserved/journal")
    assert reserved.value.reserved


def test_writes_never_follow_links(tree: SafeRoot) -> None:
    with pytest.raises(PathError, match="symbolic link"), tree.open_directory("out-dir"):
        pass
    with pytest.raises(PathError, match="symbolic link"):
        with tree.open_directory("out-dir/new", create=True):
            pass
    assert not (tree.path.parent / "outside" / "new").exists()
    with pytest.raises(NotADirectoryError), tree.open_directory("dir/file.txt/x", create=True):
        pass
    with pytest.raises(FileNotFoundError), tree.open_directory("missing"):
        pass


def test_open_directory_creates_and_reports_missing_parents(tree: SafeRoot) -> None:
    with tree.open_directory("dir/a/b", create=True) as opened:
        assert opened.created == ["dir/a", "dir/a/b"]
        assert os.fstat(opened.fd).st_ino == (tree.path / "dir" / "a" / "b").stat().st_ino
    with tree.open_directory("dir/a/b", create=True) as again:
        assert again.created == []


def test_walk_skips_links_reserved_and_unaddressable_names(tree: SafeRoot) -> None:
    os.close(os.open(os.fsencode(tree.path / "dir") + b"/\xff.bin", os.O_CREAT | os.O_WRONLY))
    (tree.path / "dir" / "back\\slash").write_text("x")
    assert [rel for rel, _ in walk(tree)] == ["dir", "dir/file.txt", "dir/sub"]
    assert [rel for rel, _ in walk(tree, "dir", recursive=False)] == ["dir/file.txt", "dir/sub"]


def test_walk_resumes_after_a_cursor_in_segment_order(tmp_path: Path) -> None:
    for name in ["a/1", "a/2", "a-b", "b"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    root = SafeRoot(tmp_path)
    everything = [rel for rel, _ in walk(root)]
    assert everything == ["a", "a/1", "a/2", "a-b", "b"]
    for position, rel in enumerate(everything):
        resumed = [r for r, _ in walk(root, after=tuple(rel.split("/")))]
        assert resumed == everything[position + 1 :]


def test_index_subtrees_move_and_vanish_together() -> None:
    index = Index()
    directory = Entry(True, StatKey(1, 1, 0, 0), None)
    file = Entry(False, StatKey(1, 2, 3, 4), "h")
    for rel, entry in [("a", directory), ("a/b", directory), ("a/b/c", file), ("ab", file)]:
        index.put(rel, entry)
    index.move_tree("a", "z")
    assert index.paths() == ["ab", "z", "z/b", "z/b/c"]
    assert index.get("z/b/c") == file
    assert index.remove_tree("z") == ["z", "z/b", "z/b/c"]
    assert index.paths() == ["ab"]
    index.put("ab", directory)
    index.put("ab/x", file)
    index.put("ab", file)  # a directory replaced by a file loses its contents
    assert index.paths() == ["ab"]


def test_ancestors_and_timestamps() -> None:
    assert ancestors("a/b/c") == ["a", "a/b"]
    assert ancestors("a") == []
    assert rfc3339(1_705_314_600_123_456_789) == "2024-01-15T10:30:00Z"


async def test_tree_locks_serialise_a_path_with_its_ancestors_and_descendants() -> None:
    locks = TreeLocks()
    order: list[str] = []

    async def hold(name: str, *paths: str, delay: float = 0.05) -> None:
        async with locks.hold(*paths):
            order.append(f"+{name}")
            await asyncio.sleep(delay)
            order.append(f"-{name}")

    first = asyncio.create_task(hold("dir", "a"))
    await asyncio.sleep(0)
    await asyncio.gather(
        hold("child", "a/b"),  # must wait for "a"
        hold("other", "b"),  # runs alongside
        first,
    )
    assert order.index("-dir") < order.index("+child")
    assert order.index("+other") < order.index("-dir")

    cancelled = asyncio.create_task(hold("cancelled", "c", delay=10))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(hold("after", "c/d", delay=0), timeout=1)  # nothing left behind
