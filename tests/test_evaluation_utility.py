"""Utility benchmark on the tiny dataset: arms, scarce regimes, seeds and the summary table."""

from __future__ import annotations

import json
import math

import pytest

from conditioning.dataset import load_dataset
from generation.evaluation.fit import FitConfig
from generation.evaluation.images import load_split
from generation.evaluation.utility import (
    UtilityConfig,
    interval95,
    run_utility_benchmark,
    scarce_subset,
    summarise,
    utility_markdown,
)
from tests.conftest import make_tiny_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("utility")
    data = load_dataset(make_tiny_dataset(root / "tiny", size=16, per_class=30))
    # a "generator" that draws the right images under the wrong labels
    other = load_dataset(make_tiny_dataset(root / "other", size=16, per_class=20, seed=9))
    mislabelled = load_split(other, "train")
    rotate = {"normal": "bacterial", "bacterial": "viral", "viral": "normal"}
    for c in mislabelled.conditions:
        c["pathology"] = rotate[c["pathology"]]
    return data, mislabelled


def test_scarce_subset_keeps_the_fraction_of_one_class(tiny):
    data, _ = tiny
    train = load_split(data, "train")
    kept = scarce_subset(train, "pathology", "viral", 0.25, seed=0)
    assert kept.values("pathology").count("viral") == 5  # 25% of 20
    assert kept.values("pathology").count("normal") == train.values("pathology").count("normal")
    assert scarce_subset(train, "pathology", "viral", 1.0, seed=0) is train


def test_benchmark_runs_every_arm_and_regime_and_scores_on_real_test(tiny):
    data, mislabelled = tiny
    config = UtilityConfig(
        keep_fractions=(1.0, 0.25),
        arms=("real", "synthetic", "mix"),
        seeds=(3,),
        fit=FitConfig(epochs=3, batch_size=16, lr=3e-3),
    )
    result = run_utility_benchmark(data, mislabelled, config)
    assert len(result["rows"]) == 2 * 3
    assert result["notes"]  # one synthetic set for all regimes is flagged
    summary = {(s["regime"], s["arm"]): s for s in result["summary"]}
    assert set(summary) == {
        (r, a) for r in ("full", "viral 25%") for a in ("real", "synthetic", "mix")
    }
    real = summary[("full", "real")]
    assert real["seeds"] == 1 and real["macro_auroc"] > 0.8
    # trained only on mislabelled images, the classifier ranks the true class low
    assert summary[("full", "synthetic")]["macro_auroc"] < 0.5
    scarce = [r for r in result["rows"] if r["regime"] == "viral 25%" and r["arm"] == "real"]
    assert all(r["n_real"] == 45 for r in scarce)
    table = utility_markdown(result)
    assert table.splitlines()[0].startswith(
        "| regime | arm | seeds | macro-AUROC | balanced accuracy | recall normal"
    )
    assert "| viral 25% | mix | 1 |" in table
    # gains are paired with the real arm of the same regime and seed
    gains = {(g["regime"], g["arm"]): g for g in result["gains"]}
    ceiling = gains.pop(("viral 25%", "all real"))
    assert set(gains) == {(r, a) for r in ("full", "viral 25%") for a in ("synthetic", "mix")}
    rows = {(r["regime"], r["arm"]): r for r in result["rows"]}
    # the reference: what restoring the held-back real images gives, paired by seed
    assert ceiling["reference"] and ceiling["seeds"] == 1
    assert ceiling["macro_auroc"] == pytest.approx(
        rows[("full", "real")]["macro_auroc"] - rows[("viral 25%", "real")]["macro_auroc"]
    )
    assert "all real" not in json.dumps(result["recommendation"])
    for key, gain in gains.items():
        expected = rows[key]["macro_auroc"] - rows[(key[0], "real")]["macro_auroc"]
        assert gain["macro_auroc"] == pytest.approx(expected)
        low, high = gain["macro_auroc.ci95"]
        assert low <= high
    assert gains[("full", "synthetic")]["macro_auroc.ci95"][1] < 0  # mislabelled: worse


def test_bad_arguments_are_clear_errors(tiny):
    data, _ = tiny
    with pytest.raises(ValueError, match="scarce class 'covid'"):
        run_utility_benchmark(data, None, UtilityConfig(scarce_class="covid"))
    with pytest.raises(ValueError, match="unknown arm"):
        run_utility_benchmark(data, None, UtilityConfig(arms=("real", "gan")))


def test_summary_aggregates_seeds_with_an_interval():
    rows = [
        {"regime": "full", "arm": "real", "macro_auroc": v, "accuracy": v, "recall.a": v}
        | {"balanced_accuracy": v}
        for v in (0.8, 0.9, 1.0)
    ]
    (entry,) = summarise(rows, ["a"])
    assert entry["seeds"] == 3 and entry["macro_auroc"] == pytest.approx(0.9)
    low, high = entry["macro_auroc.ci95"]
    assert low < 0.9 < high


def test_interval95():
    mean, low, high = interval95([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and low < 0.9 < high
    assert interval95([0.7]) == (0.7, 0.7, 0.7)
    assert all(math.isnan(v) for v in interval95([]))


def test_bench_command_writes_its_doc_section_and_resumes(tiny, tmp_path):
    from pipelines.cli import main

    data, _ = tiny
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(
        "# Benchmarks\n\n<!-- sampling:start -->\nsampling table\n<!-- sampling:end -->\n"
    )
    args = ["bench", "utility", "--data", str(data.root), "--out", str(tmp_path / "out")]
    args += [
        "--doc",
        str(doc),
        "--arms",
        "real",
        "--seeds",
        "0",
        "--fractions",
        "1",
        "--epochs",
        "1",
    ]
    assert main(args) == 0
    first = (tmp_path / "out" / "utility.json").read_text()
    text = doc.read_text()
    assert "sampling table" in text  # other sections are left alone
    assert "<!-- utility:start -->" in text and "| full | real | 1 |" in text
    assert "radsynth bench utility --data" in text and "machine:" in text
    assert main(args) == 0  # the finished row is reused, the section replaced, not repeated
    assert doc.read_text().count("<!-- utility:start -->") == 1
    again = json.loads((tmp_path / "out" / "utility.json").read_text())
    assert again["rows"] == json.loads(first)["rows"]
    # another protocol (e.g. another scarce generator) gets a section of its own beside it
    assert main([*args, "--section", "utility-b"]) == 0
    text = doc.read_text()
    assert text.count("<!-- utility:start -->") == 1 and "<!-- utility-b:start -->" in text
    assert "## Downstream utility of synthetic data (utility-b)" in text


def test_subset_dataset_holds_exactly_the_benchmarks_scarce_images(tiny, tmp_path):
    """`radsynth subset --seed S` and the bench's `--subset-seed S` keep the same viral images, so
    a generator trained on the subset saw exactly the real images of the scarce regime."""
    from pipelines.cli import main

    data, _ = tiny
    out = tmp_path / "viral25"
    args = ["subset", "--data", str(data.root), "--out", str(out), "--where", "pathology=viral"]
    assert main([*args, "--fraction", "0.25", "--seed", "4"]) == 0
    subset = load_dataset(out)
    for split in ("val", "test"):  # untouched splits are copied whole
        assert sorted(r.sha256 for r in subset.split(split)) == sorted(
            r.sha256 for r in data.split(split)
        )
    rule = subset.info["ingest_report"]["subset"]
    assert (rule["kept"], rule["dropped"], rule["parent_hash"]) == (5, 15, data.content_hash())
    train = load_split(data, "train")
    bench_viral = scarce_subset(train, "pathology", "viral", 0.25, seed=4)
    kept_ids = set(bench_viral.ids)
    expected = sorted(
        r.sha256
        for r in data.split("train")
        if r.conditions["pathology"] == "viral" and r.id in kept_ids
    )
    written = sorted(
        r.sha256 for r in subset.split("train") if r.conditions["pathology"] == "viral"
    )
    assert written == expected and len(written) == 5
    # another seed draws other images
    other = scarce_subset(train, "pathology", "viral", 0.25, seed=5)
    assert set(other.ids) != set(bench_viral.ids)
    assert main([*args, "--fraction", "0.25"]) == 2  # OUT exists: refused, nothing replaced
    assert main(["subset", "--data", str(data.root), "--out", str(tmp_path / "x"), "--where",
                 "pathology=flu", "--fraction", "0.5"]) == 2  # fmt: skip


def test_bench_refuses_scarce_sets_without_their_scarce_class(tiny, tmp_path, capsys):
    """A set from a generator trained on a subset belongs to that subset's class: guessing the
    class (the rarest here is not the one the subset thinned) would pair it with another regime."""
    from pipelines.cli import main

    data, _ = tiny
    args = ["bench", "utility", "--data", str(data.root), "--out", str(tmp_path / "out")]
    args += ["--scarce-synthetic", f"0.25={tmp_path}", "--fractions", "0.25"]
    assert main(args) == 2
    assert "--scarce-class" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
