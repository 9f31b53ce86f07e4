"""The DVC pipeline's stages (dvc.yaml runs `radsynth stage NAME`).

Each stage reads params.yaml, checks the whole active profile (pipelines/profile.py: a wrong
key or type in any section fails before any stage runs), and calls the same sub-command a user
would with the values the profile names in its section as flags and the pipeline's fixed paths.
So the pipeline and the CLI can never drift apart, and every path lives here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.profile import PipelineProfile

PATHS = {
    "dataset": "data/dataset",
    "autoencoder": "runs/autoencoder",
    "diffusion": "runs/diffusion",
    "synthetic": "runs/synthetic",
    "audit": "runs/audit",  # the screening audit of everything generated (auditors only)
    "released_set": "runs/released-set",  # the generated set less its flagged images
    "released_audit": "runs/audit-released",  # the audit of that set: what the release carries
    "evaluation": "runs/evaluation",
    "utility": "runs/utility",  # the released set's downstream gain per recipe (the datasheet's)
    "releases": "releases",
}
STAGES = (
    "ingest",
    "train_autoencoder",
    "train_diffusion",
    "generate",
    "audit",
    "evaluate",
    "utility",
    "release",
)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as written, once its active profile has been checked, every section."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the project root)")
    params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    profile = params.get("profile")
    if profile not in (params.get("profiles") or {}):
        known = ", ".join(params.get("profiles") or {}) or "none"
        raise ValueError(f"{path}: profile {profile!r} is not defined under 'profiles' ({known})")
    active_profile(params, str(path))
    return params


def active_profile(params: dict[str, Any], params_file: str = "params.yaml") -> PipelineProfile:
    """The active profile of `params`, every section typed and checked."""
    name = params["profile"]
    return PipelineProfile.from_json(params["profiles"][name], f"{params_file} profiles.{name}")


def as_flags(section: dict[str, Any] | None) -> list[str]:
    """{'holdout_split': 'val', 'fast': True} -> ['--holdout-split', 'val', '--fast']."""
    flags: list[str] = []
    for key, value in (section or {}).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                flags += [flag, str(item)]
        else:
            flags += [flag, str(value)]
    return flags


def generate_flags(settings: PipelineProfile) -> dict[str, Any]:
    """The generate stage's flags: the profile's `generate` section, with the image count and
    seed the command requires taken from the defaults where the profile is silent; what else it
    leaves out, the model's saved defaults decide."""
    generate = settings.training.generate
    return {"n": generate.n, "seed": generate.seed, **settings.given("generate")}


def stage_argv(name: str, params: dict[str, Any], params_file: str = "params.yaml") -> list[str]:
    """The `radsynth` arguments a stage runs."""
    profile = params["profile"]
    settings = active_profile(params, params_file)
    p = PATHS
    if settings.training.diffusion.space == "pixel" and name in (
        "train_autoencoder", "train_diffusion", "utility",
    ):  # fmt: skip
        return _pixel_stage_argv(name, profile, settings, params_file)
    if name == "ingest":
        ingest = dict(params.get("ingest") or {})
        source = ingest.pop("source")
        return ["ingest", str(source), "--out", p["dataset"], "--overwrite", *as_flags(ingest)]
    if name == "train_autoencoder":
        return ["train", "autoencoder", "--data", p["dataset"], "--out", p["autoencoder"],
                "--profile", profile, "--params", params_file]  # fmt: skip
    if name == "train_diffusion":
        return ["train", "diffusion", "--data", p["dataset"], "--autoencoder", p["autoencoder"],
                "--out", p["diffusion"], "--profile", profile, "--params", params_file]  # fmt: skip
    if name == "generate":
        return ["generate", "--model", p["diffusion"], "--out", p["synthetic"],
                *as_flags(generate_flags(settings))]  # fmt: skip
    if name == "audit":
        return ["audit", "--synthetic", p["synthetic"], "--data", p["dataset"], "--model", p["diffusion"],
                "--out", p["audit"], "--filtered-out", p["released_set"],
                "--filtered-report", p["released_audit"], *as_flags(settings.given("audit"))]  # fmt: skip
    if name == "evaluate":
        return ["evaluate", "--synthetic", p["released_set"], "--data", p["dataset"], "--out", p["evaluation"],
                *as_flags(settings.given("evaluate"))]  # fmt: skip
    if name == "utility":
        return ["bench", "utility", "--data", p["dataset"], "--synthetic", p["released_set"],
                "--autoencoder", p["diffusion"], "--fractions", "1", "--out", p["utility"],
                "--doc", f"{p['utility']}/UTILITY.md", *as_flags(settings.given("utility"))]  # fmt: skip
    if name == "release":
        release = params.get("release") or {}
        return ["release", "--set", p["released_set"], "--report", p["released_audit"],
                "--screening-report", p["audit"], "--name", str(release["name"]),
                "--out", p["releases"], "--model", p["diffusion"], "--data", p["dataset"],
                "--evaluation", p["evaluation"], "--utility", f"{p['utility']}/utility.json",
                "--params", params_file, "--overwrite", "--version-control", "none",
                *as_flags({"export": release.get("exports")})]  # fmt: skip
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def _pixel_stage_argv(name: str, profile: str, settings: PipelineProfile, params_file: str):
    """A pixel-space profile's training and utility stages: the diffusion model learns the
    images with no autoencoder, so no stage may pass one. The chain's autoencoder stage has
    nothing to train: it is refused (dvc.yaml's graph would need an autoencoder run)."""
    p = PATHS
    if name == "train_autoencoder":
        raise ValueError(
            f"profile {profile!r} trains its diffusion model in pixel space (diffusion: space: "
            "pixel): there is no autoencoder to train, and the DVC chain (dvc.yaml) is built "
            "around one. Run the commands instead: `radsynth train diffusion --data DATA --out "
            f"RUN --profile {profile}`, then generate, audit, evaluate and release from RUN "
            "(docs/generation.md#pixel-space)"
        )
    if name == "train_diffusion":
        return ["train", "diffusion", "--data", p["dataset"], "--out", p["diffusion"],
                "--profile", profile, "--params", params_file]  # fmt: skip
    # utility: the `signature` recipe needs the generator's decoder, which this model lacks
    return ["bench", "utility", "--data", p["dataset"], "--synthetic", p["released_set"],
            "--fractions", "1", "--out", p["utility"], "--doc", f"{p['utility']}/UTILITY.md",
            *as_flags(settings.given("utility"))]  # fmt: skip
