"""`radsynth ingest` end to end on small DICOM and NIfTI sources: volumes or slices come out,
conditions and masks survive, and nothing that identifies a patient or a source file does."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from conditioning.dataset import load_dataset
from pipelines.cli import main
from tests.test_ingest_dicom import write_series

SECRETS = ("Doe^Jane", "PAT-001", "1.2.3.4.5", "slice00", "secret_name", "pytest-of")


def ingest(source: Path, out: Path, *args: str) -> int:
    return main(
        ["ingest", str(source), "--out", str(out), "--size", "16", "--no-progress",
         "--key-file", str(out.parent / "pseudonym.key"), *args]
    )  # fmt: skip


def output_text(root: Path) -> str:
    """Every file of a dataset as text (NIfTI decompressed), to search for leaks."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            parts.append(path.relative_to(root).as_posix())
            parts.append(
                (gzip.decompress(data) if path.suffix == ".gz" else data).decode("latin-1")
            )
    return "\n".join(parts)


def dicom_source(root: Path) -> Path:
    """A 4-slice MR series of a 3-year-old boy, a non-DICOM file, and a DICOM without pixels."""
    src = root / "src"
    write_series(
        src / "series",
        values=[40, 10, 30, 20],
        positions=[3.0, 0.0, 2.0, 1.0],
        PatientAge="003Y",
        PatientSex="M",
    )
    (src / "secret_name.dcm").write_bytes(b"not dicom" * 30)
    return src


def test_dicom_series_to_3d_and_2d(tmp_path: Path) -> None:
    src = dicom_source(tmp_path)
    assert ingest(src, tmp_path / "vol", "--dimensionality", "3D") == 0
    volume = load_dataset(tmp_path / "vol")
    (record,) = volume.records
    assert volume.dimensionality == "3D" and volume.image_size == [4, 16, 16]
    assert record.conditions == {"age_months": 36.0, "sex": "M"}
    pixels = volume.load_image(record)
    means = pixels.reshape(4, -1).mean(axis=1)
    assert np.all(np.diff(means) > 0)  # slices 10, 20, 30, 40 in position order
    report = volume.info["ingest_report"]
    assert report["files_read"] == 5 and report["files_skipped"] == 1

    assert ingest(src, tmp_path / "flat") == 0
    flat = load_dataset(tmp_path / "flat")
    assert len(flat.records) == 4 and flat.image_size == [16, 16]
    assert {r.conditions["sex"] for r in flat.records} == {"M"}
    for out in (tmp_path / "vol", tmp_path / "flat"):
        text = output_text(out)
        leaked = [s for s in (*SECRETS, str(src)) if s in text]
        assert not leaked, f"{out.name} holds {leaked}"


def test_nifti_pairs_to_2d_slices_with_masks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = np.zeros((8, 8, 3), np.float32)
    data[2:6, 2:6, :] = 100.0
    data[0, 0, :] = [5.0, 10.0, 15.0]  # slices differ (identical ones would be deduplicated)
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[3:5, 3:5, 1] = 1  # the lesion is on the middle axial slice only
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), src / "case.nii.gz")
    nib.save(nib.Nifti1Image(mask, affine), src / "case_label.nii.gz")
    assert ingest(src, tmp_path / "ds") == 0
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.has_masks and len(dataset.records) == 3
    lesion = [int(dataset.load_mask(r).sum() > 0) for r in dataset.records]
    assert sorted(lesion) == [0, 0, 1]
    text = output_text(tmp_path / "ds")
    assert "case" not in json.dumps(dataset.info) and "case" not in text and str(src) not in text


def test_burned_in_text_is_skipped_scrubbed_or_flagged(tmp_path: Path, capfd) -> None:
    """Issue 19.2: deid-data's ultrasound declares BurnedInAnnotation YES and shows the
    patient's name, id and birth date in its pixels; ingest skips it by default (a named,
    counted reason), takes it with --scrub-burned-in, and screens PNGs for text-like marks."""
    import shutil

    import pytest

    deid_data = pytest.importorskip("deid_data")
    from PIL import Image, ImageDraw

    src = dicom_source(tmp_path)
    us = next(Path(deid_data.__file__).parent.rglob("GREYSCALE_IMAGE.dcm"))
    shutil.copyfile(us, src / "us.dcm")
    assert ingest(src, tmp_path / "default") == 0
    report = load_dataset(tmp_path / "default").info["ingest_report"]
    reason = "burned-in annotation (BurnedInAnnotation = YES); --scrub-burned-in or " \
             "--accept-burned-in to ingest it"  # fmt: skip
    assert report["skipped_by_reason"][reason] == 1
    assert len(load_dataset(tmp_path / "default").records) == 4  # the MR slices only

    assert ingest(src, tmp_path / "scrubbed", "--scrub-burned-in", "0,0,1024,24") == 0
    report = load_dataset(tmp_path / "scrubbed").info["ingest_report"]
    assert report["burned_in_accepted"] == 1 and reason not in report["skipped_by_reason"]
    assert report["source"]["options"]["scrub_boxes"] == [[0, 0, 1024, 24]]

    pngs = tmp_path / "pngs"
    for i in range(6):
        image = Image.fromarray(np.full((256, 256), 40 + 10 * i, np.uint8))
        if i == 0:
            ImageDraw.Draw(image).text((8, 6), "DOE^JOHN 1970-01-01 ID 123456", fill=255)
        pngs.mkdir(exist_ok=True)
        image.save(pngs / f"secret_name{i}.png")
    capfd.readouterr()
    assert ingest(pngs, tmp_path / "png") == 0
    report = load_dataset(tmp_path / "png").info["ingest_report"]
    assert report["possible_burned_in_text"] == 1
    assert any("1 image(s) show text-like marks" in n for n in report["notes"])
    warning = [line for line in capfd.readouterr().err.splitlines() if "text-like" in line]
    assert warning and "secret_name" not in warning[0]
