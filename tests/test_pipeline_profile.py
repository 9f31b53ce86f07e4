"""A whole params.yaml profile typed (issue 17): the audit, evaluate and utility sections are
checked when params.yaml is loaded, before any stage runs, their stages' flags are built from the
typed sections, and each default has one home that the commands' flags take theirs from."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from generation.config import OTHER_SECTIONS, Profile, merge_profile
from generation.evaluation.config import EvaluateSettings, UtilitySettings
from pipelines.profile import (
    ALL_SECTIONS,
    STAGE_SECTIONS,
    PipelineProfile,
    load_pipeline_profile,
)
from pipelines.stages import load_params, stage_argv
from privacy_audit.config import AuditSettings
from tests.conftest import REPO, write_params

WRONG = {  # section.key: (the value, what the error says)
    "audit.quantile": ("high", "expected float, got 'high'"),
    "audit.encoder_steps": (1.5, "expected int or null, got 1.5"),
    "audit.forbid": ("name", "expected a list of str, got 'name'"),
    "evaluate.epochs": ("5", "expected int, got '5'"),
    "evaluate.real_split": ("holdout", "expected one of train, val, test, got 'holdout'"),
    "evaluate.bf16": (1, "expected bool, got 1"),
    "utility.arms": ("real", "expected a list of str, got 'real'"),
    "utility.seeds": ([0, "1"], "expected a list of int"),
}


@pytest.mark.parametrize("where", WRONG)
def test_a_wrong_type_in_a_stage_section_fails_when_params_are_loaded(tmp_path, where):
    section, key = where.split(".")
    value, expected = WRONG[where]
    params = write_params(tmp_path, {section: {key: value}})
    with pytest.raises(ValueError, match=f"^{re.escape(f'{params} profiles.p: {where}: ')}"):
        load_params(params)
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_params(params)


def test_an_unknown_key_or_section_is_named_with_what_is_known(tmp_path):
    with pytest.raises(ValueError) as caught:
        load_params(write_params(tmp_path, {"audit": {"quantil": 0.99}}))
    message = str(caught.value)
    assert "profiles.p: unknown key(s) quantil in audit; known: train_split" in message
    assert "quantile" in message
    with pytest.raises(ValueError, match="unknown key\\(s\\) epoch in evaluate"):
        load_params(write_params(tmp_path, {"evaluate": {"epoch": 3}}))
    with pytest.raises(ValueError, match="unknown section 'utilty'; sections are autoencoder, "):
        load_params(write_params(tmp_path, {"utilty": {}}))
    with pytest.raises(ValueError, match="profiles.p: section audit must be a mapping"):
        load_params(write_params(tmp_path, {"audit": [0.99]}))


def test_the_stage_command_refuses_a_bad_profile_before_running_anything(tmp_path, capsys):
    from pipelines.cli import main

    params = write_params(tmp_path, {"utility": {"epochs": "3"}})
    assert main(["stage", "train_autoencoder", "--params", str(params)]) == 2
    assert "profiles.p: utility.epochs: expected int, got '3'" in capsys.readouterr().err


def test_training_checks_the_whole_profile_and_generation_config_skips_the_stage_sections(
    tmp_path,
):
    from argparse import Namespace

    from pipelines.commands.train import settings_from

    params = write_params(tmp_path, {"audit": {"quantile": "high"}})
    args = Namespace(threads=None, params=str(params), profile=None, grad_accum=None)
    with pytest.raises(ValueError, match="audit.quantile: expected float"):
        settings_from(args)
    # generation.config may not import privacy_audit: it leaves these sections to pipelines
    assert merge_profile({"audit": {"quantil": "x"}}) == Profile()
    assert tuple(STAGE_SECTIONS) == OTHER_SECTIONS


def test_every_repository_profile_loads_whole():
    names = yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]
    for name in names:
        profile = load_pipeline_profile(REPO / "params.yaml", name)
        assert profile.name == name and profile.training.profile == name
    demo = load_pipeline_profile(REPO / "params.yaml", "demo")
    assert demo.audit == AuditSettings(
        quantile=0.995, encoder_steps=300, verifier_steps=300, mia_samples=300
    )
    assert demo.evaluate == EvaluateSettings(epochs=5, detect_epochs=4)
    assert demo.utility == UtilitySettings(
        arms=("real", "mix", "balanced"), seeds=(0, 1, 2), epochs=3, detect_epochs=0
    )


@pytest.mark.parametrize(
    "section",
    [
        AuditSettings(quantile=0.9, forbid=("a", "b"), encoder_steps=10, encoder_cache="c"),
        EvaluateSettings(real_split="val", bf16=True, threads=2, domain_models="d"),
        UtilitySettings(fractions=(1.0, 0.5), arms=("real",), synthetic_ratio=2, subset_seed=1),
    ],
)
def test_a_stage_section_round_trips_through_json(section):
    text = json.dumps(section.to_dict())
    assert type(section).from_json(json.loads(text)) == section


def test_a_whole_profile_round_trips_and_names_what_it_sets():
    data = yaml.safe_load((REPO / "params.yaml").read_text())["profiles"]["smoke"]
    profile = PipelineProfile.from_json(data)
    assert tuple(profile.to_json()) == ALL_SECTIONS
    again = PipelineProfile.from_json(json.loads(json.dumps(profile.to_json())))
    assert all(again.section(name) == profile.section(name) for name in ALL_SECTIONS)
    assert profile.given("audit") == {
        "quantile": 0.95,
        "encoder_steps": 30,
        "verifier_steps": 30,
        "mia_samples": 40,
    }
    assert profile.given("utility")["arms"] == ["real", "balanced"]  # lists, as flags want
    assert PipelineProfile().given("audit") == {}
    with pytest.raises(ValueError, match="unknown section 'release'"):
        profile.section("release")


def test_the_demo_profiles_audit_evaluate_and_utility_stages_run_as_before():
    """The argv of these stages, as they were when as_flags got the raw sections."""
    params = {**load_params(REPO / "params.yaml"), "profile": "demo"}
    assert stage_argv("audit", params) == [
        "audit", "--synthetic", "runs/synthetic", "--data", "data/dataset",
        "--model", "runs/diffusion", "--out", "runs/audit",
        "--filtered-out", "runs/released-set", "--filtered-report", "runs/audit-released",
        "--quantile", "0.995", "--encoder-steps", "300", "--verifier-steps", "300",
        "--mia-samples", "300",
    ]  # fmt: skip
    assert stage_argv("evaluate", params) == [
        "evaluate", "--synthetic", "runs/released-set", "--data", "data/dataset",
        "--out", "runs/evaluation", "--epochs", "5", "--detect-epochs", "4",
    ]  # fmt: skip
    assert stage_argv("utility", params) == [
        "bench", "utility", "--data", "data/dataset", "--synthetic", "runs/released-set",
        "--autoencoder", "runs/diffusion", "--fractions", "1", "--out", "runs/utility",
        "--doc", "runs/utility/UTILITY.md", "--arms", "real", "--arms", "mix",
        "--arms", "balanced", "--seeds", "0", "--seeds", "1", "--seeds", "2",
        "--epochs", "3", "--detect-epochs", "0",
    ]  # fmt: skip


def test_a_list_and_a_flag_in_a_stage_section_reach_the_command(tmp_path):
    from pipelines.cli import build_parser

    params = load_params(write_params(tmp_path, {"audit": {"forbid": ["ab", "cd"]}}))
    argv = stage_argv("audit", params)
    assert argv[-4:] == ["--forbid", "ab", "--forbid", "cd"]
    assert build_parser().parse_args(argv).forbid == ["ab", "cd"]
    params = load_params(write_params(tmp_path, {"evaluate": {"bf16": True, "retrain": False}}))
    assert stage_argv("evaluate", params)[-1] == "--bf16"


def test_the_commands_defaults_are_the_sections_defaults():
    from pipelines.cli import build_parser
    from pipelines.commands.bench import _utility_flags

    parse = build_parser().parse_args
    audit = parse(["audit", "--synthetic", "s", "--data", "d", "--out", "o"])
    assert AuditSettings.from_namespace(audit, "audit flags") == AuditSettings()
    evaluate = parse(["evaluate", "--synthetic", "s", "--data", "d", "--out", "o"])
    assert EvaluateSettings.from_namespace(evaluate, "evaluate flags") == EvaluateSettings()
    utility = parse(["bench", "utility", "--data", "d"])
    _utility_flags(utility)
    assert UtilitySettings.from_namespace(utility, "utility flags") == UtilitySettings()


def test_audit_settings_map_onto_the_audits_configuration(tmp_path):
    from privacy_audit.audit import AuditConfig

    assert AuditSettings().audit_config() == AuditConfig()
    names = tmp_path / "names.txt"
    names.write_text("x.dcm\n\n  \ny.dcm\n")
    config = AuditSettings(
        seed=3,
        encoder_steps=12,
        verifier_steps=7,
        forbid=("a",),
        forbid_file=str(names),
        holdout_split="test",
    ).audit_config(progress=False)
    assert (config.encoder.seed, config.encoder.steps, config.seed) == (3, 12, 3)
    assert (config.verifier.seed, config.verifier.steps) == (3, 7)
    assert config.forbidden == ["a", "x.dcm", "y.dcm"] and config.holdout_split == "test"
    assert not config.progress
    with pytest.raises(ValueError, match="cannot read forbidden strings"):
        AuditSettings(forbid_file=str(tmp_path / "missing")).audit_config()


def test_utility_settings_map_onto_the_benchmarks_configuration():
    from generation.evaluation.utility import UtilityConfig

    config = UtilitySettings(attribute="pathology", scarce_class="viral").utility_config()
    assert config.keep_fractions == UtilityConfig().keep_fractions == (1.0, 0.10, 0.05)
    assert config.fit.epochs == UtilityConfig().fit.epochs == 8
    assert config.arms == UtilitySettings().arms != UtilityConfig().arms  # the CLI's protocol
    with pytest.raises(ValueError, match="must be resolved"):
        UtilitySettings().utility_config()


def test_the_memorization_bench_audits_with_the_profiles_audit_settings(tmp_path, monkeypatch):
    import privacy_audit.audit
    from pipelines import memorization

    config = memorization.MemorizationConfig(
        profile="demo", params=str(REPO / "params.yaml"), seed=4, progress=False
    )
    audit = memorization._audit_settings(memorization._profile(config), config)
    assert audit == AuditSettings(
        quantile=0.995, encoder_steps=300, verifier_steps=300, mia_samples=300, seed=4
    )
    calls = []
    monkeypatch.setattr(privacy_audit.audit, "run_audit", lambda *a: calls.append(a))
    memorization._arm_audit(tmp_path, tmp_path / "data", audit, config)
    ran = calls[0][3]
    assert (ran.encoder.steps, ran.encoder.seed, ran.quantile, ran.seed) == (300, 4, 0.995, 4)
    assert (ran.verifier.steps, ran.verifier.seed) == (300, 4)
    assert not ran.progress
    bad = write_params(tmp_path, {"audit": {"quantil": 0.9}})
    with pytest.raises(ValueError, match="unknown key\\(s\\) quantil in audit"):
        memorization._profile(memorization.MemorizationConfig(profile="p", params=str(bad)))


def test_the_cli_reads_the_settings_defaults_without_loading_torch():
    code = (
        "import sys; from pipelines.cli import build_parser; build_parser(); "
        "import pipelines.profile; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_memorization_section_describes_only_the_arms_the_command_ran():
    from pipelines.cli import build_parser
    from pipelines.commands.bench import memorization_intro

    parse = lambda *a: build_parser().parse_args(["bench", "memorization", "--data", "d", *a])  # noqa: E731
    tiny = memorization_intro(parse("--arms", "tiny", "--train-images", "32", "--steps", "6000"))
    assert "32 training images" in tiny and "up to 6000 steps" in tiny
    assert "full arm was not run" in tiny and "(full arm" not in tiny
    full = memorization_intro(parse("--arms", "full", "--full-model", "runs/x"))
    assert "training images (one per patient)" not in full and "tiny arm was not run" in full
    assert "(full arm, an existing run)" in full
    both = memorization_intro(parse("--autoencoder", "runs/ae"))
    assert "tiny arm: it memorises" in both and "(full arm)" in both and "not run" not in both
    assert "given autoencoder" in both
