"""Pixel spacing (issue 18.4): ingest records the spacing of the stored, resized pixels where the
source gives one and nothing where it does not; the dataset format stores and validates it; a
dataset's one typical spacing is what the DICOM export may claim (tests/test_release.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conditioning.dataset import DatasetError, load_dataset, write_split_sample
from conditioning.dataset.spacing import typical_spacing
from pipelines.cli import main
from pipelines.ingest.pipeline import ingest as ingest_images
from pipelines.ingest.resize import resize_2d, resized_spacing
from pipelines.ingest.source import IngestOptions, SourceImage
from tests.conftest import make_tiny_dataset
from tests.test_ingest_dicom import write_dicom


def _ingest(source: Path, out: Path, *args: str) -> int:
    return main(
        ["ingest", str(source), "--out", str(out), "--size", "16", "--no-progress",
         "--key-file", str(out.parent / "pseudonym.key"), *args]
    )  # fmt: skip


def _manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _radiographs(src: Path, shape: tuple[int, int], **spacing) -> None:
    """Five single-frame projection radiographs of five patients (their own series each)."""
    rng = np.random.default_rng(shape[0])
    for i in range(5):
        write_dicom(
            src / f"cr{i}.dcm",
            (rng.random(shape) * 4000).astype(np.uint16),
            Modality="CR",
            PatientID=f"PAT-{i:03d}",
            SeriesInstanceUID=f"1.2.3.4.{i + 10}",
            **spacing,
        )


def test_dicom_ingest_records_the_spacing_of_the_resized_pixels(tmp_path: Path) -> None:
    """64x64 pixels of 0.5 mm stored at 16x16 are pixels of 2 mm."""
    _radiographs(tmp_path / "src", (64, 64), PixelSpacing=[0.5, 0.5])
    assert _ingest(tmp_path / "src", tmp_path / "ds") == 0
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.has_spacing and dataset.info["has_spacing"] is True
    assert [r.spacing for r in dataset.records] == [(2.0, 2.0)] * 5
    assert {row["spacing_mm"] for row in _manifest(tmp_path / "ds")} == {"2 2"}
    assert dataset.typical_spacing().mm == (2.0, 2.0)
    log = (tmp_path / "ds" / "ingest.log").read_text()
    assert "pixel spacing recorded for 5 of 5 image(s)" in log

    # ImagerPixelSpacing when PixelSpacing is absent; each axis scaled by its own factor:
    # 64 rows of 0.25 mm and 32 columns of 0.5 mm are 16 mm square, stored at 16x16
    _radiographs(tmp_path / "imager", (64, 32), ImagerPixelSpacing=[0.25, 0.5])
    assert _ingest(tmp_path / "imager", tmp_path / "ds-imager") == 0
    assert {r.spacing for r in load_dataset(tmp_path / "ds-imager").records} == {(1.0, 1.0)}


def test_png_source_records_no_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("normal", "viral"):
        for i in range(4):
            path = tmp_path / "src" / label / f"{label}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(path)
    assert _ingest(tmp_path / "src", tmp_path / "ds") == 0
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.info["has_spacing"] is False and not dataset.has_spacing
    assert all(r.spacing is None for r in dataset.records)
    assert "spacing_mm" not in _manifest(tmp_path / "ds")[0]
    assert dataset.typical_spacing().mm is None


def test_resized_spacing_follows_each_axis_of_the_resize() -> None:
    # pad: 64x32 at 0.5 mm becomes 16x8 inside the 16x16 grid, 2 mm both ways
    assert resized_spacing((64, 32), 16, "pad", (0.5, 0.5)) == (2.0, 2.0)
    content = resize_2d(np.ones((64, 32), np.float32), 16, "pad", (0.5, 0.5))
    assert content.any(axis=0).sum() == 8 and content.any(axis=1).sum() == 16
    assert resized_spacing((64, 32), 16, "stretch", (0.5, 0.5)) == (2.0, 1.0)
    assert resized_spacing((64, 32), 16, "crop", (0.5, 0.5)) == (1.0, 1.0)
    # a volume: in plane as above, depth resampled from 5 to 4 slices (or kept)
    assert resized_spacing((5, 12, 20), 16, "pad", (2.0, 1.0, 1.0), 4) == (2.5, 1.2, 1.25)
    assert resized_spacing((5, 12, 20), 16, "pad", (2.0, 1.0, 1.0)) == (2.0, 1.2, 1.25)
    # no spacing, or one that is not positive and finite: none is made up
    for spacing in (None, (0.0, 1.0), (float("nan"), 1.0), (-1.0, 1.0), (1.0,)):
        assert resized_spacing((64, 32), 16, "pad", spacing) is None


def test_volumes_and_their_slices_record_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    volumes = [
        SourceImage(rng.normal(500, 100, (5, 12, 20)).astype(np.float32), f"p{i}", {},
                    spacing=(2.0, 1.0, 1.0))
        for i in range(4)
    ]  # fmt: skip
    options = IngestOptions(size=16, dimensionality="3D", depth=4, val_fraction=0.25,
                            test_fraction=0.25)  # fmt: skip
    volume = ingest_images(tmp_path / "src", tmp_path / "vol", options, kind="nifti",
                           images=volumes, key_file=tmp_path / "k.key", progress=False)  # fmt: skip
    assert {r.spacing for r in volume.records} == {(2.5, 1.2, 1.25)}
    stored = nib.load(volume.root / volume.records[0].file)
    assert tuple(float(z) for z in stored.header.get_zooms()) == pytest.approx((2.5, 1.2, 1.25))

    for axis, expected in ((0, (1.2, 1.25)), (1, (1.25, 1.25))):
        options = IngestOptions(size=16, slice_axis=axis, val_fraction=0.25, test_fraction=0.25)
        flat = ingest_images(tmp_path / "src", tmp_path / f"flat{axis}", options, kind="nifti",
                             images=volumes, key_file=tmp_path / "k.key", progress=False)  # fmt: skip
        assert {r.spacing for r in flat.records} == {expected}, axis


def _rewrite(root: Path, column: str, value: str) -> None:
    rows = _manifest(root)
    rows[0][column] = value
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("value", ["abc 0.7", "-0.7 0.7", "0 0.7", "nan 0.7", "inf 0.7", "0.7"])
def test_a_corrupt_spacing_names_the_file_line_and_problem(tmp_path: Path, value: str) -> None:
    root = make_tiny_dataset(tmp_path / "ds", spacing=(0.7, 0.7))
    assert load_dataset(root).records[0].spacing == (0.7, 0.7)
    _rewrite(root, "spacing_mm", value)
    with pytest.raises(DatasetError) as error:
        load_dataset(root)
    message = str(error.value)
    assert message.startswith(f"{root / 'manifest.csv'}: line 2: spacing_mm {value!r}")
    assert "must be 2 positive finite numbers in mm (row, column)" in message


def test_has_spacing_must_be_a_boolean_and_match_the_manifest(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", spacing=(0.7, 0.7))
    info = json.loads((root / "dataset.json").read_text())
    info["has_spacing"] = "yes"
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"dataset\.json: has_spacing must be true or false"):
        load_dataset(root)
    info["has_spacing"] = False  # the manifest still has the column
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"manifest\.csv: header is .*,spacing_mm; expected"):
        load_dataset(root)


def test_the_writer_refuses_a_bad_spacing_and_copies_keep_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be 2 positive finite numbers"):
        make_tiny_dataset(tmp_path / "bad", spacing=(0.7, -0.7))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="must be 2 positive finite numbers"):
        make_tiny_dataset(tmp_path / "bad", spacing=(0.7, 0.7, 0.7))
    source = load_dataset(make_tiny_dataset(tmp_path / "ds", spacing=(0.7, 0.7)))
    sample = write_split_sample(source, tmp_path / "sample", count=3)
    assert sample.has_spacing and {r.spacing for r in sample.records} == {(0.7, 0.7)}
    plain = write_split_sample(load_dataset(make_tiny_dataset(tmp_path / "plain")),
                               tmp_path / "plain-sample", count=3)  # fmt: skip
    assert not plain.has_spacing


def test_one_typical_spacing_only_when_the_images_agree() -> None:
    agreeing = [(2.0, 2.0)] * 18 + [(2.1, 1.9), (1.9, 2.1)]
    assert typical_spacing(agreeing).mm == (2.0, 2.0)
    # one image in twenty may differ or lack a spacing (5%), not more
    assert typical_spacing([(2.0, 2.0)] * 19 + [(4.0, 4.0)]).mm == (2.0, 2.0)
    assert typical_spacing([(2.0, 2.0)] * 19 + [None]).mm == (2.0, 2.0)
    spread = typical_spacing([(2.0, 2.0)] * 10 + [(3.0, 3.0)] * 10)
    assert spread.mm is None and "spacings disagree (2 to 3, 2 to 3 mm" in spread.note
    missing = typical_spacing([(2.0, 2.0)] * 18 + [None, None])
    assert missing.mm is None and missing.note == "2 of 20 images record no spacing"
    assert typical_spacing([]).mm is None
