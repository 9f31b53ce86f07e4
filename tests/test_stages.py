"""The DVC stages call the same sub-commands a user would, configured from params.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.commands.run import set_params
from pipelines.stages import STAGES, as_flags, load_params, stage_argv
from tests.conftest import REPO


def test_as_flags() -> None:
    assert as_flags({"holdout_split": "val", "fast": True, "skip": False, "export": ["a", "b"]}) == [
        "--holdout-split", "val", "--fast", "--export", "a", "--export", "b",
    ]  # fmt: skip


def test_every_stage_of_dvc_yaml_builds_its_command() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert tuple(dvc["stages"]) == STAGES
    params = load_params(REPO / "params.yaml")
    for name in STAGES:
        argv = stage_argv(name, params)
        assert argv and not any(a.startswith("--") and a.endswith("-") for a in argv)
        assert dvc["stages"][name]["cmd"] == f"radsynth stage {name}"
    assert stage_argv("generate", params)[:2] == ["generate", "--model"]
    with pytest.raises(ValueError, match="unknown stage"):
        stage_argv("deploy", params)


def test_set_params_keeps_comments_and_rejects_unknown_profile(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    source = tmp_path / "src"
    source.mkdir()
    assert set_params(path, str(source), "smoke")
    text = path.read_text()
    assert "# All parameters of the pipeline" in text
    data = yaml.safe_load(text)
    assert data["profile"] == "smoke" and data["ingest"]["source"] == "src"
    assert not set_params(path, str(source), "smoke")  # nothing to change the second time
    with pytest.raises(ValueError, match="unknown profile"):
        set_params(path, None, "huge")
    with pytest.raises(FileNotFoundError):
        set_params(path, str(tmp_path / "missing"), None)


def test_train_and_generate_stages_run_under_accelerate_when_asked(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pipelines.commands.stage import launch_command

    argv = ["validate", "x"]
    assert launch_command("generate", argv, {}) is None
    assert launch_command("audit", argv, {"RADSYNTH_ACCELERATE_ARGS": "--num_processes 2"}) is None
    cmd = launch_command(
        "train_diffusion", argv, {"RADSYNTH_ACCELERATE_ARGS": "--multi_gpu --num_processes 4"}
    )
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "4",
                       "-m", "pipelines.cli", "validate", "x"]  # fmt: skip
    # the launcher really runs our CLI (one CPU process here)
    from tests.conftest import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "d")
    cmd = launch_command(
        "generate", ["validate", str(data)], {"RADSYNTH_ACCELERATE_ARGS": "--cpu --num_processes 1"}
    )
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "valid 2D dataset 'tiny'" in result.stdout
    assert sys.executable == cmd[0]


def test_list_params_reach_the_command_whole() -> None:
    """A params list becomes repeated flags (`--arms real --arms mix`): every item must arrive,
    not only the last one."""
    from pipelines.cli import build_parser

    params = load_params(REPO / "params.yaml")
    for profile in params["profiles"]:
        params["profile"] = profile
        section = params["profiles"][profile]["utility"]
        args = build_parser().parse_args(stage_argv("utility", params))
        assert args.arms == section["arms"] and args.seeds == section["seeds"]
        assert args.fractions == [1.0]
