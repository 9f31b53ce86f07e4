"""`radsynth ingest` on a folder source: labels from folders and file names, splits by patient,
duplicates removed and reported, no source name in the dataset, strict mode, atomic output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conditioning.dataset import load_dataset
from pipelines.cli import main


@pytest.fixture(autouse=True)
def pseudonym_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "keys" / "pseudonym.key"
    monkeypatch.setenv("RADSYNTH_PSEUDONYM_KEY_FILE", str(key))
    return key


def _save(path: Path, seed: int, rgb: bool = True, shape=(20, 24)) -> None:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.stack([grey] * 3, -1) if rgb else grey)
    image.save(path, quality=95) if path.suffix == ".jpeg" else image.save(path)


def make_kermany_like(root: Path) -> dict[str, list[str]]:
    """A tiny copy of the Kermany layout: person/IM names, bacteria/virus in the name, RGB
    JPEGs, one exact duplicate, a truncated JPEG and a text file."""
    files = {
        "train/NORMAL": [
            "IM-0001-0001.jpeg",
            "IM-0002-0001.jpeg",
            "NORMAL2-IM-0003-0001.jpeg",
            "IM-0004-0001.jpeg",
            "IM-0005-0001.jpeg",
            "IM-0006-0001.jpeg",
        ],
        "train/PNEUMONIA": [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpeg",
            "person2_virus_3.jpeg",
            "person3_bacteria_4.jpeg",
            "person4_virus_5.jpeg",
            "person5_bacteria_6.jpeg",
            "person6_virus_7.jpeg",
            "person7_bacteria_8.jpeg",
        ],
        "test/NORMAL": ["IM-0001-0001.jpeg", "IM-0009-0001.jpeg"],
        "test/PNEUMONIA": ["person1_virus_9.jpeg", "person8_bacteria_10.jpeg"],
    }
    seed = 0
    for folder, names in files.items():
        for name in names:
            seed += 1
            _save(root / folder / name, seed)
    shutil.copy(
        root / "train/PNEUMONIA/person3_bacteria_4.jpeg",
        root / "train/PNEUMONIA/person3_bacteria_44.jpeg",
    )
    data = (root / "train/NORMAL/IM-0002-0001.jpeg").read_bytes()
    (root / "train/NORMAL/IM-0099-0001.jpeg").write_bytes(data[: len(data) // 2])
    (root / "train/NORMAL/notes.txt").write_text("not an image\n")
    return files


def _all_output_text(out: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in out.rglob("*") if p.is_file())


def test_kermany_layout_labels_splits_duplicates(tmp_path: Path, capfd) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    make_kermany_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    ds = load_dataset(out, verify_pixels=True)
    assert ds.schema["pathology"].values == ("normal", "bacterial", "viral")
    assert ds.info["modality"] == "DX"
    report = ds.info["ingest_report"]
    assert report["duplicates_removed"] == 1 and report["duplicate_groups"] == 1
    assert report["duplicates_removed_by_source_split"] == {"train": 1}
    assert report["duplicates_removed_by_label"] == {"pathology": {"bacterial": 1}}
    assert report["skipped_by_reason"] == {
        "corrupt or truncated image": 1,
        "unsupported file type (.txt)": 1,
    }
    assert report["files_read"] == 21 and report["files_skipped"] == 2
    assert report["source"]["kind"] == "folder"
    # train+val per class without the removed duplicate; test kept as given
    totals = {
        v: sum(ds.info["counts"][s]["pathology"][v] for s in ("train", "val"))
        for v in ("normal", "bacterial", "viral")
    }
    assert totals == {"normal": 6, "bacterial": 5, "viral": 3}
    assert ds.info["counts"]["test"]["pathology"] == {"normal": 2, "bacterial": 1, "viral": 1}
    assert ds.info["counts"]["val"]["images"] >= 1
    # person1 has two train images: one patient, one split; person1 in test is someone else
    by_patient: dict[str, set[str]] = {}
    for record in ds.records:
        by_patient.setdefault(record.patient_id, set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert ds.info["counts"]["test"]["patients"] == 4
    assert len(by_patient) == 17  # 6 IM + 7 person in train/val (person1 twice), 4 in test
    # skipped files are named on the console, never in the dataset
    err = capfd.readouterr().err
    assert "IM-0099-0001.jpeg" in err and "notes.txt" in err
    assert (out / "preview.png").is_file() and (out / "ingest.log").is_file()


def test_pseudonym_key_is_created_outside_the_dataset(tmp_path: Path, pseudonym_key: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    make_kermany_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    assert pseudonym_key.stat().st_mode & 0o777 == 0o600
    key = pseudonym_key.read_bytes()
    assert len(key) == 32
    assert all(key not in p.read_bytes() for p in out.rglob("*") if p.is_file())
    inside = tmp_path / "ds2" / "k.key"
    code = main(
        [
            "ingest",
            str(src),
            "--out",
            str(tmp_path / "ds2"),
            "--no-progress",
            "--key-file",
            str(inside),
        ]
    )
    assert code == 2 and not (tmp_path / "ds2").exists()


def test_no_source_name_or_path_in_the_dataset(tmp_path: Path) -> None:
    src, out = tmp_path / "hospital_src", tmp_path / "ds"
    files = make_kermany_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    text = _all_output_text(out)
    assert (out / "ingest.log").is_file()
    forbidden = {str(src), "hospital_src", "IM-0099", "notes.txt", "person1_", "IM-0001"}
    for names in files.values():
        forbidden |= {Path(n).stem for n in names} | set(names)
    leaks = sorted(s for s in forbidden if s.encode() in text)
    assert leaks == []


def test_same_seed_same_dataset_and_key_gives_same_pseudonyms(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_kermany_like(src)
    for name in ("a", "b"):
        assert (
            main(
                ["ingest", str(src), "--out", str(tmp_path / name), "--size", "16", "--no-progress"]
            )
            == 0
        )
    manifest_a = (tmp_path / "a" / "manifest.csv").read_text()
    assert manifest_a == (tmp_path / "b" / "manifest.csv").read_text()
    assert (
        main(
            [
                "ingest",
                str(src),
                "--out",
                str(tmp_path / "c"),
                "--size",
                "16",
                "--no-progress",
                "--key-file",
                str(tmp_path / "other.key"),
            ]
        )
        == 0
    )
    ids = lambda n: {r.patient_id for r in load_dataset(tmp_path / n).records}  # noqa: E731
    assert ids("a").isdisjoint(ids("c"))


def test_strict_stops_at_the_bad_file_and_writes_nothing(tmp_path: Path, capfd) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    make_kermany_like(src)
    code = main(
        ["ingest", str(src), "--out", str(out), "--size", "16", "--strict", "--no-progress"]
    )
    assert code == 2
    err = capfd.readouterr().err
    assert "IM-0099-0001.jpeg" in err and "corrupt or truncated" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_source_without_images_is_an_error(tmp_path: Path, capfd) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    (src / "readme.txt").write_text("nothing here")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["ingest", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capfd.readouterr().err
    assert "no usable image" in err
    assert not out.exists()


def test_generic_label_patterns_and_random_patient_split(tmp_path: Path) -> None:
    src, out = tmp_path / "flat", tmp_path / "ds"
    for i in range(10):
        _save(src / f"cat_{i}.png", 100 + i, rgb=False, shape=(12, 30))
        _save(src / f"dog_{i}.png", 200 + i, rgb=False, shape=(30, 12))
    code = main(
        [
            "ingest",
            str(src),
            "--out",
            str(out),
            "--size",
            "16",
            "--no-progress",
            "--label-attribute",
            "species",
            "--label-pattern",
            "^cat=feline",
            "--label-pattern",
            "^dog=canine",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
            "--seed",
            "3",
            "--bit-depth",
            "16",
        ]
    )
    assert code == 0
    ds = load_dataset(out)
    assert ds.schema["species"].values == ("canine", "feline")
    counts = ds.info["counts"]
    assert [counts[s]["images"] for s in ("train", "val", "test")] == [12, 4, 4]
    assert counts["val"]["species"] == {"canine": 2, "feline": 2}  # stratified
    assert ds.read_pixels(ds.records[0]).dtype == np.uint16
    image = ds.load_image(ds.split("train")[0])
    rows_blank = (image.max(axis=1) == 0).sum() + (image.max(axis=0) == 0).sum()
    assert rows_blank >= 8  # 12x30 or 30x12 padded into 16x16 keeps its aspect


def test_failure_mid_ingest_leaves_no_dataset_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    make_kermany_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    from conditioning.dataset import DatasetWriter

    original, calls = DatasetWriter.add, []

    def failing_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "add", failing_add)
    with pytest.raises(RuntimeError, match="disk full"):
        main(
            ["ingest", str(src), "--out", str(out), "--size", "32", "--overwrite", "--no-progress"]
        )
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        main(["ingest", str(src), "--out", str(tmp_path / "new"), "--no-progress"])
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "keys", "src"]


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "ds"
    make_kermany_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 2
    info = json.loads((out / "dataset.json").read_text())
    assert info["image_size"] == [16, 16]
