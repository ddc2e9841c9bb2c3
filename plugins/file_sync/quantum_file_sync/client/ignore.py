"""Which paths the client leaves alone: ``--ignore GLOB`` options plus ``DIR/.quantumignore``.

Ignored paths are neither uploaded nor downloaded nor deleted, in either direction. Syntax, as in
``.gitignore`` (the glob engine is the server's :mod:`quantum_file_sync.patterns`):

- one pattern per line in ``.quantumignore``; blank lines and lines starting with ``#`` are skipped;
- a pattern without ``/`` matches a name at any depth (``*.tmp``, ``node_modules``);
- a pattern with ``/`` is anchored at the folder (``build/out``; a leading ``/`` is allowed);
- ``*`` stays inside one name, ``**`` spans directories, ``?`` and ``[abc]`` as usual;
- matching a directory ignores everything below it; a trailing ``/`` is accepted and dropped.

Top-level names starting with ``.quantum`` (``.quantum-sync/``, ``.quantumignore``...) are
reserved and never synced whatever the patterns say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from quantum_file_sync.paths import is_reserved
from quantum_file_sync.patterns import PathFilter, PatternError

IGNORE_FILE = ".quantumignore"


class IgnoreRules:
    __slots__ = ("_filter", "patterns")

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        self.patterns = tuple(patterns)
        translated = [_translate(p) for p in self.patterns]
        self._filter = PathFilter(translated) if translated else None

    @classmethod
    def load(cls, root: Path, extra: Iterable[str] = ()) -> IgnoreRules:
        """``extra`` (the ``--ignore`` options) plus the lines of ``root/.quantumignore``."""
        patterns = list(extra)
        ignore_file = root / IGNORE_FILE
        if ignore_file.is_file():
            for line in ignore_file.read_text(encoding="utf-8").splitlines():
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    patterns.append(stripped)
        return cls(patterns)

    def ignores(self, rel: str) -> bool:
        """Whether ``rel`` (or one of its parent directories) is excluded from sync."""
        if is_reserved(rel):
            return True
        return self._filter is not None and self._filter.matches(rel)


def _translate(pattern: str) -> str:
    text = pattern.strip().rstrip("/")
    if not text:
        raise PatternError(f"ignore pattern {pattern!r} is empty")
    if text.startswith("/"):
        return text.lstrip("/")
    return text if "/" in text else f"**/{text}"
