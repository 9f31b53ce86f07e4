"""write_split_sample: the tiny training split of the memorization control."""

from __future__ import annotations

import json

import pytest

from conditioning.dataset import load_dataset, write_split_sample

from .audit_data import make_patient_dataset


def test_split_sample_keeps_one_image_per_patient_and_the_other_splits(tmp_path):
    parent = load_dataset(make_patient_dataset(tmp_path / "data", train=30, val=10, test=5))
    tiny = write_split_sample(parent, tmp_path / "tiny", count=12, seed=3)
    train = tiny.split("train")
    assert len(train) == 12
    assert len({r.patient_id for r in train}) == 12  # one image per patient
    parent_train = {(r.patient_id, r.sha256) for r in parent.split("train")}
    assert {(r.patient_id, r.sha256) for r in train} <= parent_train  # the pixels, unchanged
    for split in ("val", "test"):
        assert sorted(r.sha256 for r in tiny.split(split)) == sorted(
            r.sha256 for r in parent.split(split)
        )
    again = write_split_sample(parent, tmp_path / "again", count=12, seed=3)
    assert sorted(r.sha256 for r in again.split("train")) == sorted(r.sha256 for r in train)
    info = json.loads((tmp_path / "tiny" / "dataset.json").read_text())
    rule = info["ingest_report"]["subset"]  # the rule that made it is recorded
    assert (rule["split"], rule["sample"], rule["seed"], rule["kept"]) == ("train", 12, 3, 12)
    with pytest.raises(ValueError, match="count must lie in 1..30"):
        write_split_sample(parent, tmp_path / "big", count=31)
