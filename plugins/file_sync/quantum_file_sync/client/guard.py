"""The mass-delete guard: stop instead of propagating a wipe-out.

An unmounted disk, an ``rm -rf *`` in the wrong window or a server that lost its data all look
like "everything was deleted". Propagating that would delete the other side too, so the guard
trips — the client stops with :class:`MassDeleteTripped` before deleting anything — when, at once:

- the folder itself is gone (or is no longer a directory), or
- every tracked file disappeared (when at least ``MIN_WHOLE`` files are tracked), or
- more than ``fraction`` of the tracked files disappeared, counting only when at least
  ``min_files`` of them did (deleting 3 of 4 files is an ordinary edit).

``--allow-mass-delete`` disables it for one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantum_file_sync.client.exit_codes import MassDeleteTripped

MIN_WHOLE = 2
OVERRIDE = "--allow-mass-delete"


@dataclass(frozen=True, slots=True)
class MassDeleteGuard:
    enabled: bool = True
    fraction: float = 0.5
    min_files: int = 10

    def trips(self, deleting: int, tracked: int) -> bool:
        if not self.enabled or deleting <= 0 or tracked <= 0:
            return False
        if deleting >= tracked and tracked >= MIN_WHOLE:
            return True
        return deleting >= self.min_files and deleting > self.fraction * tracked

    def check_local_deletes(self, deleting: int, tracked: int, root: Path) -> None:
        """Local files vanished: may their deletion be sent to the server?"""
        if self.enabled and not root.is_dir():
            raise MassDeleteTripped(
                f"mass-delete guard: the folder {root} is gone; nothing was deleted on the "
                f"server. Restore the folder, or remove it from sync"
            )
        if self.trips(deleting, tracked):
            raise MassDeleteTripped(
                f"mass-delete guard: {deleting} of {tracked} tracked files disappeared from "
                f"{root} at once; nothing was deleted on the server. If this is intended, "
                f"run again with {OVERRIDE}"
            )

    def check_remote_deletes(self, deleting: int, tracked: int, server: str) -> None:
        """Files vanished from the server: may they be deleted locally?"""
        if self.trips(deleting, tracked):
            raise MassDeleteTripped(
                f"mass-delete guard: {deleting} of {tracked} tracked files are gone from "
                f"{server}; nothing was deleted locally. If this is intended, run again "
                f"with {OVERRIDE}"
            )
