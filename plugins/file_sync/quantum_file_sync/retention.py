"""Which versions of one path retention keeps: Nextcloud's thinning, a maximum age, a floor.

Pure functions over times, so the rules are tested on their own (the store applies them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
KEEP_ALL_FOR = HOUR
HOURLY_FOR = DAY
DAILY_FOR = 30 * DAY


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    keep_at_least: int = 3
    """The newest N versions of a path survive thinning and ``max_age``."""
    max_age: float | None = None
    """Seconds; ``None``: no age limit."""


def slot(replaced: float, now: float) -> tuple[str, int] | None:
    """The thinning slot of a version replaced at ``replaced`` (``None``: kept regardless)."""
    age = now - replaced
    if age < KEEP_ALL_FOR:
        return None
    if age < HOURLY_FOR:
        return ("hour", int(replaced // HOUR))
    if age < DAILY_FOR:
        return ("day", int(replaced // DAY))
    return ("week", int(replaced // WEEK))


def to_drop(
    replaced_newest_first: Sequence[float], now: float, policy: RetentionPolicy
) -> list[int]:
    """Indexes of the versions (given newest first) that thinning and the age limit drop.

    Each slot keeps its newest version; versions in the floor are kept but still fill their
    slot, so an older one in the same hour (day, week) is dropped."""
    drop: list[int] = []
    filled: set[tuple[str, int]] = set()
    for position, replaced in enumerate(replaced_newest_first):
        key = slot(replaced, now)
        protected = position < policy.keep_at_least
        too_old = policy.max_age is not None and now - replaced > policy.max_age
        if not protected and (too_old or (key is not None and key in filled)):
            drop.append(position)
            continue
        if key is not None:
            filled.add(key)
    return drop
