"""`radsynth train` / `radsynth generate` end to end on a tiny dataset: completing a set,
balanced plans, the manifest, and clear errors."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from conditioning.dataset import Attribute, ConditionSchema
from conditioning.dataset.synthetic_set import load_synthetic_set
from generation.generate_set import plan_conditions
from pipelines.cli import main
from tests.conftest import make_tiny_dataset
from tests.generation_tiny import one_thread

PARAMS = """profile: tiny
profiles:
  tiny:
    autoencoder: {channels: [8, 16], latent_channels: 2, norm_num_groups: 8, batch_size: 4,
                  steps: 3, checkpoint_every: 10, ssim_kernel: 3, mixed_precision: "no"}
    diffusion: {channels: [16, 16], attention_levels: [false, true], norm_num_groups: 8,
                num_head_channels: 8, batch_size: 4, steps: 3, checkpoint_every: 10,
                grid_columns: 2, mixed_precision: "no"}
    generate: {steps: 2, batch_size: 4, bf16: false}
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_tiny_dataset(root / "data", size=16, per_class=4)
    (root / "params.yaml").write_text(PARAMS)
    common = ["--params", str(root / "params.yaml"), "--no-progress"]
    assert (
        main(["train", "autoencoder", "--data", str(data), "--out", str(root / "ae"), *common]) == 0
    )
    assert (
        main(
            [
                "train",
                "diffusion",
                "--data",
                str(data),
                "--autoencoder",
                str(root / "ae"),
                "--out",
                str(root / "model"),
                *common,
            ]
        )
        == 0
    )
    return root


def test_generate_writes_set_and_completes_missing_images_only(run, capsys):
    out = run / "set"
    args = [
        "generate",
        "--model",
        str(run / "model"),
        "--n",
        "5",
        "--condition",
        "pathology=viral",
        "--seed",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    synthetic = load_synthetic_set(out)
    assert [i.id for i in synthetic.images] == [f"syn{i:06d}" for i in range(5)]
    assert {i.conditions["pathology"] for i in synthetic.images} == {"viral"}
    assert synthetic.images[0].generation["sampler"] == "dpm++"
    kept = out / "images" / "syn000000.png"
    kept_bytes, kept_mtime = kept.read_bytes(), kept.stat().st_mtime_ns
    removed = out / "images" / "syn000003.png"
    removed_bytes = removed.read_bytes()
    removed.unlink()
    (out / "manifest.csv").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "1 generated, 4 already present" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == kept_mtime and kept.read_bytes() == kept_bytes
    assert removed.read_bytes() == removed_bytes  # same seed and index: the same image
    assert len(load_synthetic_set(out).images) == 5


def test_generate_refuses_a_different_request_in_the_same_dir(run, capsys):
    base = [
        "generate",
        "--model",
        str(run / "model"),
        "--n",
        "2",
        "--seed",
        "1",
        "--out",
        str(run / "set2"),
        "--no-progress",
    ]
    assert main(base) == 0
    assert main([*base[:-3], "--guidance", "5", *base[-3:]]) == 2
    assert "different guidance" in capsys.readouterr().err


def test_a_larger_n_grows_a_set_when_its_first_images_keep_their_conditions(run, capsys):
    def generate(out, n, *extra):
        args = ["generate", "--model", str(run / "model"), "--seed", "3", "--no-progress"]
        return main([*args, "--n", str(n), "--out", str(run / out), *extra])

    viral = ("--condition", "pathology=viral")
    assert generate("grow", 3, *viral) == 0
    first = {p.name: p.read_bytes() for p in (run / "grow" / "images").iterdir()}
    assert generate("grow", 5, *viral) == 0
    assert generate("whole", 5, *viral) == 0
    grown = {p.name: p.read_bytes() for p in (run / "grow" / "images").iterdir()}
    whole = {p.name: p.read_bytes() for p in (run / "whole" / "images").iterdir()}
    assert grown == whole and all(grown[name] == data for name, data in first.items())
    manifest = (run / "grow" / "manifest.csv").read_text().splitlines()
    assert (
        len(manifest) == 6 and json.loads((run / "grow" / "generation.json").read_text())["n"] == 5
    )

    capsys.readouterr()
    assert generate("grow", 4, *viral) == 2
    assert "would shrink it" in capsys.readouterr().err
    assert generate("match", 4, "--balanced", "match") == 0
    assert generate("match", 7, "--balanced", "match") == 2
    assert "would change the conditions" in capsys.readouterr().err


def test_generate_rejects_bad_conditions_and_samplers(run, capsys):
    base = ["generate", "--model", str(run / "model"), "--n", "1", "--seed", "1", "--no-progress"]
    assert main([*base, "--out", str(run / "bad1"), "--condition", "pathology=covid"]) == 2
    assert "allowed: normal, bacterial, viral" in capsys.readouterr().err
    assert main([*base, "--out", str(run / "bad2"), "--sampler", "plms"]) == 2
    assert "samplers are dpm++, ddim, euler, ddpm" in capsys.readouterr().err
    assert main([*base, "--out", str(run / "bad3"), "--condition", "pathology"]) == 2


def test_balanced_grid_spreads_over_classes_and_match_follows_training(run):
    out = run / "grid"
    assert (
        main(
            [
                "generate",
                "--model",
                str(run / "model"),
                "--n",
                "6",
                "--balanced",
                "grid",
                "--seed",
                "0",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    with (out / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert Counter(r["pathology"] for r in rows) == {"normal": 2, "bacterial": 2, "viral": 2}
    assert all(0 <= float(r["age_months"]) <= 216 for r in rows)
    schema = ConditionSchema((Attribute("pathology", "categorical", values=("a", "b")),))
    training = {
        "combinations": [
            {"values": [["pathology", "a"]], "count": 30},
            {"values": [["pathology", "b"]], "count": 10},
        ],
        "quantiles": {},
    }
    plan = plan_conditions(schema, 8, {}, "match", 0, training)
    assert Counter(p["pathology"] for p in plan) == {"a": 6, "b": 2}


def test_a_continuous_range_draws_every_image_inside_it(run):
    """`--condition age_months=0:36` asks for a scarce band: every image's age lies in it, under
    each balancing, and the request is refused where the range is not one."""
    schema = ConditionSchema(
        (
            Attribute("sex", "categorical", values=("F", "M")),
            Attribute("age_months", "continuous", unit="months", minimum=0, maximum=240),
        )
    )
    training = {
        "combinations": [
            {"values": [["sex", "F"]], "count": 5},
            {"values": [["sex", "M"]], "count": 5},
        ],
        "quantiles": {"age_months": list(np.linspace(0, 240, 21))},
    }
    for balanced in (None, "grid", "match"):
        plan = plan_conditions(schema, 200, {"age_months": "0:36"}, balanced, 3, training)
        ages = [p["age_months"] for p in plan]
        assert all(0 <= a <= 36 for a in ages), balanced
        assert max(ages) - min(ages) > 30  # spread over the band, not one value
    grid = plan_conditions(schema, 200, {"age_months": "0:36"}, "grid", 3, training)
    assert Counter(p["sex"] for p in grid) == {"F": 100, "M": 100}
    # the same plan for the same seed; a whole-range draw is unchanged by the feature
    assert grid == plan_conditions(schema, 200, {"age_months": "0:36"}, "grid", 3, training)
    for bad in ("36:0", "0:300", "a:b"):
        with pytest.raises(ValueError, match="age_months"):
            plan_conditions(schema, 4, {"age_months": bad}, "grid", 0, training)
    with pytest.raises(ValueError, match="continuous"):
        plan_conditions(schema, 4, {"sex": "F:M"}, "grid", 0, training)
    out = run / "band"
    args = ["generate", "--model", str(run / "model"), "--n", "4", "--seed", "0"]
    assert main([*args, "--condition", "age_months=6:30", "--out", str(out), "--no-progress"]) == 0
    with (out / "manifest.csv").open() as handle:
        assert all(6 <= float(r["age_months"]) <= 30 for r in csv.DictReader(handle))
    request = json.loads((out / "generation.json").read_text())
    assert request["conditions"] == {"age_months": [6.0, 30.0]}
