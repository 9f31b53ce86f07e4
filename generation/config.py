"""Training and generation settings: the `profiles:` section of params.yaml, merged over defaults,
so a profile only names what it changes and a typo is an error rather than silently ignored."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "autoencoder": {
        "channels": [32, 64, 64],  # len-1 halvings: 3 levels = 4x, 4 levels = 8x downsampling
        "latent_channels": 4,
        "num_res_blocks": 1,
        "norm_num_groups": 16,
        "attention": False,
        "batch_size": 16,  # per process; global batch = batch_size x processes x grad_accum
        "grad_accum": 1,  # micro-steps per optimizer step (accelerate's accumulation)
        "lr": 1.0e-3,
        "steps": 1000,
        "max_minutes": 0,  # wall-clock cap (0 = none)
        "kl_weight": 1.0e-6,
        "ssim_weight": 0.5,
        "ssim_kernel": 7,
        "adversarial_weight": 0.0,  # 0 disables the patch discriminator
        "adversarial_start": 0,
        "discriminator_channels": 32,
        "checkpoint_every": 200,
        "mixed_precision": "bf16",
        "seed": 0,
    },
    "diffusion": {
        # what the UNet denoises: `latent` (the autoencoder's latents) or `pixel` (the images in
        # [-1, 1] themselves: no autoencoder, no decoder signature; generation/space.py)
        "space": "latent",
        "channels": [64, 128, 128],
        "attention_levels": [False, False, True],
        "num_res_blocks": 1,
        "norm_num_groups": 16,
        "num_head_channels": 32,
        "prediction_type": "v_prediction",  # or epsilon (amplifies early errors at high noise)
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.0015,
        "beta_end": 0.0195,
        "min_snr_gamma": 5.0,  # 0 disables min-SNR weighting
        "condition_dropout": 0.15,  # per attribute
        # class-balanced batches: a categorical condition and how far towards equal shares
        # (0 = plain shuffling, 0.5 = square-root sampling, 1 = equal; generation/data.py)
        "balance_by": "",
        "balance_power": 0.0,
        "mask_dropout": 0.5,  # how often the mask condition is hidden (masked datasets)
        "ema_decay": 0.999,
        "lr": 2.0e-4,
        "batch_size": 32,  # per process, as above
        "grad_accum": 1,
        "steps": 2000,
        "max_minutes": 0,
        "checkpoint_every": 500,
        "grid_columns": 8,
        "mixed_precision": "bf16",
        "seed": 0,
    },
    "generate": {
        "n": 100,  # the pipeline's generate stage (pipelines/stages.py) passes these as flags
        "seed": 0,
        "balanced": "grid",
        "sampler": "dpm++",
        "steps": 20,
        "guidance": 2.0,
        "batch_size": 32,
        "bf16": True,
    },
    "adapt": {
        # Defaults measured on Kermany (docs/generation.md#measured): full fine-tuning that
        # continues the parent's optimisation (its lr and batch) and averages over about a
        # thousand steps beats LoRA at 1e-4 with a short average, which made every base worse.
        "lora_rank": 0,  # 0: fine-tune every weight; --lora RANK for LoRA on the linear layers
        "lr": None,  # None: the parent's training lr
        "steps": 500,
        "batch_size": None,  # None: the parent's training batch size (per process)
        "grad_accum": 1,
        "replay": 0.5,  # share of each batch replayed from the train images outside --where
        "warmup_steps": 50,  # linear learning-rate warmup: a fresh Adam jolts a trained model
        "ema_decay": 0.999,  # no warmup here: the average starts from the parent's weights
        "max_minutes": 0,
        "checkpoint_every": 100,
        "mixed_precision": "bf16",
        "seed": 0,
    },
}


# Profile sections of other stages: their own commands check them (pipelines/stages.py).
OTHER_SECTIONS = ("audit", "evaluate", "utility")


def merge_profile(profile: dict[str, Any] | None, source: str = "params.yaml") -> dict[str, Any]:
    """Defaults overlaid with one profile; unknown sections or keys raise a ValueError."""
    merged = copy.deepcopy(DEFAULTS)
    for section, values in (profile or {}).items():
        if section in OTHER_SECTIONS:
            continue
        if section not in merged:
            raise ValueError(
                f"{source}: unknown section {section!r}; sections are {', '.join(DEFAULTS)}"
            )
        unknown = sorted(set(values or {}) - set(merged[section]))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)} in {section}; "
                f"known: {', '.join(merged[section])}"
            )
        merged[section].update(values or {})
    return merged


def load_profile(params: str | Path = "params.yaml", profile: str | None = None) -> dict[str, Any]:
    """Read params.yaml and return the merged settings of `profile` (default: its `profile:`)."""
    import yaml

    path = Path(params)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    profiles = data.get("profiles") or {}
    name = profile or data.get("profile") or "demo"
    if name not in profiles:
        raise ValueError(
            f"{path}: profile {name!r} not found; profiles are {', '.join(profiles) or 'none'}"
        )
    settings = merge_profile(profiles[name], f"{path} profiles.{name}")
    settings["profile"] = name
    return settings
