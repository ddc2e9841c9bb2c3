from __future__ import annotations

from quantum_file_sync.client.local import StatKey
from quantum_file_sync.client.moves import LocalMove, detect_moves
from quantum_file_sync.client.state import BaseEntry


def base(path: str, inode: int, *, is_dir: bool = False, size: int = 3) -> BaseEntry:
    return BaseEntry(path, is_dir, None if is_dir else "h", 0 if is_dir else size, 7, inode, 1)


def key(inode: int, *, is_dir: bool = False, size: int = 3) -> StatKey:
    return StatKey(is_dir, 0 if is_dir else size, 7, inode)


def test_file_rename_is_paired_by_identity() -> None:
    moves = detect_moves({"a.txt": base("a.txt", 11)}, {"b.txt": key(11), "c.txt": key(12)})
    assert moves == [LocalMove("a.txt", "b.txt", False)]


def test_same_inode_but_other_content_is_not_a_move() -> None:
    assert detect_moves({"a": base("a", 11)}, {"b": key(11, size=4)}) == []


def test_directory_move_carries_its_children() -> None:
    vanished = {"d": base("d", 5, is_dir=True), "d/x": base("d/x", 6), "y": base("y", 8)}
    appeared = {"e": key(5, is_dir=True), "e/x": key(6), "f/y": key(8)}
    assert detect_moves(vanished, appeared) == [
        LocalMove("d", "e", True),
        LocalMove("y", "f/y", False),
    ]


def test_directory_moves_come_before_file_moves_into_them() -> None:
    vanished = {"a.txt": base("a.txt", 3), "n": base("n", 4, is_dir=True)}
    appeared = {"r/a.txt": key(3), "r": key(4, is_dir=True)}
    assert detect_moves(vanished, appeared) == [
        LocalMove("n", "r", True),
        LocalMove("a.txt", "r/a.txt", False),
    ]


def test_ambiguous_identities_are_left_alone() -> None:
    vanished = {"a": base("a", 9), "b": base("b", 9)}
    assert detect_moves(vanished, {"c": key(9)}) == []
    assert detect_moves({"a": base("a", 9)}, {"c": key(9), "d": key(9)}) == []
    assert detect_moves({"a": base("a", 0)}, {"c": key(0)}) == []
