"""NIfTI source reader: masks paired by name, every volume in one display orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.ingest.nifti import read_nifti
from pipelines.ingest.source import IngestError, IngestOptions, IngestReport

SPACING = (2.0, 3.0, 4.0)  # mm along the RAS x, y, z axes of the test volumes


def ras_volume(shape=(4, 5, 6)) -> np.ndarray:
    """Distinct values everywhere, so any flip or transpose shows."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*SPACING, 1.0]) if affine is None else affine), path)
    return path


def read_all(source: Path, **kwargs) -> tuple[list, IngestReport]:
    report = IngestReport(**kwargs)
    return list(read_nifti(source, IngestOptions(), report)), report


def test_volume_comes_in_display_order_with_spacing(tmp_path: Path) -> None:
    data = ras_volume()
    save(tmp_path / "a.nii.gz", data)
    (image,), report = read_all(tmp_path)
    # (D, H, W) = (superior->inferior, anterior->posterior, right->left)
    np.testing.assert_array_equal(image.pixels, data[::-1, ::-1, ::-1].transpose(2, 1, 0))
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (6, 5, 4)
    assert image.spacing == (4.0, 3.0, 2.0)
    assert image.mask is None and report.files_read == 1


def test_non_canonical_affine_is_reoriented(tmp_path: Path) -> None:
    data = ras_volume()
    save(tmp_path / "ras" / "a.nii.gz", data)
    # the same anatomy stored as (z, x, y) with x flipped (LPI-like orientation codes)
    stored = np.ascontiguousarray(data[::-1].transpose(2, 0, 1))
    affine = np.zeros((4, 4))
    affine[0, 1] = -SPACING[0]  # second array axis runs right-to-left
    affine[1, 2] = SPACING[1]
    affine[2, 0] = SPACING[2]
    affine[0, 3] = SPACING[0] * (data.shape[0] - 1)
    affine[3, 3] = 1
    save(tmp_path / "other" / "a.nii.gz", stored, affine)
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    (canonical,), _ = read_all(tmp_path / "ras")
    (reoriented,), _ = read_all(tmp_path / "other")
    np.testing.assert_array_equal(reoriented.pixels, canonical.pixels)
    assert reoriented.spacing == canonical.spacing


@pytest.mark.parametrize(
    "image_name, mask_name",
    [
        ("case1.nii.gz", "case1_label.nii.gz"),
        ("case1_image.nii.gz", "case1_mask.nii.gz"),
        ("case1.nii", "case1_seg.nii"),
        ("case1.nii.gz", "labels/case1.nii.gz"),
        ("images/case1.nii.gz", "masks/case1.nii.gz"),
    ],
)
def test_masks_pair_by_name(tmp_path: Path, image_name: str, mask_name: str) -> None:
    data = ras_volume()
    mask = np.zeros(data.shape, np.int16)
    mask[1, 2, 3] = 2  # any non-zero label counts
    save(tmp_path / image_name, data)
    save(tmp_path / mask_name, mask)
    (image,), report = read_all(tmp_path)
    assert image.mask is not None and image.mask.dtype == np.uint8
    assert image.mask.shape == image.pixels.shape
    expected = (mask > 0)[::-1, ::-1, ::-1].transpose(2, 1, 0)
    np.testing.assert_array_equal(image.mask, expected)
    assert report.files_read == 2 and not report.skipped


def test_single_file_source_finds_its_mask(tmp_path: Path) -> None:
    save(tmp_path / "b.nii.gz", ras_volume())
    save(tmp_path / "b_label.nii.gz", np.ones((4, 5, 6), np.uint8))
    (image,), _ = read_all(tmp_path / "b.nii.gz")
    assert image.mask is not None and image.mask.all()
    with pytest.raises(IngestError, match="is a mask"):
        read_all(tmp_path / "b_label.nii.gz")


def test_mask_shape_mismatch_is_skipped(tmp_path: Path) -> None:
    save(tmp_path / "c.nii.gz", ras_volume())
    save(tmp_path / "c_label.nii.gz", np.ones((4, 5, 7), np.uint8))
    save(tmp_path / "d.nii.gz", ras_volume())
    save(tmp_path / "d_label.nii.gz", np.ones((4, 5, 6), np.uint8), np.diag([1.0, 1, 1, 1]))
    images, report = read_all(tmp_path)
    assert images == []
    assert report.skipped == {
        "mask shape (4, 5, 7) differs from image shape (4, 5, 6)": 2,
        "mask does not lie on the image's voxel grid (affines differ)": 2,
    }


def test_orphan_mask_and_broken_file_are_skipped(tmp_path: Path) -> None:
    save(tmp_path / "e.nii.gz", ras_volume())
    save(tmp_path / "lonely_mask.nii.gz", np.ones((4, 5, 6), np.uint8))
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip at all")
    images, report = read_all(tmp_path)
    assert len(images) == 1 and images[0].mask is None
    assert report.skipped["mask without a matching image"] == 1
    assert sum(v for k, v in report.skipped.items() if k.startswith("unreadable NIfTI")) == 1


def test_4d_gives_first_volume_with_note(tmp_path: Path) -> None:
    series = np.stack([ras_volume() + 1000 * t for t in range(3)], axis=-1)
    save(tmp_path / "f.nii.gz", series)
    (image,), report = read_all(tmp_path)
    np.testing.assert_array_equal(image.pixels, ras_volume()[::-1, ::-1, ::-1].transpose(2, 1, 0))
    assert report.notes == ["a 4D NIfTI image (3 volumes) gave its first volume"]


def test_one_slice_volume_is_a_2d_image(tmp_path: Path) -> None:
    save(tmp_path / "g.nii.gz", ras_volume((4, 5, 1)))
    (image,), _ = read_all(tmp_path)
    assert image.pixels.shape == (5, 4) and image.spacing == (3.0, 2.0)


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file or folder"):
        read_all(tmp_path / "absent")


@pytest.mark.shared_data
def test_real_tumour_volumes_pair_with_masks(shared_data: Path) -> None:
    folder = shared_data / "nifti-tumour-masks"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    images, report = read_all(folder)
    assert report.files_read == 6 and not report.skipped
    assert [im.pixels.shape for im in images] == [(25, 256, 256), (23, 256, 256), (21, 120, 45)]
    for image in images:
        assert image.mask is not None and image.mask.shape == image.pixels.shape
        assert 0 < image.mask.sum() < image.mask.size
        # the tumour sits in tissue, not in the air around the body
        assert image.pixels[image.mask > 0].mean() > image.pixels.mean()
    assert len({im.patient_key for im in images}) == 3
