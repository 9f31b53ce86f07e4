"""Train/val/test assignment by patient, seeded and stratified by a label where there is one.

A split the source prescribes is kept; splits it lacks (val, and test when absent) are carved
from its train patients. Sources without any split are divided by patient with the fractions.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

SPLITS = ("train", "val", "test")


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val", val_fraction), ("test", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"--{name}-fraction {value} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError("--val-fraction plus --test-fraction must leave patients for train")


def _carve(
    strata: dict[str, list[str]], fractions: dict[str, float], rng: np.random.Generator
) -> dict[str, str]:
    """Assign the patients of each stratum: `fractions` of them to those splits, rest to train."""
    out: dict[str, str] = {}
    total = sum(len(keys) for keys in strata.values())
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        order = [keys[i] for i in rng.permutation(len(keys))]
        start = 0
        for split, fraction in fractions.items():
            n = int(round(fraction * len(order)))
            for key in order[start : start + n]:
                out[key] = split
            start += n
        for key in order[start:]:
            out[key] = "train"
    # tiny strata can round every split to zero: make sure a requested split is not empty
    for split, fraction in fractions.items():
        if fraction > 0 and split not in out.values() and total > len(fractions):
            donors = sorted(k for k, s in out.items() if s == "train")
            if len(donors) > 1:
                out[donors[int(rng.integers(len(donors)))]] = split
    return out


def assign_splits(
    patients: dict[str, tuple[str | None, str | None]],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, str]:
    """`patients` maps a patient key to (split the source gives or None, stratum label or None);
    returns patient key -> split."""
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    given = {k: s for k, (s, _) in patients.items() if s is not None}
    for split in given.values():
        if split not in SPLITS:
            raise ValueError(f"source split {split!r} is not one of {', '.join(SPLITS)}")
    out = dict(given)
    present = set(given.values())
    missing = {
        s: f for s, f in (("val", val_fraction), ("test", test_fraction)) if s not in present
    }
    if given and missing:
        strata: dict[str, list[str]] = defaultdict(list)
        for key, split in given.items():
            if split == "train":
                strata[str(patients[key][1])].append(key)
        out.update(_carve(strata, missing, rng))
    free: dict[str, list[str]] = defaultdict(list)
    for key, (split, stratum) in patients.items():
        if split is None:
            free[str(stratum)].append(key)
    if free:
        out.update(_carve(free, {"val": val_fraction, "test": test_fraction}, rng))
    return out
