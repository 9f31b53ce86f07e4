"""The planted copies of the copy-detection benchmark record what each alteration drew, so the
flag rate can be read per strength (privacy_audit/challenge.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from privacy_audit.challenge import (
    ALTERATIONS,
    PARAMETERS,
    PHOTOMETRIC,
    STRENGTH_BINS,
    Planted,
    altered,
    altered_fresh,
    copy_group,
    flagged_by_group,
    flagged_by_strength,
    planted_copies,
    write_challenge_set,
    write_planted,
)

RANGES = {  # what a reviewer still calls the same image (the ranges challenge.py draws from)
    "rotate_deg": (2.0, 6.0),
    "crop_frac": (0.82, 0.95),
    "blend_share": (0.6, 0.75),
    "patch_area": (0.7**2 - 0.02, 0.85**2 + 0.02),  # rounded to whole pixels
    "jpeg_quality": (40, 85),
}


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((32, 32)).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("kind", ALTERATIONS)
def test_each_alteration_records_what_it_drew(kind):
    image, other = _images(2)
    x, drawn = altered(image, (kind,), np.random.default_rng(1), other)
    assert set(drawn) == set(PARAMETERS.get(kind, ()))
    for key, (lo, hi) in RANGES.items():
        if key in drawn:
            assert lo <= abs(drawn[key]) <= hi, (key, drawn[key])
    # the alteration did something, and only the generator decides what: replayable
    assert not np.array_equal(x, image)
    again, drawn_again = altered(image, (kind,), np.random.default_rng(1), other)
    assert np.array_equal(x, again) and drawn == drawn_again


def test_planted_copies_keep_every_copy_s_draws():
    train, donors = _images(20), _images(3, seed=1)
    planted = planted_copies(lambda i: train[i], len(train), donors, 15, np.random.default_rng(2))
    assert len(planted.copies) == len(planted.kinds) == len(planted.sources) == 15
    assert len(planted.drawn) == 15
    for kinds, drawn in zip(planted.kinds, planted.drawn, strict=True):
        assert set(drawn) == {p for k in kinds for p in PARAMETERS.get(k, ())}
        assert all(isinstance(v, float) for v in drawn.values())


def test_flag_rate_per_group_of_copies():
    kinds = [
        ("noise", "crop_resize"),  # whole, however moved
        ("blend", "gamma"),  # partial, not moved
        ("patch", "mirror"),  # a mirror moves no part of the film out of place
        ("blend", "shift"),
        ("patch", "rotate", "contrast"),
        ("blend", "crop_resize", "shift"),  # cropped wins over moved
    ]
    assert [copy_group(k) for k in kinds] == [
        "whole",
        "partial",
        "partial",
        "partial_moved",
        "partial_moved",
        "partial_cropped",
    ]
    out = flagged_by_group([True, True, False, True, False, False], kinds)
    counts = {g: (v["copies"], v["flagged"]) for g, v in out.items()}
    assert counts == {
        "whole": (1, 1),
        "partial": (2, 1),
        "partial_moved": (2, 1),
        "partial_cropped": (1, 0),
    }
    low, high = out["partial"]["ci95"]
    assert 0.0 < low < 0.5 < high < 1.0


def test_flag_rate_per_strength_bin():
    drawn = [{"blend_share": 0.61}, {"blend_share": 0.62}, {"blend_share": 0.75}, {"scale": 0.97}]
    out = flagged_by_strength([True, False, True, True], drawn)
    assert set(out) == set(STRENGTH_BINS)
    blend = [(b["from"], b["copies"], b["flagged"]) for b in out["blend_share"]]
    assert blend == [(0.60, 2, 1), (0.65, 0, 0), (0.70, 1, 1)]  # the last edge is inside
    assert [b["copies"] for b in out["scale"]] == [0, 1, 0, 0]  # |0.97 - 1| = 0.03
    assert sum(b["copies"] for b in out["crop_frac"]) == 0


def test_the_truth_file_names_source_alterations_and_draws(tmp_path):
    planted = Planted(
        copies=_images(2),
        kinds=[("blend",), ("mirror", "shift")],
        sources=[4, 7],
        drawn=[{"blend_share": 0.7}, {"shift_dy": -2.0, "shift_dx": 1.0}],
    )
    truth = {"images/a.png": ("copy", 1), "images/b.png": ("fresh", 0), "images/c.png": ("copy", 0)}
    samples = {
        "images/a.png": (3.5, True),
        "images/b.png": (0.2, False),
        "images/c.png": (1.0, False),
    }
    write_planted(tmp_path / "planted.csv", truth, planted, ["img4", "img7"], samples)
    with open(tmp_path / "planted.csv", newline="") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle)}
    assert rows["images/a.png"]["source"] == "img7"
    assert rows["images/a.png"]["alterations"] == "mirror+shift"
    assert (
        float(rows["images/a.png"]["shift_dy"]) == -2.0 and rows["images/a.png"]["flagged"] == "1"
    )
    assert rows["images/c.png"]["blend_share"] == "0.7" and rows["images/c.png"]["shift_dx"] == ""
    assert rows["images/b.png"]["truth"] == "fresh" and rows["images/b.png"]["source"] == ""


def test_fresh_images_are_altered_photometrically_and_reproducibly():
    """The control's fresh images change in pixels only (no copy of anything), each by one or
    two of PHOTOMETRIC; the same seed gives the same images."""
    fresh = _images(12)
    first, kinds = altered_fresh(fresh, np.random.default_rng(3))
    again, _ = altered_fresh(fresh, np.random.default_rng(3))
    assert all(1 <= len(k) <= 2 and set(k) <= set(PHOTOMETRIC) for k in kinds)
    assert len({k for ks in kinds for k in ks}) >= 3
    for before, after, same in zip(fresh, first, again, strict=True):
        assert after.shape == before.shape and not np.array_equal(after, before)
        assert np.array_equal(after, same)


def test_altered_fresh_images_leave_the_rest_of_the_set_in_place(tmp_path):
    """Adding the control's images changes no copy's or fresh image's file: a set measured
    before the control still compares image for image."""
    copies, fresh = _images(5, seed=1), _images(4, seed=2)
    plain = write_challenge_set(tmp_path / "a", copies, fresh, seed=7)
    extra = write_challenge_set(tmp_path / "b", copies, fresh, seed=7, fresh_altered=_images(3))
    assert {f: t for f, t in extra.items() if t[0] != "fresh_altered"} == plain
    assert sorted(i for kind, i in extra.values() if kind == "fresh_altered") == [0, 1, 2]
    for file in plain:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
