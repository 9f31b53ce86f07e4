"""DICOM source reader: what `radsynth ingest` gets out of single-frame files, series,
multi-frame files and the broken files real archives hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.ingest import dicom_pixels
from pipelines.ingest.dicom import parse_age_months, read_dicom
from pipelines.ingest.source import IngestError, IngestOptions, IngestReport


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    **attributes,
) -> Path:
    """A small Part 10 file (explicit VR little endian) with `pixels` and header `attributes`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = "PAT-001"
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, values: list[int], positions: list[float], **attributes) -> None:
    """One axial series: slice i is `values[i]` plus a ramp that is 0 at pixel (0, 0), at
    z = positions[i]; file names and InstanceNumbers run in the opposite order of position, so
    only positions order it."""
    ramp = np.arange(30, dtype=np.uint16).reshape(6, 5)
    for i, (value, z) in enumerate(zip(values, positions, strict=True)):
        write_dicom(
            folder / f"slice{i:02d}.dcm",
            ramp + np.uint16(value),
            ImagePositionPatient=[0.0, 0.0, z],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[0.5, 0.25],
            InstanceNumber=len(values) - i,
            **attributes,
        )


def read_all(source: Path, **report_kwargs) -> tuple[list, IngestReport]:
    report = IngestReport(**report_kwargs)
    return list(read_dicom(source, IngestOptions(), report)), report


def test_rescale_and_window_in_modality_units(tmp_path: Path) -> None:
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    write_dicom(
        tmp_path / "a.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=100,
        WindowWidth=201,
    )
    (image,), report = read_all(tmp_path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (3, 4)
    np.testing.assert_allclose(image.pixels, stored * 2.0 - 100)
    assert image.window == pytest.approx((-0.5, 199.5))
    assert image.modality == "MR" and image.spacing is None
    assert report.files_read == 1 and not report.skipped


def test_monochrome1_is_inverted_with_its_window(tmp_path: Path) -> None:
    stored = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    write_dicom(
        tmp_path / "cr.dcm",
        stored,
        photometric="MONOCHROME1",
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=100,
        WindowWidth=201,
        Modality="CR",
    )
    (image,), _ = read_all(tmp_path)
    # modality range of 12 stored bits is -100..8090: MONOCHROME1 flips about it
    flip = -100 + (4095 * 2 - 100)
    np.testing.assert_allclose(image.pixels, flip - (stored * 2.0 - 100))
    assert image.pixels[0, 0] > image.pixels[1, 1]  # stored 0 is white in MONOCHROME1
    assert image.window == pytest.approx((flip - 199.5, flip + 0.5))


def test_series_is_ordered_by_position_not_name_or_number(tmp_path: Path) -> None:
    write_series(tmp_path / "series", values=[30, 10, 20], positions=[10.0, 0.0, 5.0])
    (volume,), report = read_all(tmp_path)
    assert volume.pixels.shape == (3, 6, 5)
    assert [float(v) for v in volume.pixels[:, 0, 0]] == [10.0, 20.0, 30.0]
    assert volume.spacing == pytest.approx((5.0, 0.5, 0.25))
    assert report.files_read == 3


def test_oblique_series_orders_along_the_slice_normal(tmp_path: Path) -> None:
    # sagittal slices whose z also changes: the normal row x column = (-1, 0, 0) decides,
    # so slices come in decreasing x (z or InstanceNumber would give another order)
    for i, (value, x) in enumerate([(2, 4.0), (0, -4.0), (1, 0.0)]):
        write_dicom(
            tmp_path / f"s{i}.dcm",
            np.full((4, 4), value, dtype=np.uint16),
            ImagePositionPatient=[x, 0.0, 100.0 - 10 * i],
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
            InstanceNumber=i + 1,
        )
    (volume,), _ = read_all(tmp_path)
    assert [float(v) for v in volume.pixels[:, 0, 0]] == [2.0, 1.0, 0.0]


def test_series_with_several_orientations_gives_one_stack_each(tmp_path: Path) -> None:
    axial, coronal = [1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1]
    for i, (orientation, z) in enumerate([(axial, 0.0), (coronal, 0.0), (axial, 2.0)]):
        write_dicom(
            tmp_path / f"p{i}.dcm",
            np.full((4, 4), i, np.uint16),
            ImagePositionPatient=[0.0, z, z],
            ImageOrientationPatient=orientation,
        )
    images, report = read_all(tmp_path)
    assert sorted(im.pixels.shape for im in images) == [(2, 4, 4), (4, 4)]
    assert not report.skipped


def test_orientation_jitter_keeps_one_stack(tmp_path: Path) -> None:
    # direction cosines that differ in the 4th decimal (rounding noise of the scanner)
    for i, tilt in enumerate([0.00049, 0.00051, 0.0005]):
        write_dicom(
            tmp_path / f"j{i}.dcm",
            np.full((4, 4), i, np.uint16),
            ImagePositionPatient=[0.0, 0.0, float(i)],
            ImageOrientationPatient=[1, 0, 0, 0, 1 - tilt, tilt],
        )
    (volume,), _ = read_all(tmp_path)
    assert volume.pixels.shape == (3, 4, 4)


def test_localizer_images_are_skipped(tmp_path: Path) -> None:
    write_dicom(
        tmp_path / "scout.dcm",
        np.zeros((4, 4), np.uint16),
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
    )
    images, report = read_all(tmp_path)
    assert images == [] and report.skipped == {"localizer (scout) image": 1}


def test_series_without_positions_falls_back_to_instance_number(tmp_path: Path) -> None:
    for i, number in enumerate([3, 1, 2]):
        write_dicom(
            tmp_path / f"s{i}.dcm", np.full((4, 4), number, np.uint16), InstanceNumber=number
        )
    (volume,), _ = read_all(tmp_path)
    assert [float(v) for v in volume.pixels[:, 0, 0]] == [1.0, 2.0, 3.0]


def test_unorderable_slices_stay_separate_images(tmp_path: Path) -> None:
    for i in range(2):
        write_dicom(tmp_path / f"m{i}.dcm", np.full((4, 4), i, np.uint16))
    images, report = read_all(tmp_path)
    assert [im.pixels.shape for im in images] == [(4, 4), (4, 4)] and not report.skipped


def test_projection_images_in_one_series_stay_2d(tmp_path: Path) -> None:
    for i in range(2):
        write_dicom(tmp_path / f"v{i}.dcm", np.full((4, 4), i, np.uint16), Modality="DX")
    images, _ = read_all(tmp_path)
    assert [im.pixels.shape for im in images] == [(4, 4), (4, 4)]


def test_series_with_inconsistent_shapes_is_skipped_with_reason(tmp_path: Path) -> None:
    write_series(tmp_path, values=[1, 2], positions=[0.0, 1.0])
    write_dicom(
        tmp_path / "odd.dcm",
        np.zeros((8, 8), np.uint16),
        ImagePositionPatient=[0.0, 0.0, 2.0],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
    )
    images, report = read_all(tmp_path)
    assert images == []
    assert report.skipped == {"series has inconsistent slice shapes (6x5, 8x8)": 3}


def test_multiframe_file_is_one_volume(tmp_path: Path) -> None:
    frames = np.stack([np.full((5, 4), v, np.uint16) for v in (7, 8, 9, 10)])
    write_dicom(tmp_path / "mf.dcm", frames, NumberOfFrames=4, PixelSpacing=[1.0, 2.0])
    (volume,), _ = read_all(tmp_path)
    assert volume.pixels.shape == (4, 5, 4)
    assert [float(v) for v in volume.pixels[:, 0, 0]] == [7.0, 8.0, 9.0, 10.0]


def test_colour_becomes_grey(tmp_path: Path) -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (255, 255, 255)
    write_dicom(
        tmp_path / "rgb.dcm",
        rgb,
        photometric="RGB",
        bits_stored=8,
        Modality="US",
        BurnedInAnnotation="NO",
    )
    (image,), _ = read_all(tmp_path)
    assert image.pixels.shape == (2, 2)
    assert image.pixels[0, 0] == pytest.approx(0.299 * 255, abs=0.01)
    assert image.pixels[1, 1] == pytest.approx(255, abs=0.01)


def test_ybr_full_gives_its_luma(tmp_path: Path) -> None:
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    write_dicom(
        tmp_path / "ybr.dcm",
        ybr,
        photometric="YBR_FULL",
        bits_stored=8,
        Modality="US",
        BurnedInAnnotation="NO",
    )
    (image,), _ = read_all(tmp_path)
    np.testing.assert_allclose(image.pixels, rgb.astype(np.float32) @ [0.299, 0.587, 0.114], atol=1)


def test_age_sex_and_patient_key(tmp_path: Path) -> None:
    write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16), PatientAge="003Y", PatientSex="M")
    write_dicom(
        tmp_path / "b.dcm",
        np.zeros((4, 4), np.uint16),
        PatientSex="O",
        PatientID="",
        PatientBirthDate="20200115",
        StudyDate="20210115",
        Modality="DX",
    )
    a, b = sorted(read_all(tmp_path)[0], key=lambda im: im.patient_key)
    assert a.conditions == {"age_months": 36.0, "sex": "M"}
    assert a.patient_key == "PatientID:PAT-001"
    assert b.conditions == {"age_months": pytest.approx(12.0, abs=0.05)}  # 'O' is unknown
    assert b.patient_key == "StudyInstanceUID:1.2.3.4"


@pytest.mark.parametrize(
    "value, months",
    [("003Y", 36.0), ("036M", 36.0), ("010W", 70 / (365.25 / 12)), ("005D", 5 / (365.25 / 12))],
)
def test_parse_age_months(value: str, months: float) -> None:
    assert parse_age_months(value) == pytest.approx(months, abs=1e-3)


@pytest.mark.parametrize("value", ["", None, "3 years", "003X", "1234Y"])
def test_malformed_age_is_unknown(value) -> None:
    assert parse_age_months(value) is None


def test_broken_files_are_skipped_with_reasons_and_no_name(tmp_path: Path) -> None:
    good = write_dicom(tmp_path / "good.dcm", np.ones((16, 16), np.uint16))
    other = write_dicom(
        tmp_path / "x" / "o.dcm", np.ones((16, 16), np.uint16), SeriesInstanceUID="9"
    )
    data = other.read_bytes()
    other.unlink()
    (tmp_path / "truncated_secret.dcm").write_bytes(data[: len(data) - 100])
    (tmp_path / "cut_header_secret.dcm").write_bytes(data[:200])
    (tmp_path / "notdicom_secret.dcm").write_bytes(b"this is a text file" * 20)
    (tmp_path / "README.txt").write_text("passed over, not a candidate")
    import pydicom

    no_pixels = pydicom.dcmread(good)
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "nopixels_secret.dcm")
    seg = pydicom.dcmread(good)
    seg.Modality = "SEG"
    seg.save_as(tmp_path / "seg_secret.dcm")

    images, report = read_all(tmp_path)
    assert len(images) == 1
    assert report.files_read == 6
    reasons = dict(report.skipped_files)
    assert len(reasons) == 5 and all(reasons.values())
    assert "not a DICOM file" in reasons[str(tmp_path / "notdicom_secret.dcm")]
    assert "pixel data cannot be decoded" in reasons[str(tmp_path / "truncated_secret.dcm")]
    assert reasons[str(tmp_path / "nopixels_secret.dcm")] == "no pixel data (MR Image Storage)"
    assert "segmentation" in reasons[str(tmp_path / "seg_secret.dcm")]
    assert not any("secret" in reason for reason in report.skipped)  # reasons go to dataset.json


def test_strict_stops_at_the_first_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.dcm").write_bytes(b"nope" * 100)
    with pytest.raises(IngestError, match=r"bad\.dcm: not a DICOM file"):
        read_all(tmp_path, strict=True)


def test_missing_decoder_names_the_transfer_syntax(tmp_path: Path, monkeypatch) -> None:
    import pydicom

    path = write_dicom(tmp_path / "j2k.dcm", np.ones((4, 4), np.uint16))
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(28)])  # the reader never decodes it
    ds.save_as(path)

    class NoPlugin:
        is_available = False

    monkeypatch.setattr(dicom_pixels, "_decoder", lambda uid: NoPlugin())
    images, report = read_all(tmp_path)
    assert images == []
    assert list(report.skipped) == [
        "no decoder for transfer syntax JPEG 2000 Image Compression (Lossless Only) "
        "(1.2.840.10008.1.2.4.90); install radsynth[dicom-codecs]"
    ]


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file or folder"):
        read_all(tmp_path / "absent")


@pytest.mark.shared_data
def test_real_pediatric_brain_series(shared_data: Path) -> None:
    folder = shared_data / "pediatric-brain-mri-dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    (volume,), report = read_all(folder)
    assert volume.pixels.shape == (192, 256, 256)
    assert volume.conditions == {"age_months": 36.0, "sex": "M"}
    assert volume.modality == "MR" and volume.pixels.dtype == np.float32
    assert len(volume.spacing) == 3 and all(s > 0 for s in volume.spacing)
    assert report.files_read == 192 and not report.skipped
    # neighbouring sagittal slices are alike, far ones are not: the stack is in order
    mid = volume.pixels[96]
    assert np.corrcoef(mid.ravel(), volume.pixels[97].ravel())[0, 1] > 0.9
