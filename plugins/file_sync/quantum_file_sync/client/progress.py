"""Counting what a sync did, the progress bar of long passes, and the summary line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass
class SyncStats:
    downloaded: int = 0
    downloaded_bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    deleted_local: int = 0
    deleted_remote: int = 0
    moved: int = 0
    dirs_created: int = 0
    adopted: int = 0
    conflicts: int = 0
    errors: int = 0
    unreachable: int = 0
    """Of the errors, those where the server could not be reached."""
    refused: int = 0
    chunks_uploaded: int = 0
    chunk_bytes_uploaded: int = 0
    chunks_downloaded: int = 0
    chunk_bytes_downloaded: int = 0
    chunks_reused: int = 0
    """Chunks of block downloads copied from local files instead of fetched."""
    chunk_bytes_reused: int = 0
    failed_paths: set[str] = field(default_factory=set)

    def summary(self) -> str:
        parts = [
            f"{self.downloaded} downloaded ({human_bytes(self.downloaded_bytes)})",
            f"{self.uploaded} uploaded ({human_bytes(self.uploaded_bytes)})",
            f"{self.deleted_local + self.deleted_remote} deleted",
            f"{self.moved} moved",
            f"{self.conflicts} conflicts",
            f"{self.errors} errors",
        ]
        if self.refused:
            parts.append(f"{self.refused} unsafe paths refused")
        if self.chunks_uploaded or self.chunks_downloaded or self.chunks_reused:
            parts.append(
                f"chunks: {self.chunks_uploaded} sent ({human_bytes(self.chunk_bytes_uploaded)}), "
                f"{self.chunks_downloaded} fetched ({human_bytes(self.chunk_bytes_downloaded)}), "
                f"{self.chunks_reused} reused ({human_bytes(self.chunk_bytes_reused)})"
            )
        return ", ".join(parts)

    def fields(self) -> dict[str, int]:
        return {
            "downloaded": self.downloaded,
            "downloaded_bytes": self.downloaded_bytes,
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "deleted_local": self.deleted_local,
            "deleted_remote": self.deleted_remote,
            "moved": self.moved,
            "dirs_created": self.dirs_created,
            "adopted": self.adopted,
            "conflicts": self.conflicts,
            "errors": self.errors,
            "unreachable": self.unreachable,
            "refused": self.refused,
            "chunks_uploaded": self.chunks_uploaded,
            "chunk_bytes_uploaded": self.chunk_bytes_uploaded,
            "chunks_downloaded": self.chunks_downloaded,
            "chunk_bytes_downloaded": self.chunk_bytes_downloaded,
            "chunks_reused": self.chunks_reused,
            "chunk_bytes_reused": self.chunk_bytes_reused,
        }


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A tqdm bar (bytes, with files done/total and ETA) while a pass transfers, when enabled;
    otherwise every call is a no-op."""

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bar: tqdm[Any] | None = None
        self._files_total = 0
        self._files_done = 0

    @property
    def active(self) -> bool:
        return self._bar is not None

    def start(self, files: int, total_bytes: int, description: str = "sync") -> None:
        if not self.enabled or files == 0:
            return
        from tqdm import tqdm  # only when a terminal shows the bar

        self._files_total = files
        self._files_done = 0
        self._bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=description,
            file=self.stream,
            dynamic_ncols=True,
            leave=False,
        )
        self._bar.set_postfix_str(self._postfix(), refresh=False)

    def add_bytes(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def file_done(self) -> None:
        if self._bar is not None:
            self._files_done += 1
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def write(self, line: str) -> None:
        """Print above the bar (used by the log renderer while a bar is shown)."""
        if self._bar is not None:
            self._bar.write(line.rstrip("\n"), file=self.stream)
        else:
            self.stream.write(line)
            self.stream.flush()

    def _postfix(self) -> str:
        return f"files {self._files_done}/{self._files_total}"
