"""The release's DICOM export read by an independent implementation: dcmtk's dcmdump parses it
and dcm2pnm decodes its pixels, at the 128x128 of the hires profile and the 256x256 of gpu256,
with the pixel spacing of a dataset that records one (scaled to the image) and without any
spacing attribute for a dataset that does not (issue 18.4).

dcmtk comes from Debian's packages; the test installs it (as root, in CI or on request) and
skips with a clear message where it cannot."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from pipelines.release.exports import DicomSeries, scaled_spacing, write_secondary_capture
from tests.conftest import debian_package_or_skip


def dcmtk_or_skip() -> None:
    debian_package_or_skip("dcmtk", ["dcmdump", "dcm2pnm"], "RADSYNTH_INSTALL_DCMTK")


def _element(dump: str, tag: str) -> str:
    found = re.search(rf"^\({tag}\) \w\w (.*?)\s+#", dump, re.MULTILINE)
    assert found, f"({tag}) missing from dcmdump's output"
    return found[1].strip("[]")


@pytest.mark.parametrize("side", [128, 256])
@pytest.mark.parametrize("dataset_spacing", [None, (2.8, 2.8)], ids=["no-spacing", "spacing"])
def test_an_independent_reader_parses_and_decodes_the_export(side, dataset_spacing, tmp_path):
    dcmtk_or_skip()
    rng = np.random.default_rng(side)
    pixels = (rng.random((side, side)) * 255).astype(np.uint8)
    pixels[:8] = 0  # a dark band at the top: the orientation survives the round trip
    path = tmp_path / "syn000000.dcm"
    # a 64x64 dataset of 2.8 mm pixels: the same field of view at 128 is 1.4 mm, at 256 0.7 mm
    spacing = (
        None if dataset_spacing is None else scaled_spacing(dataset_spacing, (64, 64), (side, side))
    )
    write_secondary_capture(
        path,
        pixels,
        conditions={"pathology": "viral"},
        model_hash="0" * 64,
        series=DicomSeries(study_uid="1.2.3", series_uid="1.2.3.4"),
        instance_number=1,
        pixel_spacing=spacing,
    )
    run = subprocess.run(
        ["dcmdump", "+E", "+L", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith(("E:", "W:"))]
    dump = run.stdout
    assert _element(dump, "0028,0010") == str(side) and _element(dump, "0028,0011") == str(side)
    assert _element(dump, "0028,0004") == "MONOCHROME2"  # 0 is black, as the PNG
    assert _element(dump, "0028,0101") == "8" and _element(dump, "0028,0002") == "1"
    assert _element(dump, "0008,0016") == "=SecondaryCaptureImageStorage"  # dcmtk names the UID
    # the Secondary Capture's PixelSpacing when the dataset has a spacing, else no spacing at all
    if dataset_spacing is None:
        assert "(0028,0030)" not in dump
    else:
        mm = {128: "1.4", 256: "0.7"}[side]
        assert _element(dump, "0028,0030") == f"{mm}\\{mm}"  # DS, row then column
        assert f"Pixel spacing {mm} x {mm} mm" in _element(dump, "0008,2111")
    assert "(0018,1164)" not in dump  # no ImagerPixelSpacing: not part of the SC image IOD
    out = tmp_path / "decoded.pgm"
    decode = ["dcm2pnm", "--write-raw-pnm", "--no-windowing", str(path), str(out)]
    assert subprocess.run(decode, capture_output=True, timeout=60).returncode == 0
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), pixels)
