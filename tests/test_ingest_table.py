"""`radsynth ingest` on images + a CSV label table (the bone-age layout and explicit columns)."""

from __future__ import annotations

import re
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


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(path)


def make_boneage_like(root: Path, n: int = 20) -> list[tuple[int, int, bool]]:
    rows = [(1000 + i, 6 + 11 * i, i % 3 == 0) for i in range(n)]
    for image_id, _, _ in rows:
        _png(root / "images" / f"{image_id}.png", image_id)
    lines = ["id,boneage,male"] + [f"{i},{a},{m}" for i, a, m in rows]
    lines += ["5555,30,True", "1999,abc,False"]  # image missing; age not a number
    _png(root / "images" / "1999.png", 1999)
    _png(root / "images" / "7777.png", 7777)  # not in the table
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_boneage_layout_is_detected(tmp_path: Path, capfd) -> None:
    src, out = tmp_path / "boneage", tmp_path / "ds"
    rows = make_boneage_like(src)
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    ds = load_dataset(out, verify_pixels=True)
    age, sex = ds.schema["age_months"], ds.schema["sex"]
    assert (age.kind, age.unit, age.minimum, age.maximum) == ("continuous", "months", 0, 240)
    assert sex.values == ("F", "M")
    report = ds.info["ingest_report"]
    assert report["source"]["kind"] == "table"
    assert report["skipped_by_reason"] == {
        "image named in the table is missing": 1,
        "image not in the label table": 1,
        "invalid value in column 'boneage'": 1,
    }
    assert len(ds.records) == 20
    assert sorted(r.conditions["age_months"] for r in ds.records) == sorted(a for _, a, _ in rows)
    males = sum(r.conditions["sex"] == "M" for r in ds.records)
    assert males == sum(m for _, _, m in rows)
    counts = ds.info["counts"]
    assert [counts[s]["images"] for s in ("train", "val", "test")] == [16, 2, 2]
    assert all(counts[s]["patients"] == counts[s]["images"] for s in counts)
    err = capfd.readouterr().err
    assert "7777.png" in err and "5555" in err and "boneage='abc' is not a number" in err
    stored = (out / "manifest.csv").read_text() + (out / "dataset.json").read_text()
    assert "labels.csv" not in stored and "boneage/" not in stored
    leaked = [i for i, _, _ in rows if re.search(rf"\b{i}\b", stored)]  # ids, not in hex
    assert leaked == []


def test_explicit_columns_group_images_by_patient(tmp_path: Path) -> None:
    src, out = tmp_path / "t", tmp_path / "ds"
    lines = ["image,age,gender,pid,finding"]
    for i in range(24):
        _png(src / "imgs" / f"scan{i}.png", i)
        lines.append(
            f"scan{i}.png,{i * 5},{'F' if i % 2 else 'M'},P{i // 3},{'a' if i < 12 else 'b'}"
        )
    (src / "table.csv").write_text("\n".join(lines) + "\n")
    code = main(
        [
            "ingest",
            str(src / "table.csv"),
            "--out",
            str(out),
            "--size",
            "16",
            "--no-progress",
            "--id-column",
            "image",
            "--column",
            "age_months=age",
            "--column",
            "sex=gender",
            "--column",
            "patient=pid",
            "--column",
            "finding=finding",
            "--seed",
            "1",
            "--val-fraction",
            "0.25",
            "--test-fraction",
            "0.25",
        ]
    )
    assert code == 0
    ds = load_dataset(out)
    assert ds.schema.names == ["age_months", "sex", "finding"]
    assert ds.schema["finding"].values == ("a", "b")
    patients: dict[str, set[str]] = {}
    for record in ds.records:
        patients.setdefault(record.patient_id, set()).add(record.split)
    assert len(patients) == 8 and all(len(s) == 1 for s in patients.values())
    assert sum(ds.info["counts"][s]["patients"] for s in ("val", "test")) == 4


def test_unknown_column_is_a_clear_error(tmp_path: Path, capfd) -> None:
    src = tmp_path / "boneage"
    make_boneage_like(src, n=3)
    code = main(
        [
            "ingest",
            str(src),
            "--out",
            str(tmp_path / "ds"),
            "--no-progress",
            "--column",
            "age_months=years",
        ]
    )
    assert code == 2
    assert "column 'years' is not in the label table" in capfd.readouterr().err


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height (a few bytes on disk: a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_bad_table_values_and_huge_inputs_are_skipped_per_row(tmp_path: Path, capfd) -> None:
    """Issue 19.4: inf / NaN / 100000-month ages, a 30000x30000 PNG and a 200k-character cell
    used to raise tracebacks or stretch the schema; each is now skipped, file and row named."""
    src, out = tmp_path / "src", tmp_path / "ds"
    rows = ["id,boneage,male,notes"] + [f"{1000 + i},{10 + i},True,ok" for i in range(12)]
    for i in range(12):
        _png(src / "images" / f"{1000 + i}.png", i)
    for image_id, age in ((2001, "inf"), (2002, "NaN"), (2003, "100000")):
        _png(src / "images" / f"{image_id}.png", image_id)
        rows.append(f"{image_id},{age},False,ok")
    _png_header_only(src / "images" / "3000.png", 30000, 30000)
    rows.append("3000,50,True," + "x" * 200_000)
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["ingest", str(src), "--out", str(out), "--size", "16", "--no-progress"]) == 0
    ds = load_dataset(out)
    assert len(ds.records) == 12 and ds.schema["age_months"].maximum <= 240
    report = ds.info["ingest_report"]
    assert report["skipped_by_reason"] == {
        "image too large": 1,
        "invalid value in column 'boneage'": 3,
    }
    err = capfd.readouterr().err
    for line, problem in ((14, "not a finite number"), (15, "not a finite number"),
                          (16, "outside 0..1800 months")):  # fmt: skip
        assert re.search(rf"labels\.csv:{line}: boneage=.*{problem}", err), err

    latin = tmp_path / "latin"
    _png(latin / "images" / "1.png", 1)
    (latin / "labels.csv").write_bytes("id,pathology\n1,Lungenentzündung\n".encode("latin-1"))
    assert main(["ingest", str(latin), "--out", str(tmp_path / "l"), "--no-progress"]) != 0
    err = capfd.readouterr().err
    assert f"{latin / 'labels.csv'}: not UTF-8 text" in err and "Traceback" not in err
