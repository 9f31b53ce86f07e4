"""`radsynth ingest` on a MedMNIST .npz archive: splits kept, labels named, no unpickling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conditioning.dataset import load_dataset
from pipelines.cli import main


@pytest.fixture(autouse=True)
def pseudonym_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "keys" / "pseudonym.key"
    monkeypatch.setenv("RADSYNTH_PSEUDONYM_KEY_FILE", str(key))
    return key


def make_npz(path: Path, rgb: bool = False) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 5)):
        shape = (n, 8, 8, 3) if rgb else (n, 8, 8)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1)
    arrays["train_images"][5] = arrays["train_images"][4]  # one exact duplicate
    np.savez(path, **arrays)


def test_medmnist_splits_and_label_names(tmp_path: Path) -> None:
    make_npz(tmp_path / "pneumoniamnist.npz")
    out = tmp_path / "ds"
    code = main(
        [
            "ingest",
            str(tmp_path / "pneumoniamnist.npz"),
            "--out",
            str(out),
            "--size",
            "16",
            "--no-progress",
            "--label-names",
            "normal,bacterial,viral",
        ]
    )
    assert code == 0
    ds = load_dataset(out, verify_pixels=True)
    assert ds.schema["label"].values == ("normal", "bacterial", "viral")
    counts = ds.info["counts"]
    assert [counts[s]["images"] for s in ("train", "val", "test")] == [11, 4, 5]
    assert counts["test"]["label"] == {"normal": 2, "bacterial": 2, "viral": 1}
    assert ds.info["ingest_report"]["source"]["kind"] == "medmnist"
    assert ds.info["ingest_report"]["duplicates_removed"] == 1


def test_medmnist_rgb_and_index_labels(tmp_path: Path) -> None:
    make_npz(tmp_path / "blood.npz", rgb=True)
    out = tmp_path / "ds"
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "blood.npz"),
                "--out",
                str(out),
                "--size",
                "8",
                "--no-progress",
                "--kind",
                "medmnist",
            ]
        )
        == 0
    )
    ds = load_dataset(out)
    assert ds.schema["label"].values == ("0", "1", "2") and ds.image_size == [8, 8]


def test_medmnist_refuses_pickled_arrays(tmp_path: Path, capfd) -> None:
    np.savez(
        tmp_path / "evil.npz",
        train_images=np.array([object()], dtype=object),
        train_labels=np.zeros((1, 1)),
    )
    assert (
        main(["ingest", str(tmp_path / "evil.npz"), "--out", str(tmp_path / "ds"), "--no-progress"])
        == 2
    )
    assert "evil.npz" in capfd.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_too_few_label_names_is_an_error(tmp_path: Path, capfd) -> None:
    make_npz(tmp_path / "m.npz")
    assert (
        main(
            [
                "ingest",
                str(tmp_path / "m.npz"),
                "--out",
                str(tmp_path / "ds"),
                "--no-progress",
                "--label-names",
                "a,b",
            ]
        )
        == 2
    )
    assert "--label-names gives 2 name(s)" in capfd.readouterr().err
