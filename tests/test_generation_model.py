"""The public model API on a tiny trained model: samplers, determinism, conditions, guidance,
weights round-trip, and the per-image scores the privacy audit uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conditioning.dataset import load_dataset
from generation import SAMPLERS, Sampling, load_model
from tests.generation_tiny import one_thread, train_tiny_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def model(trained):
    return load_model(trained[2])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_returns_n_images_in_unit_range(model, sampler):
    images = model.generate(
        [{"pathology": "viral"}] * 3, seed=0, how=Sampling(sampler=sampler, steps=3)
    )
    assert images.shape == (3, 16, 16)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_unknown_sampler_error_lists_the_names(model):
    with pytest.raises(ValueError, match="samplers are dpm\\+\\+, ddim, euler, ddpm"):
        model.generate([{}], seed=0, how=Sampling(sampler="heun"))


def test_same_seed_same_images_and_batch_size_does_not_matter(model):
    request = [{"pathology": "normal"}, {"pathology": "viral", "age_months": 30}, {}]
    first = model.generate(request, seed=7, how=Sampling(sampler="ddpm", batch_size=3))
    again = model.generate(request, seed=7, how=Sampling(sampler="ddpm", batch_size=3))
    one_by_one = model.generate(request, seed=7, how=Sampling(sampler="ddpm", batch_size=1))
    other = model.generate(request, seed=8, how=Sampling(sampler="ddpm", batch_size=3))
    assert np.array_equal(first, again)
    assert np.allclose(first, one_by_one, atol=1e-4)
    assert not np.allclose(first, other, atol=1e-3)
    # image i depends on (seed, index): generating image 2 alone with its index reproduces it
    alone = model.generate([request[2]], seed=7, how=Sampling(sampler="ddpm"), indices=[2])
    assert np.allclose(alone[0], first[2], atol=1e-4)


def test_bad_conditions_raise_with_what_is_allowed(model):
    with pytest.raises(ValueError, match="allowed: normal, bacterial, viral"):
        model.generate([{"pathology": "covid"}], seed=0)
    with pytest.raises(ValueError, match="unknown condition attribute\\(s\\) view"):
        model.generate([{"view": "PA"}], seed=0)


def test_guidance_steers_only_requested_attributes(model):
    # unconditioned request: guidance has nothing to contrast, images do not change
    free1 = model.generate([{}] * 2, seed=3, how=Sampling(guidance=1.0))
    free4 = model.generate([{}] * 2, seed=3, how=Sampling(guidance=4.0))
    assert np.allclose(free1, free4, atol=1e-5)
    # a subset (pathology only, age left free) is guided: the scale changes the images
    sub1 = model.generate([{"pathology": "viral"}] * 2, seed=3, how=Sampling(guidance=1.0))
    sub4 = model.generate([{"pathology": "viral"}] * 2, seed=3, how=Sampling(guidance=4.0))
    assert not np.allclose(sub1, sub4, atol=1e-4)


def test_weights_are_safetensors_and_round_trip(trained, model):
    run = trained[2]
    for path in (run / "unet.safetensors", run / "autoencoder" / "autoencoder.safetensors"):
        with safe_open(str(path), "pt") as handle:
            assert len(list(handle.keys())) > 10
    reloaded = load_model(run)
    assert reloaded.model_hash == model.model_hash
    request = [{"pathology": "bacterial"}] * 2
    assert np.array_equal(model.generate(request, seed=1), reloaded.generate(request, seed=1))


def test_model_card_records_data_autoencoder_and_losses(trained):
    data, ae, run = trained
    card = json.loads((run / "model_card.json").read_text())
    assert card["dataset"]["hash"] == load_dataset(data).content_hash()
    assert card["autoencoder"]["source"] == ae.resolve().name  # a run name, no local path
    assert card["steps"] == 6 and card["stopped_by"] == "steps"
    assert set(card["final_losses"]) == {"loss", "mse"}
    assert (run / "model_card.md").read_text().startswith("# Model card")
    assert sorted(p.name for p in (run / "samples").glob("grid_step*.png"))
    assert "step 6" in (run / "train.log").read_text() or (run / "train.log").is_file()


def test_denoising_error_is_per_image_per_timestep_and_deterministic(model, trained):
    dataset = load_dataset(trained[0])
    records = dataset.split("train")[:3]
    images = np.stack([dataset.load_image(r) for r in records])
    conditions = [r.conditions for r in records]
    scores = model.denoising_error(images, conditions, [10, 500], seed=0)
    assert scores.shape == (3, 2) and np.isfinite(scores).all() and (scores >= 0).all()
    assert np.array_equal(scores, model.denoising_error(images, conditions, [10, 500], seed=0))
    assert not np.array_equal(scores, model.denoising_error(images, conditions, [10, 500], seed=1))
    pia = model.stepwise_error(images, conditions, [10, 500], seed=0)
    assert pia.shape == (3, 2) and np.isfinite(pia).all()
    with pytest.raises(ValueError, match="timesteps must lie in"):
        model.denoising_error(images, conditions, [1000], seed=0)


@pytest.mark.parametrize("mode", [["--lora", "2"], ["--full"]])
def test_adapt_fine_tunes_a_subset_and_records_lineage(trained, model, tmp_path, mode):
    from pipelines.cli import main

    data, _, run = trained
    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: t\nprofiles:\n  t:\n"
        "    adapt: {steps: 3, batch_size: 2, mixed_precision: 'no', checkpoint_every: 10}\n"
        "    generate: {steps: 3, bf16: false}\n"
    )
    out = tmp_path / "adapted"
    args = ["train", "adapt", "--model", str(run), "--data", str(data), "--out", str(out),
            "--where", "pathology=viral", "--limit", "2", *mode, "--params", str(params),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    card = json.loads((out / "model_card.json").read_text())
    lineage = card["lineage"]
    assert lineage["parent_model_hash"] == model.model_hash
    assert lineage["where"] == {"pathology": "viral"} and lineage["images"] == 2
    viral = {
        r.id for r in load_dataset(data).split("train") if r.conditions["pathology"] == "viral"
    }
    assert set(lineage["image_ids"]) <= viral
    adapted = load_model(out)
    request = [{"pathology": "viral"}] * 2
    assert not np.array_equal(adapted.generate(request, seed=0), model.generate(request, seed=0))
    bad = [a if a != str(out) else str(tmp_path / "bad") for a in args]
    assert main([*bad, "--where", "pathology=covid"]) == 2
    assert not (tmp_path / "bad").exists()


def test_adapt_replay_mixes_the_rest_of_the_distribution_into_every_batch(trained, tmp_path):
    """With --replay, each batch holds that share of train images outside --where (so guidance's
    unconditional branch keeps seeing them), drawn reproducibly; the lineage records the share."""
    from generation.data import load_training_data
    from pipelines.cli import main

    data = trained[0]

    def viral(records):
        return [r for r in records if r.conditions["pathology"] == "viral"][:2]

    def others(records):
        return [r for r in records if r.conditions["pathology"] != "viral"]

    train = load_training_data(data, limit_to=viral, replay_from=others, replay_share=0.5)
    assert train.n_focus == 2 and len(train.focus_records) == 2
    assert all(r.conditions["pathology"] == "viral" for r in train.focus_records)
    assert all(r.conditions["pathology"] != "viral" for r in train.records[2:])
    seen_pool = set()
    for step in range(6):
        idx = train.batch_indices(step, 4, seed=0)
        assert (idx < 2).sum() == 2 and (idx >= 2).sum() == 2
        np.testing.assert_array_equal(idx, train.batch_indices(step, 4, seed=0))
        seen_pool |= set(idx[idx >= 2].tolist())
    assert len(seen_pool) == 6  # the pool is walked by permutation, not resampled at random

    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: t\nprofiles:\n  t:\n"
        "    adapt: {steps: 2, batch_size: 4, mixed_precision: 'no', checkpoint_every: 10}\n"
        "    generate: {steps: 3, bf16: false}\n"
    )
    out = tmp_path / "replayed"
    args = ["train", "adapt", "--model", str(trained[2]), "--data", str(data), "--full",
            "--out", str(out), "--params", str(params), "--no-progress", "--replay", "0.5"]  # fmt: skip
    assert main(args) == 2  # replay needs --where: nothing to tell the replayed images apart
    assert not out.exists()
    assert main([*args, "--where", "pathology=viral", "--limit", "2"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["lineage"]["replay_share"] == 0.5 and card["lineage"]["images"] == 2
    whole = tmp_path / "whole"  # no --where: the params default share has nothing to replay
    plain = [a if a != str(out) else str(whole) for a in args if a not in ("--replay", "0.5")]
    assert main(plain) == 0
    assert json.loads((whole / "model_card.json").read_text())["lineage"]["replay_share"] == 0.0
    config = json.loads((out / "config.json").read_text())
    combos = config["training_conditions"]["combinations"]  # what --balanced match draws from
    assert [c["values"] for c in combos] == [[["pathology", "viral"]]]


def test_lora_adapt_is_reproducible_resumes_and_saves_plain_weights(trained, tmp_path, monkeypatch):
    """`--lora`: the same seed gives the same merged weights, under the parent's weight names (no
    adapter left); a run crashed after its step-2 checkpoint resumes to them bit for bit."""
    from generation.checkpoints import load_weights
    from pipelines.cli import main
    from tests.generation_tiny import crash_in_training_step

    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: t\nprofiles:\n  t:\n"
        "    adapt: {steps: 4, batch_size: 2, lr: 0.002, warmup_steps: 1, ema_decay: 0.5,\n"
        "            mixed_precision: 'no', checkpoint_every: 2}\n"
    )

    def adapt(out: str, *extra: str) -> list[str]:
        return ["train", "adapt", "--model", str(trained[2]), "--data", str(trained[0]),
                "--out", str(tmp_path / out), "--where", "pathology=viral", "--limit", "2",
                "--lora", "2", "--params", str(params), "--no-progress", *extra]  # fmt: skip

    assert main(adapt("a")) == 0 and main(adapt("b")) == 0
    crash_in_training_step(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(adapt("cut"))
    monkeypatch.undo()
    assert main(adapt("cut", "--resume")) == 0
    parent = load_weights(trained[2] / "unet.safetensors")
    first = load_weights(tmp_path / "a" / "unet.safetensors")
    assert first.keys() == parent.keys()
    assert any(not torch.equal(first[k], parent[k]) for k in parent)
    for other in ("b", "cut"):
        again = load_weights(tmp_path / other / "unet.safetensors")
        assert again.keys() == first.keys(), other
        assert all(torch.equal(first[k], again[k]) for k in first), other


def weights_moved_by_adapting(trained, tmp_path, setting: str, value) -> float:
    """Adapt the tiny model fully for two steps with one adapt setting; the L1 distance of the
    saved weights from the parent's."""
    from safetensors.torch import load_file

    from pipelines.cli import main

    # without its own warmup setting, none: the default would scale two steps down 25-fold
    warmup = "" if setting == "warmup_steps" else "warmup_steps: 0, "
    params = tmp_path / f"params-{setting}{value}.yaml"
    params.write_text(
        "profile: t\nprofiles:\n  t:\n"
        f"    adapt: {{steps: 2, batch_size: 4, mixed_precision: 'no', {warmup}{setting}: {value}}}\n"
    )
    out = tmp_path / f"{setting}{value}"
    args = ["train", "adapt", "--model", str(trained[2]), "--data", str(trained[0]), "--full",
            "--where", "pathology=viral", "--out", str(out), "--params", str(params),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    parent = load_file(str(trained[2] / "unet.safetensors"))
    weights = load_file(str(out / "unet.safetensors"))
    return sum(float((weights[k] - parent[k]).abs().sum()) for k in parent)


def test_adapt_warmup_starts_fine_tuning_gently(trained, tmp_path):
    """A fresh Adam moves every weight by about lr per step; warmup scales the first steps down,
    so after two steps a long warmup has moved the parent's weights far less than none."""

    def moved(warmup: int) -> float:
        return weights_moved_by_adapting(trained, tmp_path, "warmup_steps", warmup)

    assert moved(1000) < 0.05 * moved(0)


def test_adapt_exclude_skips_images_the_parent_already_saw(trained, tmp_path):
    """--exclude DATASET (say, the parent's thinned training set) leaves its images out by pixel
    hash, whatever their ids there; excluding every match is a clear error."""
    from conditioning.dataset import SubsetRule, write_subset
    from pipelines.cli import main

    data = load_dataset(trained[0])
    seen = write_subset(data, tmp_path / "seen", SubsetRule("pathology", "viral", 0.5, seed=0))
    seen_hashes = {r.sha256 for r in seen.records}
    viral = [r for r in data.split("train") if r.conditions["pathology"] == "viral"]
    new = [r for r in viral if r.sha256 not in seen_hashes]
    assert 0 < len(new) < len(viral)
    params = tmp_path / "params.yaml"
    params.write_text(
        "profile: t\nprofiles:\n  t:\n    adapt: {steps: 1, batch_size: 2, mixed_precision: 'no'}\n"
    )
    out = tmp_path / "fresh"
    args = ["train", "adapt", "--model", str(trained[2]), "--data", str(trained[0]),
            "--where", "pathology=viral", "--params", str(params), "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(out), "--exclude", str(tmp_path / "seen")]) == 0
    lineage = json.loads((out / "model_card.json").read_text())["lineage"]
    assert sorted(lineage["image_ids"]) == sorted(r.id for r in new)
    # the default: every weight, at the parent's own learning rate
    assert lineage["method"] == "full fine-tuning"
    parent_lr = json.loads((trained[2] / "config.json").read_text())["settings"]["lr"]
    assert json.loads((out / "config.json").read_text())["settings"]["lr"] == parent_lr
    from generation.config import RunSettings

    saved = RunSettings.read(out)  # the adapted run's resolved settings, beside its weights
    assert saved.trained == "adapt" and saved.config.lr == saved.settings.adapt.lr == parent_lr
    assert lineage["excluded_datasets"] == [
        {"name": seen.name, "hash": seen.content_hash(), "images": len(seen.records)}
    ]
    assert str(tmp_path) not in json.dumps(lineage["excluded_datasets"])
    assert main([*args, "--out", str(tmp_path / "none"), "--exclude", str(trained[0])]) == 2
    assert not (tmp_path / "none").exists()


def test_adapt_averages_from_the_parent_weights(trained, tmp_path):
    """The adapted weights are an EMA that starts at the parent's, with no warmup (which would
    forget the parent at once): ema_decay 1 returns the parent unchanged, 0 the last trained step."""

    def moved(decay: float) -> float:
        return weights_moved_by_adapting(trained, tmp_path, "ema_decay", decay)

    assert moved(1.0) == 0.0
    assert 0 < moved(0.5) < 0.75 * moved(0.0)  # a warmup would give about 0.9


def test_bench_sampling_times_every_sampler_and_precision(trained, capsys):
    from pipelines.cli import main

    args = ["bench-sampling", "--model", str(trained[2]), "--n", "1", "--steps", "2,3",
            "--ddpm-1000-n", "0", "--json", str(trained[2].parent / "bench.json")]  # fmt: skip
    assert main(args) == 0
    rows = json.loads((trained[2].parent / "bench.json").read_text())
    combos = {(r["sampler"], r["steps"], r["bf16"]) for r in rows}
    assert combos == {(s, k, b) for s in SAMPLERS for k in (2, 3) for b in (False, True)}
    assert all(r["images_per_s"] > 0 for r in rows)
    assert "dpm++" in capsys.readouterr().out


def test_bench_speed_writes_its_tables_with_peak_memory(trained, tmp_path):
    """`radsynth bench speed`: every table of the speed section, one fresh process per row (so
    each has its own peak memory), the command line as typed, other sections left alone."""
    from pipelines.cli import main

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n<!-- utility:start -->\nutility table\n<!-- utility:end -->\n")
    args = ["bench", "speed", "--model", str(trained[2]), "--threads", "1", "--n", "2",
            "--steps", "2", "--samplers", "dpm++", "--ddpm-1000-n", "1",
            "--unet-batch", "2", "--ae-batch", "2", "--audit-size", "40", "20",
            "--doc", str(doc), "--speed-out", str(tmp_path / "speed")]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "speed" / "speed.json").read_text())
    from conditioning.precision import native_bf16

    precisions = (False, True) if native_bf16("cpu") else (False,)  # emulated bf16 is skipped
    assert result["precisions"] == ["bf16" if p else "fp32" for p in precisions]
    combos = {(r["sampler"], r["steps"], r["bf16"]) for r in result["sampling"]}
    assert combos == {(s, k, b) for s, k in [("dpm++", 2), ("ddpm", 1000)]
                      for b in precisions}  # fmt: skip
    assert all(r["images_per_s"] > 0 and r["peak_rss_mib"] > 50 for r in result["sampling"])
    assert {r["part"] for r in result["training"]} == {"unet", "autoencoder"}
    assert all(r["steps_per_s"] > 0 and r["gflop_per_s"] > 0 for r in result["training"])
    assert all(r["forward_gflop"] > 0 for r in result["unet"])
    assert result["matmul"]["fp32"] > 0 and result["audit"]["n_query"] == 40
    text = doc.read_text()
    assert "utility table" in text and text.count("<!-- speed:start -->") == 1
    assert "| dpm++ | 2 | no | 2 |" in text and "% of matmul peak" in text
    assert "radsynth bench speed --model" in text and "--audit-size 40 20" in text


def test_measured_reports_the_tasks_own_peak_memory():
    """Each speed row's peak memory is its own process's: 300 MiB more shows as 300 MiB more."""
    from pipelines.speed_bench import measured

    small = measured("tests.generation_tiny:touch_memory", 1, mib=0)
    large = measured("tests.generation_tiny:touch_memory", 1, mib=300)
    assert small[0] == 0 and large[0] == 300
    assert 280 <= large[1] - small[1] <= 340
