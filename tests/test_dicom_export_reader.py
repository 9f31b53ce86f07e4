"""The release's DICOM export read by an independent implementation: dcmtk's dcmdump parses it
and dcm2pnm decodes its pixels, at the 128x128 of the hires profile and the 256x256 of gpu256.

dcmtk comes from Debian's packages; the test installs it (as root, in CI or on request) and
skips with a clear message where it cannot."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from pipelines.release.exports import write_secondary_capture
from tests.conftest import debian_package_or_skip


def dcmtk_or_skip() -> None:
    debian_package_or_skip("dcmtk", ["dcmdump", "dcm2pnm"], "RADSYNTH_INSTALL_DCMTK")


def _element(dump: str, tag: str) -> str:
    found = re.search(rf"^\({tag}\) \w\w (.*?)\s+#", dump, re.MULTILINE)
    assert found, f"({tag}) missing from dcmdump's output"
    return found[1].strip("[]")


@pytest.mark.parametrize("side", [128, 256])
def test_an_independent_reader_parses_and_decodes_the_export(side, tmp_path):
    dcmtk_or_skip()
    rng = np.random.default_rng(side)
    pixels = (rng.random((side, side)) * 255).astype(np.uint8)
    pixels[:8] = 0  # a dark band at the top: the orientation survives the round trip
    path = tmp_path / "syn000000.dcm"
    write_secondary_capture(
        path,
        pixels,
        conditions={"pathology": "viral"},
        model_hash="0" * 64,
        series_uid="1.2.3.4",
        study_uid="1.2.3",
        instance_number=1,
    )
    run = subprocess.run(["dcmdump", "+E", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith(("E:", "W:"))]
    dump = run.stdout
    assert _element(dump, "0028,0010") == str(side) and _element(dump, "0028,0011") == str(side)
    assert _element(dump, "0028,0004") == "MONOCHROME2"  # 0 is black, as the PNG
    assert _element(dump, "0028,0101") == "8" and _element(dump, "0028,0002") == "1"
    assert _element(dump, "0008,0016") == "=SecondaryCaptureImageStorage"  # dcmtk names the UID
    # a synthetic image has no physical scale: no pixel spacing claims one
    assert "(0028,0030)" not in dump and "(0018,1164)" not in dump
    out = tmp_path / "decoded.pgm"
    decode = ["dcm2pnm", "--write-raw-pnm", "--no-windowing", str(path), str(out)]
    assert subprocess.run(decode, capture_output=True, timeout=60).returncode == 0
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out)), pixels)
