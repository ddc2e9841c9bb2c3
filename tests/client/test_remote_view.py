from __future__ import annotations

from quantum_file_sync.client.remote_view import RemoteEntry, RemoteView
from quantum_file_sync.operations import Create, Delete, FileMetadata, Move, Update


def meta(path: str, digest: str | None = "h1", *, is_dir: bool = False) -> FileMetadata:
    return FileMetadata(
        path, 0 if is_dir else 3, None if is_dir else digest, "2024-01-01T00:00:00Z", is_dir
    )


def entry(path: str, digest: str | None = "h1", *, is_dir: bool = False) -> RemoteEntry:
    return RemoteEntry.of(meta(path, digest, is_dir=is_dir))


def test_operations_apply_in_order_and_duplicates_are_ignored() -> None:
    view = RemoteView()
    assert view.apply(Create(meta("a")), 1) == ["a"]
    assert view.apply(Update(meta("a", "h2")), 2) == ["a"]
    assert view.apply(Update(meta("a", "h1")), 2) is None  # replayed after a reconnect
    assert view.get("a") == entry("a", "h2")
    assert view.apply(Delete("a", False), 3) == ["a"]
    assert view.get("a") is None
    assert view.last_seq == 3


def test_directory_delete_and_move_carry_the_subtree() -> None:
    view = RemoteView()
    view.apply(Create(meta("d", is_dir=True)), 1)
    view.apply(Create(meta("d/x")), 2)
    view.apply(Create(meta("d/e/y")), 3)
    touched = view.apply(Move("d", meta("m", is_dir=True)), 4)
    assert touched is not None
    assert {"d", "m", "d/x", "m/x", "d/e/y", "m/e/y"} <= set(touched)
    assert sorted(view.paths()) == ["m", "m/e/y", "m/x"]
    assert view.get("m/x") == entry("m/x")
    assert set(view.apply(Delete("m", True), 5) or []) == {"m", "m/x", "m/e/y"}
    assert list(view.paths()) == []


def test_a_listing_never_undoes_newer_operations() -> None:
    view = RemoteView()
    view.apply(Create(meta("old")), 1)
    # Operations newer than the listing arrive first (the listing is slow, or paginated).
    view.apply(Create(meta("new")), 11)
    view.apply(Update(meta("both", "h9")), 12)
    changed = view.apply_listing({"both": entry("both", "h5"), "listed": entry("listed")}, 10)
    assert view.get("new") == entry("new")  # not in the listing, but newer: kept
    assert view.get("both") == entry("both", "h9")
    assert view.get("listed") == entry("listed")
    assert view.get("old") is None  # absent from a newer listing: gone
    assert changed == {"listed", "old"}
    # Operations the listing already reflects are ignored when they arrive late.
    assert view.apply(Create(meta("late")), 9) is None
    assert view.last_seq == 12


def test_set_if_unchanged_loses_against_a_newer_operation() -> None:
    view = RemoteView()
    view.apply(Create(meta("f", "h1")), 1)
    stamp = view.stamp("f")
    assert view.set_if_unchanged("f", entry("f", "h2"), stamp)  # our upload's reply
    stamp = view.stamp("f")
    view.apply(Update(meta("f", "h3")), 2)  # someone else, before our next reply
    assert not view.set_if_unchanged("f", entry("f", "h4"), stamp)
    assert view.get("f") == entry("f", "h3")


def test_new_epoch_lets_the_new_journal_in() -> None:
    view = RemoteView()
    view.reset([entry("a")], "e1", 50)
    assert view.apply(Create(meta("b")), 3) is None
    view.new_epoch("e2")
    assert view.apply(Create(meta("b")), 3) == ["b"]
    view.skip(7)
    assert view.last_seq == 7


def test_a_directory_move_leaves_our_own_later_upload_at_its_source() -> None:
    """Convergence seed 13: a file we uploaded into ``d`` after the server had moved ``d``
    (its operation not received yet) was moved along in the view, to where the server never
    had it: the client kept it there for good."""
    view = RemoteView()
    view.apply(Create(meta("d", is_dir=True)), 1)
    view.apply(Create(meta("d/old")), 2)
    assert view.set_if_unchanged("d/ours", entry("d/ours", "h2"), view.stamp("d/ours"))
    touched = view.apply(Move("d", meta("m", is_dir=True)), 3)
    assert touched is not None and "m/ours" not in touched
    assert sorted(view.paths()) == ["d/ours", "m", "m/old"]  # its own Create (seq 4) follows
    view.apply(Create(meta("d/ours", "h2")), 4)
    assert view.get("d/ours") == entry("d/ours", "h2")


def test_our_own_move_carries_what_we_uploaded_before() -> None:
    view = RemoteView()
    view.apply(Create(meta("d", is_dir=True)), 1)
    assert view.set_if_unchanged("d/ours", entry("d/ours"), view.stamp("d/ours"))
    assert view.move_tree_if_unchanged("d", entry("m", is_dir=True), view.stamp("d"))
    assert sorted(view.paths()) == ["m", "m/ours"]
