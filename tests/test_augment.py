"""`radsynth augment`: real + synthetic training split with the mix asked for, origins recorded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conditioning.dataset import load_dataset
from pipelines.augment import plan_mix
from pipelines.cli import main
from tests.conftest import make_tiny_dataset
from tests.synthetic_sets import write_image_set, write_synthetic_set


def test_plan_mix_fraction_and_balance() -> None:
    real = {"normal": 100, "viral": 10}
    available = {"normal": 50, "viral": 50}
    assert plan_mix(real, available, 0.2, "none") == {"normal": 14, "viral": 14}
    assert plan_mix(real, available, None, "equal") == {"normal": 0, "viral": 50}
    # the fraction caps the total; the rare class keeps its share
    capped = plan_mix(real, available, 0.1, "equal")
    assert sum(capped.values()) == 12 and capped["viral"] == 12
    with pytest.raises(ValueError, match="synthetic-fraction"):
        plan_mix(real, available, None, "none")


def test_augment_cli_balances_and_records_origin(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "real", per_class=6)
    real = load_dataset(data)
    # make viral rare in train: the tiny set has 4 per class in train; release offers 5 viral
    release = write_synthetic_set(tmp_path / "rel", ["viral"] * 5 + ["normal"] * 2, size=16)
    out = tmp_path / "aug"
    assert main(["augment", "--release", str(release), "--data", str(data), "--out", str(out),
                 "--balance", "equal", "--synthetic-fraction", "0.5"]) == 0  # fmt: skip
    aug = load_dataset(out, verify_pixels=True)
    train = aug.split("train")
    origins = Counter(r.origin for r in train)
    assert origins == {"real": 12}  # classes were already equal: nothing to add
    assert [r.sha256 for r in aug.split("test")] == [r.sha256 for r in real.split("test")]

    out2 = tmp_path / "aug2"
    assert main(["augment", "--release", str(release), "--data", str(data), "--out", str(out2),
                 "--synthetic-fraction", "0.25", "--seed", "1"]) == 0  # fmt: skip
    aug2 = load_dataset(out2)
    synthetic = [r for r in aug2.split("train") if r.origin == "synthetic"]
    assert len(synthetic) == 4  # 0.25 / 0.75 * 12 real
    assert {r.patient_id for r in synthetic}.isdisjoint({r.patient_id for r in real.records})
    assert aug2.info["counts"]["train"]["origin"] == {"real": 12, "synthetic": 4}
    assert all(r.origin == "real" for r in aug2.split("val") + aug2.split("test"))


def test_augment_rejects_size_mismatch_and_unknown_label(tmp_path: Path, capsys) -> None:
    data = make_tiny_dataset(tmp_path / "real")
    wrong_size = write_synthetic_set(tmp_path / "big", ["viral"] * 3, size=32)
    assert main(["augment", "--release", str(wrong_size), "--data", str(data), "--out",
                 str(tmp_path / "o1"), "--synthetic-fraction", "0.5"]) == 2  # fmt: skip
    assert "syn0000" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()
    unknown = write_synthetic_set(tmp_path / "unk", ["covid"] * 3, size=16)
    assert main(["augment", "--release", str(unknown), "--data", str(data), "--out",
                 str(tmp_path / "o2"), "--synthetic-fraction", "0.5"]) == 2  # fmt: skip
    assert "allowed: normal, bacterial, viral" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_augment_records_the_recipe_and_its_weights(tmp_path: Path) -> None:
    from pipelines.augment import training_weights

    data = make_tiny_dataset(tmp_path / "real", per_class=6)
    release = write_synthetic_set(tmp_path / "rel", ["viral"] * 6 + ["normal"] * 2, size=16)
    out = tmp_path / "aug"
    assert (
        main(
            [
                "augment",
                "--release",
                str(release),
                "--data",
                str(data),
                "--out",
                str(out),
                "--synthetic-fraction",
                "0.4",
            ]
        )
        == 0
    )  # fmt: skip  (balanced: the default)
    aug = load_dataset(out)
    assert aug.info["ingest_report"]["recipe"] == {"name": "balanced"}
    train = aug.split("train")
    weights = training_weights(aug)
    assert len(weights) == len(train) and weights.mean() == pytest.approx(1.0)
    cells = Counter()
    for w, r in zip(weights, train, strict=True):
        cells[(r.origin, r.conditions["pathology"])] += w
    for origin in ("real", "synthetic"):  # within an origin, every class weighs the same
        mine = [v for (o, _), v in cells.items() if o == origin]
        assert len({round(v, 9) for v in mine}) == 1
        # and the origin as a whole weighs what its image count does
        count = sum(r.origin == origin for r in train)
        assert sum(mine) == pytest.approx(count)
    plain = tmp_path / "plain"
    assert main(["augment", "--release", str(release), "--data", str(data), "--out", str(plain),
                 "--synthetic-fraction", "0.4", "--recipe", "mix"]) == 0  # fmt: skip
    assert (training_weights(load_dataset(plain)) == 1).all()  # mix: unweighted


def test_augment_filter_drops_images_of_the_wrong_class(tmp_path: Path) -> None:
    data = make_tiny_dataset(tmp_path / "real", per_class=30)
    real = load_dataset(data)
    # the tiny classes differ by where a disc sits: real test images under their own labels,
    # and the same images under a wrong label, which a real-trained classifier rejects
    test = real.split("test")
    right = [r.conditions["pathology"] for r in test]
    wrong = [{"normal": "viral", "bacterial": "normal", "viral": "bacterial"}[v] for v in right]
    images = [real.load_image(r) for r in test] * 2
    release = write_image_set(tmp_path / "rel", images, [{"pathology": v} for v in right + wrong])
    out = tmp_path / "aug"
    assert main(["augment", "--release", str(release), "--data", str(data), "--out", str(out),
                 "--synthetic-fraction", "0.3", "--recipe", "filter"]) == 0  # fmt: skip
    report = load_dataset(out).info["ingest_report"]["recipe"]
    assert report["name"] == "filter" and report["filtered"]["offered"] == 2 * len(test)
    assert 0.3 < report["filtered"]["dropped_share"] < 0.7  # the mislabelled half, give or take
