"""The audit's positive control behind `radsynth bench memorization`: a planted set only shows
that the detector finds the copies someone thought of; a model that really memorises shows what
it finds in practice. The demo model is trained on a tiny subset (a few dozen images, many
steps) until it reproduces them, and the audit of its samples (with the profile's `audit`
settings, as the pipeline's audit stage runs it) reports the share flagged; the same on a model
trained on the full split gives the share a normal model has.

Every arm keeps its work in OUT/ARM (subset dataset, autoencoder, model, samples, audit) and a
re-run reuses whatever finished, so only the audit is redone after a detector change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generation.config import Profile
    from pipelines.profile import PipelineProfile
    from privacy_audit.config import AuditSettings
    from privacy_audit.report import AuditReport


log = logging.getLogger("radsynth.bench")
ARMS = ("tiny", "full")


@dataclass
class MemorizationConfig:
    train_images: int = 48  # images (one per patient) of the memorising model's training split
    steps: int = 2500  # its diffusion steps: many passes over each image
    max_minutes: float = 18.0  # wall-clock cap of that training
    batch_size: int | None = None  # its diffusion batch (default: the profile's)
    samples: int = 200  # images generated and audited per arm
    profile: str = "demo"
    params: str | None = None
    seed: int = 0
    progress: bool = True
    autoencoder: str | None = None  # an autoencoder run trained on the full split, shared by the
    # arms (the memorising part is the diffusion model; its latents come from this autoencoder)


def _profile(config: MemorizationConfig) -> PipelineProfile:
    """The profile the arms use, every section checked (./params.yaml, else the repo's)."""
    from pipelines.commands.train import REPO_PARAMS
    from pipelines.profile import load_pipeline_profile

    params = Path(config.params) if config.params else Path("params.yaml")
    return load_pipeline_profile(params if params.is_file() else REPO_PARAMS, config.profile)


def _settings(
    config: MemorizationConfig, arm: str, profile: PipelineProfile | None = None
) -> Profile:
    """The arm's training and generation settings: the profile's, the tiny arm's diffusion
    training changed as the bench's flags say."""
    settings = (profile or _profile(config)).training
    if arm == "tiny":
        diffusion = settings.diffusion
        changes = {
            "steps": config.steps,
            "max_minutes": config.max_minutes,
            "batch_size": config.batch_size or diffusion.batch_size,
            "checkpoint_every": min(diffusion.checkpoint_every, config.steps),
        }
        settings = settings.updated(diffusion=changes)
    return settings


def _finished(run: Path) -> bool:
    return (run / "model_card.json").is_file()


def _train(kind: str, run: Path, settings: Profile, show: bool, **paths) -> None:
    """Train the run unless it finished; continue it when a checkpoint was left behind."""
    from generation.runs import CHECKPOINTS, LATEST

    if _finished(run):
        log.info("%s: finished earlier, reused", run)
        return
    resume = (run / CHECKPOINTS / LATEST).is_file()
    if kind == "autoencoder":
        from generation.train_autoencoder import train_autoencoder

        train_autoencoder(paths["data"], run, settings, resume=resume, show_progress=show)
    else:
        from generation.train_diffusion import train_diffusion

        train_diffusion(
            paths["data"], paths["autoencoder"], run, settings, resume=resume, show_progress=show
        )


def run_arm(
    arm: str, data: str | Path, out: str | Path, config: MemorizationConfig, model: str | None
) -> dict:
    """Train (or reuse) the arm's model, generate its samples and audit them."""
    import json

    out = Path(out) / arm
    out.mkdir(parents=True, exist_ok=True)
    profile = _profile(config)
    settings = _settings(config, arm, profile)
    dataset_dir = _arm_data(arm, data, out, config)
    if model is None:
        model = _arm_model(out, settings, config, dataset_dir)
    card = json.loads((Path(model) / "model_card.json").read_text(encoding="utf-8"))
    _arm_samples(model, out, settings, config)
    report = _arm_audit(out, dataset_dir, _audit_settings(profile, config), config)
    return _arm_row(arm, model, card, report, out)


def _arm_data(arm: str, data: str | Path, out: Path, config: MemorizationConfig) -> Path:
    """The arm's training data: the full dataset, or (tiny arm) a sample of it kept in OUT/data."""
    from conditioning.dataset import load_dataset, write_split_sample

    if arm != "tiny":
        return Path(data)
    dataset_dir = out / "data"
    if not (dataset_dir / "dataset.json").is_file():
        write_split_sample(
            load_dataset(data),
            dataset_dir,
            count=config.train_images,
            seed=config.seed,
            overwrite=True,
        )
    return dataset_dir


def _arm_model(out: Path, settings: Profile, config: MemorizationConfig, dataset_dir: Path) -> str:
    """Train (or continue) the arm's autoencoder, unless a shared one is given or the profile
    is in pixel space (none: train_diffusion refuses a given one), and diffusion."""
    autoencoder = Path(config.autoencoder) if config.autoencoder else out / "autoencoder"
    if settings.diffusion.space == "pixel":
        autoencoder = config.autoencoder
    elif not config.autoencoder:
        _train("autoencoder", autoencoder, settings, config.progress, data=dataset_dir)
    _train(
        "diffusion",
        out / "model",
        settings,
        config.progress,
        data=dataset_dir,
        autoencoder=autoencoder,
    )
    return str(out / "model")


def _arm_samples(model: str, out: Path, settings: Profile, config: MemorizationConfig) -> None:
    """The samples the audit checks, in OUT/set, drawn as the profile's `generate` says."""
    from generation import load_model
    from generation.generate_set import SetRequest, generate_set
    from generation.sampling import Sampling

    generate = settings.generate
    generate_set(
        load_model(model),
        out / "set",
        SetRequest(config.samples, {}, config.seed, generate.balanced),
        Sampling(steps=generate.steps, sampler=generate.sampler, guidance=generate.guidance),
        show_progress=config.progress,
    )


def _audit_settings(profile: PipelineProfile, config: MemorizationConfig) -> AuditSettings:
    """The profile's `audit` section (its quantile, copy-encoder steps, limits), as the
    pipeline's audit stage runs it, seeded by the bench's --seed."""
    return profile.audit.updated("radsynth bench memorization --seed", seed=config.seed)


def _arm_audit(
    out: Path, dataset_dir: Path, audit: AuditSettings, config: MemorizationConfig
) -> AuditReport:
    """`radsynth audit` of OUT/set against the arm's training data, into OUT/audit, with the
    profile's audit settings (no model attack: the control measures copy detection)."""
    from privacy_audit.audit import run_audit

    return run_audit(
        out / "set", dataset_dir, out / "audit", audit.audit_config(progress=config.progress)
    )


def _arm_row(arm: str, model: str, card: dict, report: AuditReport, out: Path) -> dict:
    """The arm's row of the table: its training, and the share of its samples flagged."""
    from privacy_audit.stats import wilson_interval

    copy = report.summary.copy_detection
    return {
        "arm": arm,
        "model": Path(model).name,
        "train_images": report.dataset.train_images_deduplicated,
        "train_patients": report.dataset.train_patients,
        "diffusion_steps": card.get("steps"),
        "stopped_by": card.get("stopped_by"),
        "samples": copy.synthetic_images,
        "flagged": copy.flagged,
        "flagged_rate": copy.flagged / copy.synthetic_images,
        "flagged_ci95": wilson_interval(copy.flagged, copy.synthetic_images),
        "distinct_training_patients_matched": copy.distinct_training_patients_matched,
        "threshold": report.thresholds.copy.threshold,
        "holdout_flag_rate_split_half": copy.holdout_flag_rate_split_half,
        "audit_seconds": report.timings.total_seconds,
        "report": str(out / "audit"),
    }


def memorization_markdown(result: dict) -> str:
    """The table of the benchmark section: one row per arm."""
    lines = [
        "| arm | training images (patients) | diffusion steps | samples | flagged | 95% CI | "
        "training patients matched |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["arms"]:
        lo, hi = r["flagged_ci95"]
        lines.append(
            f"| {r['arm']} | {r['train_images']} ({r['train_patients']}) | "
            f"{r['diffusion_steps']} ({r['stopped_by']}) | {r['samples']} | "
            f"{r['flagged']} ({100 * r['flagged_rate']:.1f}%) | {100 * lo:.1f}-{100 * hi:.1f}% | "
            f"{r['distinct_training_patients_matched']} |"
        )
    return "\n".join(lines) + "\n"
