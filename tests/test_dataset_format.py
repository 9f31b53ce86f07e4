"""The dataset format: what every reader relies on is validated, with the file named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conditioning.dataset import DatasetError, load_dataset, pixel_sha256
from tests.conftest import make_tiny_dataset


def _rewrite_manifest(root: Path, edit) -> None:
    path = root / "manifest.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0].keys())
    edit(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_roundtrip_counts_and_pixels(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset, verify_pixels=True)
    assert ds.schema.names == ["pathology", "age_months"]
    assert len(ds.records) == 18
    counts = ds.info["counts"]
    assert sum(counts[s]["images"] for s in ("train", "val", "test")) == 18
    assert counts["train"]["pathology"] == {"normal": 4, "bacterial": 4, "viral": 4}
    image = ds.load_image(ds.records[0])
    assert (
        image.dtype == np.float32
        and image.shape == (16, 16)
        and 0 <= image.min() <= image.max() <= 1
    )
    assert pixel_sha256(ds.read_pixels(ds.records[0])) == ds.records[0].sha256


def test_masks_are_paired(tmp_path: Path) -> None:
    ds = load_dataset(make_tiny_dataset(tmp_path / "m", with_masks=True))
    record = ds.records[0]
    mask = ds.load_mask(record)
    assert mask is not None and mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 1}
    assert record.mask_file.startswith("masks/")


def test_patient_in_two_splits_is_rejected(tiny_dataset: Path) -> None:
    def leak(rows):
        rows[1]["patient_id"] = rows[0]["patient_id"]
        rows[1]["split"] = "test"
        rows[0]["split"] = "train"

    _rewrite_manifest(tiny_dataset, leak)
    with pytest.raises(DatasetError, match="more than one split"):
        load_dataset(tiny_dataset)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("pathology", "covid", "not allowed"),
        ("age_months", "400", "outside the range"),
        ("split", "holdout", "not one of"),
        ("file", "../escape.png", "relative path inside"),
    ],
)
def test_bad_rows_name_file_and_line(
    tiny_dataset: Path, column: str, value: str, message: str
) -> None:
    _rewrite_manifest(tiny_dataset, lambda rows: rows[2].__setitem__(column, value))
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(tiny_dataset)
    assert "manifest.csv" in str(info.value) and "line 4" in str(info.value)


def test_missing_image_and_bad_json(tiny_dataset: Path) -> None:
    ds = load_dataset(tiny_dataset)
    (tiny_dataset / ds.records[3].file).unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_dataset(tiny_dataset)
    (tiny_dataset / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: not valid JSON"):
        load_dataset(tiny_dataset)


def test_counts_must_match(tiny_dataset: Path) -> None:
    path = tiny_dataset / "dataset.json"
    info = json.loads(path.read_text())
    info["counts"]["train"]["images"] += 1
    path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="counts"):
        load_dataset(tiny_dataset)


def test_tampered_pixels_detected(tiny_dataset: Path) -> None:
    from PIL import Image

    ds = load_dataset(tiny_dataset)
    target = tiny_dataset / ds.records[0].file
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(target)
    with pytest.raises(DatasetError, match="do not match sha256"):
        load_dataset(tiny_dataset, verify_pixels=True)


def test_failed_write_leaves_previous_dataset(tmp_path: Path) -> None:
    from conditioning.dataset import DatasetSpec, DatasetWriter

    out = make_tiny_dataset(tmp_path / "keep")
    before = (out / "manifest.csv").read_bytes()
    ds = load_dataset(out)
    with pytest.raises(RuntimeError):
        spec = DatasetSpec("x", "DX", "2D", [16, 16], 8, ds.schema)
        with DatasetWriter(out, spec, overwrite=True) as writer:
            writer.add(np.zeros((16, 16), np.uint8), split="train", patient_id="p", conditions={})
            raise RuntimeError("interrupted")
    assert (out / "manifest.csv").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_request_validation_lists_allowed(tiny_dataset: Path) -> None:
    schema = load_dataset(tiny_dataset).schema
    assert schema.validate_request({"pathology": "viral"}) == {
        "pathology": "viral",
        "age_months": None,
    }
    with pytest.raises(ValueError, match="allowed: normal, bacterial, viral"):
        schema.validate_request({"pathology": "covid"})
    with pytest.raises(ValueError, match="unknown condition attribute"):
        schema.validate_request({"view": "PA"})
