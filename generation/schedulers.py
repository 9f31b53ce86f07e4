"""Noise schedules and samplers from diffusers, all built from the one beta schedule a model was
trained with (saved in its config), and swappable by name."""

from __future__ import annotations

from typing import Any

import torch

from .config import SAMPLERS, DiffusionConfig


def schedule_spec(cfg: DiffusionConfig) -> dict[str, Any]:
    return {
        "num_train_timesteps": int(cfg.num_train_timesteps),
        "beta_schedule": str(cfg.beta_schedule),
        "beta_start": float(cfg.beta_start),
        "beta_end": float(cfg.beta_end),
        "prediction_type": str(cfg.prediction_type),
    }


def training_scheduler(spec: dict[str, Any]):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**spec, clip_sample=False)


def make_sampler(name: str, spec: dict[str, Any], steps: int):
    """A fresh scheduler (they hold per-run state) with `steps` inference steps set."""
    import diffusers

    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; samplers are {', '.join(SAMPLERS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if name == "dpm++":
        scheduler = diffusers.DPMSolverMultistepScheduler(
            **spec, algorithm_type="dpmsolver++", solver_order=2
        )
    elif name == "ddim":
        scheduler = diffusers.DDIMScheduler(**spec, clip_sample=False, set_alpha_to_one=False)
    elif name == "euler":
        scheduler = diffusers.EulerDiscreteScheduler(**spec)
    else:
        scheduler = diffusers.DDPMScheduler(**spec, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


def alphas_cumprod(spec: dict[str, Any]) -> torch.Tensor:
    return training_scheduler(spec).alphas_cumprod


def snr_weights(
    timesteps: torch.Tensor, spec: dict[str, Any], gamma: float, table: torch.Tensor
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for epsilon or v prediction."""
    if gamma <= 0:
        return torch.ones_like(timesteps, dtype=torch.float32)
    alpha_bar = table[timesteps.cpu()].float()
    snr = alpha_bar / (1 - alpha_bar)
    clipped = torch.clamp(snr, max=gamma)
    if spec["prediction_type"] == "v_prediction":
        return (clipped / (snr + 1)).to(timesteps.device)
    return (clipped / snr).to(timesteps.device)
