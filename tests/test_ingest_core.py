"""The common ingest steps: resize, intensity, patient splits, pseudonyms, volumes (sliced into
2D with paired masks, or kept 3D), and source-kind detection."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from pipelines.ingest.detect import detect_kind
from pipelines.ingest.intensity import intensity_range, normalise
from pipelines.ingest.pipeline import ingest
from pipelines.ingest.pseudonym import load_or_create_key, pseudonymise
from pipelines.ingest.resize import resize_2d, resize_3d
from pipelines.ingest.source import IngestError, IngestOptions, SourceImage
from pipelines.ingest.splitting import assign_splits


@pytest.fixture(autouse=True)
def pseudonym_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "keys" / "pseudonym.key"
    monkeypatch.setenv("RADSYNTH_PSEUDONYM_KEY_FILE", str(key))
    return key


def test_resize_keeps_aspect_by_padding_or_crops_or_stretches() -> None:
    wide = np.ones((10, 40), dtype=np.float32)
    padded = resize_2d(wide, 16, "pad")
    assert padded.shape == (16, 16)
    assert padded[:6].max() == 0 and padded[-6:].max() == 0 and padded[7:9].min() > 0.99
    assert resize_2d(wide, 16, "crop").min() > 0.99
    assert resize_2d(wide, 16, "stretch").min() > 0.99
    # physical spacing decides the aspect: 10 rows of 4 mm are as tall as 40 columns of 1 mm
    assert resize_2d(wide, 16, "pad", spacing=(4.0, 1.0)).min() > 0.99
    mask = np.zeros((10, 40), dtype=np.uint8)
    mask[4:6, 10:30] = 1
    small = resize_2d(mask, 16, "pad", mask=True)
    assert set(np.unique(small)) == {0, 1}


def test_downsampling_is_antialiased() -> None:
    stripes = np.zeros((64, 64), dtype=np.float32)
    stripes[:, ::2] = 1.0  # finest possible detail: must average out, not alias
    small = resize_2d(stripes, 16)
    assert abs(small.mean() - 0.5) < 0.05 and small.std() < 0.1


def test_intensity_methods() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (50, 50)).astype(np.float32)
    image[0, 0] = 10_000  # one hot pixel must not flatten the rest
    low, high, used = intensity_range(image, "percentile")
    assert used == "percentile" and high < 200
    assert normalise(image, low, high).mean() == pytest.approx(0.5, abs=0.05)
    assert intensity_range(image, "minmax")[1] == 10_000
    assert intensity_range(image, "window", (50.0, 150.0)) == (50.0, 150.0, "window")
    assert intensity_range(image, "window", None)[2] == "percentile"
    assert normalise(np.full((4, 4), 7.0), 7.0, 7.0).max() == 0


def test_splits_by_patient_given_and_carved() -> None:
    patients = {f"train/p{i}": ("train", "a" if i % 2 else "b") for i in range(40)}
    patients |= {f"test/p{i}": ("test", "a") for i in range(10)}
    split = assign_splits(patients, 0.1, 0.1, seed=0)
    assert all(split[k] == "test" for k in patients if k.startswith("test/"))
    carved = [k for k, s in split.items() if s == "val"]
    assert len(carved) == 4 and all(k.startswith("train/") for k in carved)
    assert assign_splits(patients, 0.1, 0.1, seed=0) == split
    assert assign_splits(patients, 0.1, 0.1, seed=1) != split
    free = {f"p{i}": (None, None) for i in range(50)}
    tally = list(assign_splits(free, 0.2, 0.1, seed=0).values())
    assert (tally.count("train"), tally.count("val"), tally.count("test")) == (35, 10, 5)
    with pytest.raises(ValueError, match="leave patients for train"):
        assign_splits(free, 0.5, 0.5, seed=0)


def test_pseudonym_key_is_created_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "k.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert pseudonymise(key, "person1") == pseudonymise(key, "person1")
    assert pseudonymise(key, "train/person1") != pseudonymise(key, "test/person1")
    assert "person1" not in pseudonymise(key, "person1")


def test_key_file_inside_the_dataset_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with pytest.raises(ValueError, match="must not lie inside the dataset"):
        ingest(tmp_path / "src", out, key_file=out / "k.key", images=[])


def _volume(seed: int, depth: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    volume = rng.normal(500, 100, (depth, 12, 20)).astype(np.float32)
    volume[0] = 0.0  # a blank edge slice
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[2:4, 4:8, 5:15] = 1
    return volume, mask


def test_volumes_are_sliced_with_paired_masks_and_one_patient(tmp_path: Path) -> None:
    images = []
    for i in range(6):
        volume, mask = _volume(i)
        images.append(SourceImage(volume, f"patient{i}", {}, mask=mask, spacing=(2.0, 1.0, 1.0)))
    options = IngestOptions(size=16, val_fraction=0.2, test_fraction=0.2)
    ds = ingest(
        tmp_path / "src", tmp_path / "ds", options, kind="nifti", images=images, progress=False
    )
    assert ds.has_masks and len(ds.records) == 6 * 4  # blank slice 0 of each volume dropped
    assert ds.info["ingest_report"]["blank_slices_dropped"] == 6
    assert len({r.patient_id for r in ds.records}) == 6
    per_patient: dict[str, set[str]] = {}
    for record in ds.records:
        per_patient.setdefault(record.patient_id, set()).add(record.split)
    assert all(len(s) == 1 for s in per_patient.values())
    with_tumour = [r for r in ds.records if ds.load_mask(r).any()]
    assert len(with_tumour) == 6 * 2 and all(r.mask_file.startswith("masks/") for r in with_tumour)


def test_volumes_kept_3d_need_a_common_depth(tmp_path: Path) -> None:
    images = [SourceImage(_volume(i, depth=5 + i % 2)[0], f"p{i}", {}) for i in range(4)]
    options = IngestOptions(size=16, dimensionality="3D", val_fraction=0.25, test_fraction=0.25)
    with pytest.raises(IngestError, match="pass --depth"):
        ingest(
            tmp_path / "src", tmp_path / "ds", options, kind="nifti", images=images, progress=False
        )
    assert not (tmp_path / "ds").exists()
    options.depth = 4
    ds = ingest(
        tmp_path / "src", tmp_path / "ds", options, kind="nifti", images=images, progress=False
    )
    assert ds.image_size == [4, 16, 16] and ds.records[0].file.endswith(".nii.gz")
    assert ds.load_image(ds.records[0]).shape == (4, 16, 16)
    assert resize_3d(np.zeros((3, 8, 8), np.float32), 16, None).shape == (3, 16, 16)


def test_2d_images_cannot_make_a_3d_dataset(tmp_path: Path) -> None:
    images = [SourceImage(np.ones((8, 8), np.float32), "p", {})]
    with pytest.raises(IngestError, match="needs volumes"):
        ingest(
            tmp_path / "src",
            tmp_path / "ds",
            IngestOptions(dimensionality="3D"),
            kind="folder",
            images=images,
            progress=False,
        )


def test_detect_kind(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"")
    assert detect_kind(tmp_path / "a.npz") == "medmnist"
    dicom = tmp_path / "d"
    dicom.mkdir()
    for i in range(3):
        (dicom / f"{i}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    assert detect_kind(dicom) == "dicom"
    nifti = tmp_path / "n"
    nifti.mkdir()
    (nifti / "v.nii.gz").write_bytes(b"")
    assert detect_kind(nifti) == "nifti"
    table = tmp_path / "t"
    (table / "images").mkdir(parents=True)
    (table / "images" / "1.png").write_bytes(b"")
    assert detect_kind(table) == "folder"
    (table / "labels.csv").write_text("id\n1\n")
    assert detect_kind(table) == "table"


def test_window_intensity_uses_the_source_window(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 1000, 16, dtype=np.float32), (16, 1))
    images = [
        SourceImage(ramp + i, f"p{i}", {}, window=(250.0, 750.0) if i < 3 else None)
        for i in range(5)
    ]
    options = IngestOptions(size=16, intensity="window", val_fraction=0.2, test_fraction=0.2)
    ds = ingest(
        tmp_path / "src", tmp_path / "ds", options, kind="dicom", images=images, progress=False
    )
    assert ds.info["intensity"]["applied"] == {"percentile": 2, "window": 3}
    windowed = [r for r in ds.records if ds.load_image(r)[:, :3].max() == 0]
    assert len(windowed) == 3  # the columns below the window's low end are black
