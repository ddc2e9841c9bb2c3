from __future__ import annotations

from pathlib import Path

import pytest
from quantum_file_sync.client.exit_codes import ExitCode, MassDeleteTripped
from quantum_file_sync.client.guard import MassDeleteGuard


@pytest.mark.parametrize(
    ("deleting", "tracked", "trips"),
    [
        (0, 100, False),
        (1, 1, False),  # the only file: an ordinary edit
        (2, 2, True),  # the whole folder
        (3, 4, False),  # most, but few
        (4, 4, True),
        (9, 10, False),
        (10, 19, True),
        (10, 20, False),  # exactly half is not more than half
        (11, 20, True),
        (500, 1000, False),
        (501, 1000, True),
    ],
)
def test_thresholds(deleting: int, tracked: int, trips: bool) -> None:
    assert MassDeleteGuard().trips(deleting, tracked) is trips


def test_disabled_guard_never_trips(tmp_path: Path) -> None:
    guard = MassDeleteGuard(enabled=False)
    assert not guard.trips(1000, 1000)
    guard.check_local_deletes(1000, 1000, tmp_path / "missing")


def test_messages_say_what_happened_and_how_to_proceed(tmp_path: Path) -> None:
    guard = MassDeleteGuard()
    with pytest.raises(MassDeleteTripped) as local:
        guard.check_local_deletes(30, 40, tmp_path)
    assert local.value.code == ExitCode.MASS_DELETE
    assert "30 of 40" in local.value.message
    assert "nothing was deleted on the server" in local.value.message
    assert "--allow-mass-delete" in local.value.message
    with pytest.raises(MassDeleteTripped, match=r"folder .* is gone"):
        guard.check_local_deletes(0, 40, tmp_path / "gone")
    with pytest.raises(MassDeleteTripped, match="nothing was deleted locally"):
        guard.check_remote_deletes(40, 40, "http://server")
