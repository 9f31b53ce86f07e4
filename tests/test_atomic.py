"""The one atomic writer: a reader sees the old file or the new one, never half of either, and a
failed write leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from conditioning.dataset import atomic_open, atomic_path, write_json_atomic, write_text_atomic
from conditioning.dataset.pixels import write_nifti, write_png


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json_atomic(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write('{"version": 2, "half')
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_new_content_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "sub" / "note.md"
    with atomic_open(target) as handle:
        handle.write("first half ")
        assert not target.exists()
        handle.write("second half")
    assert target.read_text() == "first half second half"
    write_text_atomic(target, "replaced")
    assert target.read_text() == "replaced"


def test_writers_that_take_a_file_name_keep_its_suffixes(tmp_path):
    with atomic_path(tmp_path / "volume.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".")
    volume = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_nifti(tmp_path / "v.nii.gz", volume)
    import nibabel as nib

    assert np.array_equal(np.asarray(nib.load(tmp_path / "v.nii.gz").dataobj), volume)
    write_png(tmp_path / "i.png", np.zeros((4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "v.nii.gz", "volume.nii.gz"]
