"""Exact duplicate detection on the decoded source pixels at full resolution (so resizing can
never make two different images look the same), plus a separate count of images that only
become identical after resizing and quantisation (reported, not removed)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from conditioning.dataset import pixel_sha256


def source_hash(pixels: np.ndarray) -> str:
    """Hash of the decoded source pixels (float32, full resolution)."""
    return pixel_sha256(np.asarray(pixels, dtype=np.float32))


class DuplicateFilter:
    """Keeps the first image of each group of identical source images."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[str | None, dict]] = {}
        self.removed_by_split: Counter = Counter()
        self.groups: set[str] = set()
        self.label_conflicts = 0

    def is_duplicate(self, digest: str, split: str | None, conditions: dict) -> bool:
        if digest not in self._first:
            self._first[digest] = (split, dict(conditions))
            return False
        self.groups.add(digest)
        self.removed_by_split[split or "unsplit"] += 1
        if self._first[digest][1] != conditions:
            self.label_conflicts += 1
        return True

    @property
    def removed(self) -> int:
        return sum(self.removed_by_split.values())


def stored_collisions(hashes: list[str]) -> dict[str, int]:
    """Groups and images sharing stored pixels although their source pixels differ."""
    tally = Counter(hashes)
    groups = [n for n in tally.values() if n > 1]
    return {"groups": len(groups), "images": sum(groups)}
