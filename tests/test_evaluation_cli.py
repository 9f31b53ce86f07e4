"""`radsynth evaluate` end to end on a tiny dataset and synthetic sets written in the layout of
`radsynth generate` (images/*.png + manifest.csv)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from conditioning.dataset import load_dataset
from pipelines.cli import main
from tests.conftest import make_tiny_dataset
from tests.synthetic_sets import write_image_set


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    data = make_tiny_dataset(root / "tiny", size=16, per_class=30)
    dataset = load_dataset(data)
    test = dataset.split("test")
    copies = write_image_set(
        root / "copies",
        [dataset.load_image(r) for r in test],
        [r.conditions for r in test],
    )
    rng = np.random.default_rng(0)
    noise = write_image_set(
        root / "noise",
        [rng.random((16, 16)) for _ in test],
        [r.conditions for r in test],
    )
    domain = root / "domain"
    args = ["--data", str(data), "--domain-models", str(domain), "--epochs", "3", "--pairs", "20"]
    return root, args, copies, noise


def run(args: list[str]) -> int:
    return main(["evaluate", *args])


def test_copies_of_the_real_test_set_score_as_real(setup):
    root, args, copies, _ = setup
    out = root / "out-copies"
    assert run(["--synthetic", str(copies), "--out", str(out), *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_synthetic"] == metrics["n_real"] == 15
    assert metrics["fd"]["synthetic_vs_real"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["fd"]["real_vs_real"] > 0
    assert metrics["precision_recall"]["precision"] == 1.0
    assert metrics["precision_recall"]["recall"] == 1.0
    assert metrics["ms_ssim"]["synthetic"] == pytest.approx(metrics["ms_ssim"]["real"])
    pathology = metrics["adherence"]["pathology"]
    assert pathology["accuracy"] == pathology["real_accuracy"] > 0.7
    assert (
        metrics["adherence"]["age_months"]["mae"] == metrics["adherence"]["age_months"]["real_mae"]
    )
    assert "pathology=viral" in metrics["subgroups"]
    assert metrics["resolution"] == {
        "synthetic": [16, 16],
        "real": [16, 16],
        "scored_at": [16, 16],
        "synthetic_resized": False,
    }
    info = json.loads((out / "evaluation.json").read_text())
    assert info["real_split"] == "test" and info["reference_split"] == "val"
    for name in (
        "adherence_per_class.csv",
        "precision_recall.csv",
        "ms_ssim.csv",
        "subgroups.csv",
        "real_vs_synthetic.png",
        "adherence_pathology.png",
        "age_months_requested_vs_predicted.png",
    ):
        assert (out / "plots" / name).is_file(), name
    with (out / "plots" / "adherence_per_class.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["class"] for r in rows] == ["normal", "bacterial", "viral"]
    assert "evaluating" in (out / "evaluate.log").read_text()
    assert not list(root.glob(".out-copies*"))


def test_a_set_of_another_size_is_scored_at_the_datasets_and_says_so(setup):
    root, args, _, _ = setup
    dataset = load_dataset(root / "tiny")
    test = dataset.split("test")
    big = write_image_set(
        root / "copies32",
        [np.kron(dataset.load_image(r), np.ones((2, 2))) for r in test],
        [r.conditions for r in test],
    )
    out = root / "out-32"
    assert run(["--synthetic", str(big), "--out", str(out), *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resolution"]["synthetic"] == [32, 32]
    assert metrics["resolution"]["scored_at"] == [16, 16]
    assert metrics["resolution"]["synthetic_resized"] is True
    assert metrics["n_synthetic"] == len(test) and metrics["fd"]["synthetic_vs_real"] >= 0


def test_noise_scores_worse_than_copies(setup):
    root, args, copies, noise = setup
    out = root / "out-noise"
    assert run(["--synthetic", str(noise), "--out", str(out), *args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fd"]["synthetic_vs_real"] > metrics["fd"]["real_vs_real"]
    low, high = metrics["fd"]["synthetic_vs_real_interval"]
    assert metrics["fd"]["real_vs_real"] < low < high
    assert metrics["precision_recall"]["precision"] < 0.5
    assert metrics["ms_ssim"]["synthetic"] < metrics["ms_ssim"]["real"]
    detect = metrics["detectability"]
    assert detect["real_split"] == "val" and detect["auroc"] > 0.9


def test_baseline_comparison_gives_a_paired_fd_change(setup, capsys):
    """--baseline: the FD change from the baseline set with a paired interval; copies of the
    real images are closer than noise in nearly every draw (with 15 images a resample that
    repeats a few of them can, about one draw in 400, put the noise closer), and the reverse
    comparison flips the sign."""
    root, args, copies, noise = setup
    out = root / "out-baseline"
    assert (
        run(["--synthetic", str(copies), "--baseline", str(noise), "--out", str(out), *args]) == 0
    )
    closer = json.loads((out / "metrics.json").read_text())["baseline"]
    assert closer["n_baseline"] == 15
    row = closer["all"]
    assert row["fd"] == pytest.approx(0.0, abs=1e-6) and row["fd_baseline"] > 0
    assert row["difference"] == pytest.approx(row["fd"] - row["fd_baseline"])
    assert row["low"] <= row["difference"] <= row["high"] < 0
    assert row["share_of_draws_lower"] >= 0.98
    assert "against the baseline set (15 images)" in capsys.readouterr().out
    from PIL import Image

    three = Image.open(out / "plots" / "baseline_vs_synthetic.png")  # real | baseline | synthetic
    two = Image.open(out / "plots" / "real_vs_synthetic.png")
    assert three.height == two.height and three.width > 1.4 * two.width
    back = root / "out-baseline-back"
    assert (
        run(["--synthetic", str(noise), "--baseline", str(copies), "--out", str(back), *args]) == 0
    )
    farther = json.loads((back / "metrics.json").read_text())["baseline"]["all"]
    assert 0 < farther["low"] and farther["difference"] == pytest.approx(-row["difference"])


def test_bad_manifest_is_a_clear_error_and_keeps_the_earlier_output(setup, capsys, tmp_path):
    root, args, copies, _ = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": 1}')
    bad = tmp_path / "bad"
    shutil.copytree(copies, bad)
    (bad / "manifest.csv").write_text(
        (copies / "manifest.csv").read_text().replace(",viral,", ",covid,")
    )
    assert run(["--synthetic", str(bad), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert "manifest.csv" in err and "covid" in err
    assert json.loads((out / "metrics.json").read_text()) == {"earlier": 1}


def test_synthetic_set_reader_names_the_file_and_problem(setup, tmp_path):
    from conditioning.dataset import DatasetError
    from generation.evaluation import load_synthetic_set

    root, args, copies, _ = setup
    schema = load_dataset(args[1]).schema
    with pytest.raises(DatasetError, match="no manifest.csv"):
        load_synthetic_set(tmp_path, schema)
    (tmp_path / "manifest.csv").write_text("id,pathology\na,viral\n")
    with pytest.raises(DatasetError, match="missing column 'file'"):
        load_synthetic_set(tmp_path, schema)
    (tmp_path / "manifest.csv").write_text("id,file\n1,../outside.png\n")
    with pytest.raises(DatasetError, match="relative path"):
        load_synthetic_set(tmp_path, schema)
    loaded = load_synthetic_set(copies, schema)
    assert loaded.images.shape == (15, 16, 16) and loaded.images.max() <= 1.0
    assert loaded.conditions[0]["pathology"] in ("normal", "bacterial", "viral")
