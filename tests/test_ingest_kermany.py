"""The real Kermany chest X-rays through `radsynth ingest` (needs ../shared/data; ~30 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conditioning.dataset import load_dataset
from pipelines.cli import main

# shared/data/README.md: images per split and class
README_COUNTS = {
    "train": {"normal": 1341, "bacterial": 2530, "viral": 1345},
    "test": {"normal": 234, "bacterial": 242, "viral": 148},
}


@pytest.mark.slow
def test_kermany_ingest_counts_match_the_readme(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = shared_data / "kermany-pediatric-cxr"
    if not source.is_dir():
        pytest.skip(f"{source} not present")
    monkeypatch.setenv("RADSYNTH_PSEUDONYM_KEY_FILE", str(tmp_path / "key"))
    out = tmp_path / "kermany32"
    assert main(["ingest", str(source), "--out", str(out), "--size", "32", "--no-progress"]) == 0
    ds = load_dataset(out)
    report, counts = ds.info["ingest_report"], ds.info["counts"]
    assert report["files_read"] == 5840 and report["files_skipped"] == 0
    # byte-identical files decode to identical pixels: 30 groups, 32 redundant copies
    assert (report["duplicate_groups"], report["duplicates_removed"]) == (30, 32)
    assert report["duplicates_removed_by_source_split"] == {"train": 26, "test": 6}
    removed = report["duplicates_removed_by_label"]["pathology"]
    for label in ("normal", "bacterial", "viral"):
        stored = sum(counts[s]["pathology"][label] for s in ("train", "val", "test"))
        expected = README_COUNTS["train"][label] + README_COUNTS["test"][label]
        assert stored == expected - removed.get(label, 0), label
    assert counts["test"]["images"] == sum(README_COUNTS["test"].values()) - 6
    assert counts["val"]["images"] > 400  # 10% of train patients, carved by patient
    assert ds.schema["pathology"].values == ("normal", "bacterial", "viral")
    assert report["identical_after_resize"]["groups"] == 0
