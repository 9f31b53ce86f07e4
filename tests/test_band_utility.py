"""`radsynth bench band`: a synthetic set aimed at a scarce band of a continuous condition (ages
under 3 years on bone age), scored inside the band and overall, gains paired against `real`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conditioning.dataset import load_dataset
from generation.evaluation.band_utility import BandConfig, band_gains, run_band_benchmark
from generation.evaluation.fit import FitConfig
from generation.evaluation.images import load_split
from tests.conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("band")
    data = load_dataset(make_tiny_dataset(root / "tiny", size=16, per_class=30))
    young = load_split(load_dataset(make_tiny_dataset(root / "other", size=16, seed=9)), "train")
    for i, c in enumerate(young.conditions):
        c["age_months"] = float(i % 36)
    return data, young


def test_the_benchmark_trains_both_arms_and_scores_the_band_and_everything(tiny):
    data, young = tiny
    config = BandConfig(band=(0.0, 72.0), seeds=(1,), fit=FitConfig(epochs=1, batch_size=16))
    result = run_band_benchmark(data, young, config)
    counts = result["counts"]
    assert counts["synthetic"] == counts["synthetic_in_band"] == len(young)
    held = load_split(data, "test")
    ages = np.array(held.values("age_months"))
    assert counts["held_out"] == len(held)
    assert counts["held_out_in_band"] == int(((ages >= 0) & (ages < 72)).sum()) > 0
    rows = {r["arm"]: r for r in result["rows"]}
    assert set(rows) == {"real", "mix"}
    assert rows["mix"]["n_synthetic"] == len(young) and rows["real"]["n_synthetic"] == 0
    for row in rows.values():  # the scores are those of the stored predictions
        error = np.array(row["predictions"]) - ages
        inside = ages < 72
        assert row["mae_all"] == pytest.approx(np.abs(error).mean(), abs=0.01)
        assert row["mae_band"] == pytest.approx(np.abs(error[inside]).mean(), abs=0.01)
        assert row["bias_band"] == pytest.approx(error[inside].mean(), abs=0.01)
    assert [g["arm"] for g in result["gains"]] == ["mix"]
    # an interrupted run's rows are reused, not trained again
    again = run_band_benchmark(data, young, config, reuse=result["rows"])
    assert again["rows"] == result["rows"]


def test_gains_are_paired_against_real_inside_and_outside_the_band():
    target = np.r_[np.full(20, 12.0), np.full(80, 120.0)]
    inside = target < 36
    rows = []
    for seed in range(3):
        real = target + np.r_[np.full(20, 30.0), np.full(80, 10.0)]  # over-ages the young
        better = real.copy()
        better[:20] -= 20  # errs 10 months in the band, the same outside
        rows += [
            {"arm": "real", "seed": seed, "predictions": real.tolist()},
            {"arm": "mix", "seed": seed, "predictions": better.tolist()},
        ]
    (gain,) = band_gains(rows, target, inside, n_boot=50)
    assert gain["mae_band"] == pytest.approx(20.0) and gain["mae_band.ci95"][0] > 0
    assert gain["mae_all"] == pytest.approx(20.0 * 20 / 100)
    assert gain["bias_band"] == pytest.approx(-20.0)  # predictions pulled down by 20 months
    assert gain["seeds"] == 3


def test_bad_requests_are_clear_errors(tiny):
    data, young = tiny
    with pytest.raises(Exception, match="continuous attribute 'pathology'"):
        run_band_benchmark(data, young, BandConfig(attribute="pathology"))
    with pytest.raises(ValueError, match="empty"):
        run_band_benchmark(data, young, BandConfig(band=(36.0, 0.0)))
    with pytest.raises(ValueError, match="no held-out image"):
        run_band_benchmark(data, young, BandConfig(band=(216.0, 217.0)))
    with pytest.raises(ValueError, match="synthetic set"):
        run_band_benchmark(data, None, BandConfig())


def test_bench_band_writes_its_section_and_resumes(tiny, tmp_path):
    from pipelines.cli import main

    data, _ = tiny
    doc = tmp_path / "BENCHMARKS.md"
    args = ["bench", "band", "--data", str(data.root), "--out", str(tmp_path / "out")]
    args += ["--doc", str(doc), "--seeds", "0", "--epochs", "1", "--band", "0", "100"]
    assert main(args) == 0
    first = json.loads((tmp_path / "out" / "band.json").read_text())
    text = doc.read_text()
    assert "<!-- band:start -->" in text and "| real | 1 |" in text
    assert "radsynth bench band --data" in text and "machine:" in text
    assert main(args) == 0
    assert json.loads((tmp_path / "out" / "band.json").read_text())["rows"] == first["rows"]
    assert doc.read_text().count("<!-- band:start -->") == 1
