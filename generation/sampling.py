"""The sampling loop: a few lines of our own instead of MONAI's LatentDiffusionInferer, which
does not pass our condition tensor to the UNet.

Every image has its own torch.Generator seeded from (run seed, image index), used for its
initial noise and for any noise a stochastic sampler adds, so an image does not depend on the
batch it was drawn in, nor on how many processes shared the work.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from conditioning.precision import effective_bf16

from .config import GenerateConfig
from .schedulers import SAMPLERS, make_sampler


def image_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for image `index` of a run with seed `seed`."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint64)[0] >> 1)


def image_generators(seed: int, indices) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(image_seed(seed, i)) for i in indices]


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Sampling:
    """How images are sampled: the sampler's name, its steps, the guidance scale, images per
    batch and whether the UNet runs in bf16. A field left None takes the model's default
    (`resolve`), so callers name only what they change and the project's defaults stay in
    generation/config.py's GenerateConfig alone."""

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int | None = None
    bf16: bool | None = None

    def resolve(self, defaults: GenerateConfig, device: torch.device) -> Sampling:
        """Every field set: unset ones (and zero steps or batch size) from `defaults`; bf16 by
        default only where `device` runs it natively."""
        bf16 = self.bf16
        if bf16 is None:
            bf16 = effective_bf16(bool(defaults.bf16), device)
        sampler = self.sampler or defaults.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; samplers are {', '.join(SAMPLERS)}")
        return Sampling(
            sampler=sampler,
            steps=int(self.steps or defaults.steps),
            guidance=float(defaults.guidance if self.guidance is None else self.guidance),
            batch_size=int(self.batch_size or defaults.batch_size),
            bf16=bf16,
        )


@torch.no_grad()
def sample_latents(
    unet: torch.nn.Module,
    schedule: dict,
    latent_shape: list[int],
    conditions: torch.Tensor,
    generators: list[torch.Generator],
    how: Sampling,
    mask_input: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Denoise from per-image noise to latents with classifier-free guidance.

    Guidance contrasts the requested conditions with all-unknown ones, so it steers exactly the
    attributes that were asked for (any subset)."""
    device = device or torch.device("cpu")
    guidance, bf16 = how.guidance, how.bf16
    scheduler = make_sampler(how.sampler, schedule, how.steps)
    noise = torch.stack([torch.randn(latent_shape, generator=g) for g in generators])
    latents = (noise * scheduler.init_noise_sigma).to(device)
    conditions = conditions.to(device)
    unconditional = torch.full_like(conditions, float("nan"))
    guided = guidance != 1.0 and bool((~torch.isnan(conditions)).any())
    if guided:
        conditions = torch.cat([conditions, unconditional])
        if mask_input is not None:
            mask_input = torch.cat([mask_input, mask_input])
    if mask_input is not None:
        mask_input = mask_input.to(device)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(latents, t)
        if guided:
            model_in = torch.cat([model_in, model_in])
        timesteps = torch.full((model_in.shape[0],), float(t), device=device)
        with autocast(device, bf16):
            out = unet(model_in, timesteps, conditions, mask_input).float()
        if guided:
            cond, uncond = out.chunk(2)
            out = uncond + guidance * (cond - uncond)
        latents = scheduler.step(out, t, latents, generator=generators).prev_sample
    return latents
