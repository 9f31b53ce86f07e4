"""Every DICOM file that pydicom-data and deid-data ship (CR, CT, MR, US, NM, RLE, JPEG, JPEG 2000,
JPEG-LS, big endian, multi-frame, SEG, RT, SR, damaged files) goes through the DICOM reader:
each one gives an image or a named skip reason, and none makes it raise."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from pipelines.ingest.dicom import read_dicom
from pipelines.ingest.source import IngestOptions, IngestReport

pydicom_data = pytest.importorskip("pydicom.data")
pytest.importorskip("data_store", reason="pydicom-data (the dev extra) ships the test files")


def shipped_files() -> list[Path]:
    files = [Path(f) for f in pydicom_data.get_testdata_files() if Path(f).is_file()]
    try:
        import deid_data
    except ImportError:
        return files
    root = Path(deid_data.__file__).parent
    return files + sorted(p for p in root.rglob("*.dcm") if p.is_file())


def read_one(path: Path, accept_burned_in: bool = True) -> tuple[list, IngestReport]:
    """Decoding is what these tests check: ultrasound and secondary capture (skipped by
    default for burned-in text) are accepted here unless asked otherwise."""
    report = IngestReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately odd files
        options = IngestOptions(accept_burned_in=accept_burned_in)
        images = list(read_dicom(path, options, report))
    return images, report


def test_every_shipped_file_is_read_or_skipped_with_reason() -> None:
    files = shipped_files()
    assert len(files) > 200, "pydicom-data should ship a few hundred files"
    yielded = 0
    for path in files:
        images, report = read_one(path)
        assert report.files_read == 1, path
        if images:
            yielded += 1
            assert not report.skipped_files, path
            for image in images:
                assert image.pixels.dtype == np.float32 and image.pixels.ndim in (2, 3), path
                assert image.pixels.size > 0 and np.all(np.isfinite(image.pixels)), path
                assert image.patient_key, path
        else:
            assert len(report.skipped_files) == 1, path
            reason = report.skipped_files[0][1]
            assert reason.strip() and path.name not in reason, path
    assert yielded > 150  # most of the shipped files are images


def test_compressed_copies_decode_to_the_same_pixels() -> None:
    """JPEG 2000, JPEG-LS and RLE lossless copies equal the uncompressed original."""
    reference = read_one(Path(pydicom_data.get_testdata_file("MR_small.dcm")))[0][0].pixels
    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        (image,), _ = read_one(Path(pydicom_data.get_testdata_file(name)))
        np.testing.assert_array_equal(image.pixels, reference, err_msg=name)


def test_dicomdir_folders_give_series_volumes_and_skip_scouts() -> None:
    """DICOMDIR trees read as folders: CR views stay 2D, CT series become ordered volumes,
    CT scouts (ImageType LOCALIZER) are skipped with their reason."""
    root = Path(pydicom_data.get_testdata_file("DICOMDIR")).parent

    def read(sub: str):
        report = IngestReport()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = list(read_dicom(root / sub, IngestOptions(), report))
        return [(im.modality, im.pixels.shape) for im in images], report

    images, report = read("77654033")
    assert sorted(images) == [("CR", (16, 16))] * 3 + [("CT", (4, 16, 16))]
    assert report.files_read == 7 and not report.skipped
    images, report = read("98892001")
    assert images == [("CT", (5, 16, 16))]
    assert report.skipped == {"localizer (scout) image": 2}
