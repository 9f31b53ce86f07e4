"""Pixel-space diffusion (issue 14): `diffusion: space: pixel` trains the UNet on the images in
[-1, 1] with no autoencoder, through the same loop, checkpoints and resumption as latent runs;
generation, the audit's scores, adaptation and the commands that load a model take such a run,
and those that need a decoder say that it has none. Latent runs (and old configs without the
key) stay what they were."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conditioning.dataset.pixels import read_png
from generation.checkpoints import file_sha256, load_weights
from pipelines.cli import main
from tests.conftest import REPO, make_tiny_dataset
from tests.generation_tiny import (
    crash_in_training_step,
    one_thread,
    tiny_settings,
    train_tiny_model,
)

PARAMS = """profile: px
profiles:
  px:
    diffusion: {space: pixel, channels: [16, 16], attention_levels: [false, true],
                norm_num_groups: 8, num_head_channels: 8, batch_size: 4, steps: 6,
                checkpoint_every: 2, grid_columns: 2, mixed_precision: "no"}
    generate: {steps: 3, batch_size: 4, bf16: false}
    adapt: {steps: 2, batch_size: 2, warmup_steps: 1, mixed_precision: "no",
            checkpoint_every: 2}
  lat:
    diffusion: {channels: [16, 16], attention_levels: [false, true], norm_num_groups: 8,
                num_head_channels: 8, batch_size: 4, steps: 6, mixed_precision: "no"}
    adapt: {steps: 2, batch_size: 2, warmup_steps: 1, mixed_precision: "no",
            checkpoint_every: 2}
"""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def _cli(*args: str) -> int:
    return main([*args, "--no-progress"])


@pytest.fixture(scope="module")
def pixel(tmp_path_factory):
    """(root, dataset, params file, pixel run) trained through the CLI, with no --autoencoder."""
    root = tmp_path_factory.mktemp("pixel")
    data = make_tiny_dataset(root / "data", size=16, per_class=4)
    params = root / "params.yaml"
    params.write_text(PARAMS)
    run = root / "model"
    assert _cli("train", "diffusion", "--data", str(data), "--out", str(run),
                "--params", str(params)) == 0  # fmt: skip
    return root, data, params, run


def test_a_pixel_run_records_its_space_and_holds_no_autoencoder(pixel):
    from generation.pipeline import model_hash

    _, _, _, run = pixel
    config = json.loads((run / "config.json").read_text())
    card = json.loads((run / "model_card.json").read_text())
    assert config["space"] == "pixel" and config["settings"]["space"] == "pixel"
    assert config["latent_shape"] == [1, 16, 16]  # the UNet's sample: the image itself
    assert config["unet"]["in_channels"] == config["unet"]["out_channels"] == 1
    assert not {"autoencoder", "latent_mean", "latent_std"} & set(config)
    assert not (run / "autoencoder").exists()
    assert card["space"] == "pixel" and "pixel space" in card["autoencoder"]
    assert "**space**: pixel" in (run / "model_card.md").read_text()
    assert card["steps"] == 6 and sorted((run / "samples").glob("grid_step*.png"))
    assert model_hash(run) == file_sha256(run / "config.json", run / "unet.safetensors")


def test_pixel_space_encodes_and_decodes_by_scaling_alone(pixel):
    from generation import load_model

    model = load_model(pixel[3])
    assert model.space_name == "pixel" and model.autoencoder is None
    images = np.random.default_rng(0).random((3, 16, 16), dtype=np.float32)
    encoded = model.encode(images)
    assert torch.equal(encoded, torch.from_numpy(images)[:, None] * 2 - 1)
    z = torch.linspace(-1.5, 1.5, 3 * 16 * 16).view(3, 1, 16, 16)
    assert np.array_equal(model.decode(z), ((z.clamp(-1, 1) + 1) / 2).numpy())
    assert np.allclose(model.decode(encoded)[:, 0], images, atol=1e-6)


def test_a_pixel_run_resumes_to_the_same_weights(pixel, tmp_path, monkeypatch):
    """Crashed after its step-4 checkpoint and resumed, it ends on the uninterrupted run's EMA
    weights and samples, bit for bit."""
    from generation import load_model

    _, data, params, straight = pixel
    crash_in_training_step(monkeypatch, 4)
    cut = ["train", "diffusion", "--data", str(data), "--out", str(tmp_path / "cut"),
           "--params", str(params)]  # fmt: skip
    with pytest.raises(RuntimeError, match="simulated crash"):
        _cli(*cut)
    monkeypatch.undo()
    assert '"step": 4' in (tmp_path / "cut" / "checkpoints" / "latest.json").read_text()
    assert not (tmp_path / "cut" / "unet.safetensors").exists()
    assert _cli(*cut, "--resume") == 0
    want = load_weights(straight / "unet.safetensors")
    got = load_weights(tmp_path / "cut" / "unet.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    request = [{"pathology": "viral"}, {}]
    assert np.array_equal(
        load_model(straight).generate(request, 4), load_model(tmp_path / "cut").generate(request, 4)
    )


def test_generate_from_a_pixel_run_twice_gives_the_same_images(pixel, tmp_path):
    from generation import load_model
    from generation.pipeline import model_hash

    run = pixel[3]
    for out in ("a", "b"):
        assert _cli("generate", "--model", str(run), "--n", "6", "--balanced", "grid",
                    "--seed", "3", "--out", str(tmp_path / out)) == 0  # fmt: skip
    files = sorted((tmp_path / "a" / "images").glob("*.png"))
    assert len(files) == 6
    for path in files:
        assert path.read_bytes() == (tmp_path / "b" / "images" / path.name).read_bytes()
        assert read_png(path).shape == (16, 16)
    assert model_hash(run) in (tmp_path / "a" / "manifest.csv").read_text()
    model = load_model(run)
    request = [{"pathology": "normal"}, {"pathology": "viral", "age_months": 12.0}, {}]
    first, second = model.generate(request, 9), model.generate(request, 9)
    assert first.shape == (3, 16, 16) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0 and first.std() > 0
    assert np.array_equal(first, second)
    assert not np.array_equal(first, model.generate(request, 10))


def test_a_masked_dataset_trains_in_pixel_space_and_yields_pairs(tmp_path):
    from generation import load_model
    from generation.train_diffusion import train_diffusion

    data = make_tiny_dataset(tmp_path / "data", size=16, per_class=4, with_masks=True)
    settings = tiny_settings(diffusion__space="pixel", diffusion__steps=2)
    card = train_diffusion(data, None, tmp_path / "model", settings, show_progress=False)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert card["space"] == "pixel" and config["latent_shape"] == [2, 16, 16]  # image, mask
    assert config["unet"]["in_channels"] == 4 and config["unet"]["out_channels"] == 2
    model = load_model(tmp_path / "model")
    images, masks = model.generate([{}, {"pathology": "viral"}], 0, return_masks=True)
    assert images.shape == masks.shape == (2, 16, 16) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    given = np.zeros((2, 16, 16), np.uint8)
    given[:, 4:12, 4:12] = 1
    scores = model.denoising_error(images, [{}, {}], [10, 500], 0, masks=given)
    assert scores.shape == (2, 2) and np.isfinite(scores).all()


def test_pixel_space_refuses_an_autoencoder_and_latent_space_needs_one(pixel, tmp_path, capsys):
    _, data, params, _ = pixel
    given = ["train", "diffusion", "--data", str(data), "--out", str(tmp_path / "run"),
             "--params", str(params)]  # fmt: skip
    assert _cli(*given, "--autoencoder", str(tmp_path / "ae")) == 2
    err = capsys.readouterr().err
    assert "profile 'px' trains the diffusion model in pixel space" in err
    assert "leave --autoencoder out" in err
    assert _cli(*given, "--profile", "lat") == 2
    err = capsys.readouterr().err
    assert "profile 'lat' trains the diffusion model in latent space: give --autoencoder" in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_the_audit_and_benchmarks_take_a_pixel_model_or_say_it_has_no_autoencoder(pixel):
    from generation import load_model
    from generation.bench import training_throughput
    from pipelines.commands.audit import load_probe
    from pipelines.commands.bench import _signature
    from pipelines.speed_bench import SpeedConfig, _speed_plan

    run = pixel[3]
    probe = load_probe(str(run))
    images = probe.generate([{}, {}, {}], 1)
    conditions = [{"pathology": "viral"}, {}, {}]
    for score in (probe.denoising_error, probe.stepwise_error):
        values = score(images, conditions, [5, 200, 900], 0)
        assert values.shape == (3, 3) and np.isfinite(values).all() and (values > 0).all()
    with pytest.raises(ValueError, match="pixel-space model .* no autoencoder.*signature"):
        _signature(str(run))
    model = load_model(run)
    with pytest.raises(ValueError, match="pixel-space model"):
        training_throughput(model, "autoencoder", 2, False, steps=1)
    assert training_throughput(model, "unet", 2, False, steps=1)["steps_per_s"] > 0
    plan = _speed_plan(str(run), SpeedConfig(), (False,))
    parts = [kwargs["part"] for kind, _, kwargs in plan if kind == "training"]
    assert parts == ["unet"]


def test_the_app_release_and_adapt_take_a_pixel_model(pixel, tmp_path):
    from apps.discovery import scan
    from generation import load_model
    from pipelines.release.datasheet import _model_lines
    from pipelines.release.lineage import _model_info

    root, data, params, run = pixel
    assert "model" in scan(root).models
    lines = _model_lines({"model": _model_info(run)})
    assert "- space: pixel" in lines and "- params.space: pixel" in lines
    adapted = tmp_path / "adapted"
    assert _cli("train", "adapt", "--model", str(run), "--data", str(data), "--out", str(adapted),
                "--where", "pathology=viral", "--full", "--params", str(params),
                "--profile", "lat") == 0  # fmt: skip
    config = json.loads((adapted / "config.json").read_text())
    card = json.loads((adapted / "model_card.json").read_text())
    assert config["space"] == card["space"] == "pixel"  # the parent's, not the profile's
    assert config["settings"]["space"] == "pixel" and not (adapted / "autoencoder").exists()
    assert card["lineage"]["parent_model_hash"] == load_model(run).model_hash
    assert load_model(adapted).generate([{"pathology": "viral"}], 0).shape == (1, 16, 16)


def test_memorization_arms_train_no_autoencoder_in_pixel_space(tmp_path, monkeypatch):
    import pipelines.memorization as memorization

    calls = []
    monkeypatch.setattr(memorization, "_train", lambda kind, run, *a, **paths: calls.append(
        (kind, paths.get("autoencoder"))))  # fmt: skip
    config = memorization.MemorizationConfig(profile="pixel", params=str(REPO / "params.yaml"))
    settings = memorization._settings(config, "tiny")
    memorization._arm_model(tmp_path, settings, config, tmp_path / "data")
    assert calls == [("diffusion", None)]
    calls.clear()
    config.profile = "scarce"
    memorization._arm_model(tmp_path, memorization._settings(config, "tiny"), config, tmp_path)
    assert calls == [("autoencoder", None), ("diffusion", tmp_path / "autoencoder")]


def test_the_pixel_profile_and_its_pipeline_stages():
    from generation.config import load_profile
    from pipelines.stages import load_params, stage_argv

    settings = load_profile(REPO / "params.yaml", "pixel")
    diffusion = settings.diffusion
    assert diffusion.space == "pixel" and diffusion.max_minutes == 60
    assert diffusion.attention_levels == (False,) * (len(diffusion.channels) - 1) + (True,)
    params = {**load_params(REPO / "params.yaml"), "profile": "pixel"}
    arms = params["profiles"]["pixel"]["utility"]["arms"]
    assert "balanced" in arms and "signature" not in arms  # no decoder to pass real images through
    for name in ("train_diffusion", "utility"):
        assert "--autoencoder" not in stage_argv(name, params)
    assert stage_argv("train_diffusion", params)[-4:-2] == ["--profile", "pixel"]
    with pytest.raises(ValueError, match="no autoencoder to train"):
        stage_argv("train_autoencoder", params)
    demo = {**params, "profile": "demo"}
    assert "--autoencoder" in stage_argv("train_diffusion", demo)


def test_a_latent_run_saved_without_space_reads_as_latent(tmp_path):
    """Runs made before the option: their config.json names no space, their checkpoints'
    settings hashes do not cover one, and both still mean latent space."""
    from generation import load_model
    from generation.runs import settings_hash

    _, _, run = train_tiny_model(tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["space"] == "latent" and "autoencoder" in config
    old = tmp_path / "old"
    shutil.copytree(run, old)
    del config["space"], config["settings"]["space"]
    (old / "config.json").write_text(json.dumps(config))
    model, before = load_model(run), load_model(old)
    assert before.space_name == "latent" and before.autoencoder is not None
    request = [{"pathology": "bacterial"}, {}]
    assert np.array_equal(model.generate(request, 2), before.generate(request, 2))
    cfg = tiny_settings().diffusion
    without = {k: v for k, v in cfg.to_dict().items() if k != "space"}
    assert settings_hash(cfg) == settings_hash(without)
    assert settings_hash(cfg.updated(space="pixel")) != settings_hash(cfg)
