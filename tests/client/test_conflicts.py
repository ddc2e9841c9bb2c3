from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from quantum_file_sync.client.conflicts import conflict_name, free_conflict_name, is_conflict_copy

WHEN = datetime(2024, 1, 15, 10, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("report.txt", "report.sync-conflict-20240115-103005-laptop.txt"),
        ("docs/report.txt", "docs/report.sync-conflict-20240115-103005-laptop.txt"),
        ("archive.tar.gz", "archive.tar.sync-conflict-20240115-103005-laptop.gz"),
        ("Makefile", "Makefile.sync-conflict-20240115-103005-laptop"),
        ("a/.bashrc", "a/.bashrc.sync-conflict-20240115-103005-laptop"),
    ],
)
def test_conflict_name(path: str, expected: str) -> None:
    assert conflict_name(path, "laptop", WHEN) == expected
    assert is_conflict_copy(expected)
    assert not is_conflict_copy(path)


def test_time_is_utc_and_client_id_is_made_filename_safe() -> None:
    local = WHEN.astimezone(timezone(timedelta(hours=5)))
    name = conflict_name("x.txt", "box.example:42/evil", local)
    assert name == "x.sync-conflict-20240115-103005-box-example-42-evil.txt"


def test_long_names_stay_within_255_bytes() -> None:
    name = conflict_name("d/" + "é" * 120 + ".txt", "c", WHEN)
    assert len(name.split("/")[1].encode()) <= 255
    assert name.endswith(".sync-conflict-20240115-103005-c.txt")


def test_free_conflict_name_skips_taken_names() -> None:
    taken = {conflict_name("a.txt", "c", WHEN), conflict_name("a.txt", "c-2", WHEN)}
    assert free_conflict_name("a.txt", "c", taken.__contains__, WHEN) == conflict_name(
        "a.txt", "c-3", WHEN
    )
