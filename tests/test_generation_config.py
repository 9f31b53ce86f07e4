"""Typed settings (issue 17): a profile's values are checked on load, every section round-trips
through JSON, and a training run carries the settings it trained with, read back equal."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from generation.config import (
    TRAINING_CONFIG,
    AdaptConfig,
    AdaptedConfig,
    AutoencoderConfig,
    DiffusionConfig,
    GenerateConfig,
    Profile,
    RunSettings,
    load_profile,
    merge_profile,
)
from tests.conftest import REPO, write_params
from tests.generation_tiny import one_thread, tiny_settings


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("autoencoder", "lr", "1e-3", "expected float"),
        ("diffusion", "steps", 12.5, "expected int"),
        ("diffusion", "steps", True, "expected int"),
        ("diffusion", "channels", 64, "expected a list of int"),
        ("diffusion", "attention_levels", [False, "yes"], "expected a list of bool"),
        ("diffusion", "space", "voxel", "expected one of latent, pixel"),
        ("diffusion", "mixed_precision", "fp8", "expected one of no, bf16, fp16"),
        ("generate", "sampler", "plms", "expected one of dpm\\+\\+, ddim, euler, ddpm"),
        ("generate", "bf16", 1, "expected bool"),
        ("adapt", "batch_size", "8", "expected int or null"),
    ],
)
def test_a_wrong_type_in_a_profile_names_file_section_key_type_and_value(
    tmp_path, section, key, value, expected
):
    params = write_params(tmp_path, {section: {key: value}})
    with pytest.raises(ValueError) as caught:
        load_profile(params)
    message = str(caught.value)
    assert str(params) in message and "profiles.p" in message
    assert f"{section}.{key}: " in message and repr(value) in message
    assert pytest.importorskip("re").search(expected, message), message


def test_ints_pass_for_floats_and_unknown_keys_and_sections_are_errors(tmp_path):
    settings = load_profile(write_params(tmp_path, {"diffusion": {"lr": 1, "max_minutes": 3}}))
    assert settings.diffusion.lr == 1 and settings.diffusion.max_minutes == 3
    assert settings.profile == "p" and settings.adapt.lr is None  # null: the parent's
    with pytest.raises(ValueError, match="unknown key\\(s\\) chanels in autoencoder"):
        load_profile(write_params(tmp_path, {"autoencoder": {"chanels": [8]}}))
    with pytest.raises(ValueError, match="params.yaml profiles.p: unknown section 'difusion'"):
        load_profile(write_params(tmp_path, {"difusion": {}}))
    assert merge_profile({"audit": {"quantile": 0.9}}) == Profile()  # other stages' sections


def test_every_repository_profile_loads_and_its_defaults_live_in_the_dataclasses():
    names = yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]
    for name in names:
        assert load_profile(REPO / "params.yaml", name).profile == name
    generate = GenerateConfig()
    assert (generate.sampler, generate.steps, generate.guidance, generate.batch_size) == (
        "dpm++", 20, 2.0, 32,
    )  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [
        AutoencoderConfig(channels=(8, 16), lr=0.5, attention=True),
        DiffusionConfig(space="pixel", attention_levels=(False, True), balance_by="pathology"),
        GenerateConfig(balanced=None, sampler="ddim", guidance=1),
        AdaptConfig(lr=1.0e-4, batch_size=4),
    ],
)
def test_a_section_round_trips_through_json(config):
    text = json.dumps(config.to_dict())
    assert type(config).from_json(json.loads(text)) == config


def test_a_profile_and_run_settings_round_trip_through_json():
    settings = tiny_settings().updated(adapt={"lr": 3.0e-4, "batch_size": 2})
    saved = RunSettings("adapt", settings)
    back = RunSettings.from_json(json.loads(json.dumps(saved.to_json())))
    assert back == saved and back.settings.profile == "tiny"
    assert isinstance(back.config, AdaptedConfig) and back.config.lr == 3.0e-4
    assert back.config.warmup == 50 and DiffusionConfig().warmup == 0
    with pytest.raises(ValueError, match="x.json: diffusion.lr: expected float"):
        RunSettings.from_json({**saved.to_json(), "diffusion": {"lr": "fast"}}, "x.json")


def test_updated_is_checked_like_a_profile():
    settings = tiny_settings()
    assert settings.updated(diffusion={"steps": 9}).diffusion.steps == 9
    with pytest.raises(ValueError, match="diffusion.steps: expected int, got '9'"):
        settings.updated(diffusion={"steps": "9"})


def test_a_run_folder_carries_its_settings_and_they_read_back_equal(tmp_path):
    from generation.train_autoencoder import train_autoencoder
    from generation.train_diffusion import train_diffusion
    from tests.conftest import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", size=16, per_class=4)
    settings = tiny_settings(autoencoder__steps=2, diffusion__steps=2)
    with one_thread():
        train_autoencoder(data, tmp_path / "ae", settings, show_progress=False)
        train_diffusion(data, tmp_path / "ae", tmp_path / "model", settings, show_progress=False)
    assert RunSettings.read(tmp_path / "ae") == RunSettings("autoencoder", settings)
    saved = RunSettings.read(tmp_path / "model")
    assert saved == RunSettings("diffusion", settings) and saved.config == settings.diffusion
    # config.json keeps what it always held: the same values, as plain JSON
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["settings"] == settings.diffusion.to_dict()
    assert config["generate"] == settings.generate.to_dict()
    # a resume with other settings names what changed, from the saved file
    with pytest.raises(ValueError, match="different settings_hash.*lr 0.001 -> 0.5"):
        train_autoencoder(
            data, tmp_path / "ae", tiny_settings(autoencoder__lr=0.5), resume=True,
            show_progress=False,
        )  # fmt: skip
    assert RunSettings.read(tmp_path / "ae") == RunSettings("autoencoder", settings)


def test_adapt_reads_its_parents_settings_and_falls_back_for_old_runs(tmp_path):
    from generation.adapt import parent_training

    settings = tiny_settings()
    run = tmp_path / "parent"
    run.mkdir()
    parent = replace(settings, diffusion=settings.diffusion.updated(lr=7.0e-4, batch_size=3))
    RunSettings("diffusion", parent).write(run)
    assert (run / TRAINING_CONFIG).is_file()
    trained = parent_training(run, {"settings": {"lr": 1.0}}, settings)
    assert (trained.lr, trained.batch_size) == (7.0e-4, 3)  # the file wins over config.json
    (run / TRAINING_CONFIG).unlink()  # a run from before the file: config.json's settings
    old = parent_training(run, {"settings": {"lr": 5.0e-4, "batch_size": 6}}, settings)
    assert (old.lr, old.batch_size) == (5.0e-4, 6)
    assert parent_training(run, {}, settings) == settings.diffusion
    with pytest.raises(ValueError, match="config.json settings: diffusion.lr: expected float"):
        parent_training(run, {"settings": {"lr": "1e-3"}}, settings)
    (run / TRAINING_CONFIG).write_text(json.dumps({"format_version": 1, "trained": "x"}))
    with pytest.raises(ValueError, match="trained must be"):
        parent_training(run, {}, settings)


def test_the_generate_stage_takes_count_and_seed_from_the_defaults():
    from pipelines.stages import stage_argv

    params = {"profile": "p", "profiles": {"p": {"generate": {"steps": 5}}}}
    argv = stage_argv("generate", params)
    assert argv[-6:] == ["--n", "100", "--seed", "0", "--steps", "5"]
    params["profiles"]["p"]["generate"]["steps"] = 5.5
    with pytest.raises(ValueError, match="params.yaml profiles.p: generate.steps"):
        stage_argv("generate", params)
