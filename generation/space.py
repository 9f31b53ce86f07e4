"""Where the diffusion UNet works: on an autoencoder's latents, or on the pixels themselves.

As in diffusers, the network, its noise schedule and the space it denoises in are separate
objects, and the run's config.json names the space. A space has the autoencoder's interface,
so training, sampling and the audit's scores do not branch on it:

- `encode(x)`: images (N, C, *size) in [-1, 1] -> what the UNet denoises (float32);
- `decode(z)`: that back to images (N, C, *size), about [-1, 1] (callers clamp);
- `to(device)`, and `autoencoder` (None in pixel space).

`latent` (the default, and what a config.json without `space` means: every run made before the
option): the KL autoencoder's posterior means, standardised per channel (train_diffusion.py
measures the statistics on the training latents). `pixel`: the images themselves, scaled to
[-1, 1] as every network here sees them (x * 2 - 1; decoding is clamp((z + 1) / 2)), so no
decoder can leave its signature on the samples. A UNet step then costs far more: it works on
64x64 pixels instead of 16x16 latents (docs/generation.md#pixel-space).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .config import SPACES


def space_name(section: dict[str, Any]) -> str:
    """The space a run config (config.json) or a diffusion settings section names; `latent`
    where it names none (runs and profiles from before the option)."""
    name = section.get("space", "latent")
    if name not in SPACES:
        raise ValueError(f"diffusion space must be one of {', '.join(SPACES)}, got {name!r}")
    return name


class PixelSpace:
    """The identity: the UNet denoises the images in [-1, 1]; there is no autoencoder."""

    name = "pixel"
    autoencoder = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def to(self, device: str | torch.device) -> PixelSpace:
        return self


class LatentSpace:
    """A frozen KL autoencoder's latent means, standardised by per-channel (mean, std)."""

    name = "latent"

    def __init__(
        self,
        autoencoder: torch.nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        spatial_dims: int,
    ):
        self.autoencoder = autoencoder.eval()
        shape = (1, -1, *([1] * spatial_dims))
        self.mean = torch.tensor(list(mean)).view(shape)
        self.std = torch.tensor(list(std)).view(shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z_mu, _ = self.autoencoder.encode(x)
        return (z_mu.float() - self.mean) / self.std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z * self.std + self.mean)

    def to(self, device: str | torch.device) -> LatentSpace:
        self.autoencoder = self.autoencoder.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self


def no_autoencoder(what: str, instead: str = "") -> ValueError:
    """The refusal of anything that needs a decoder, for a pixel-space model."""
    return ValueError(
        f"{what}: a pixel-space model (diffusion space: pixel) has no autoencoder; "
        + (instead or "this needs a latent-space model's run or an autoencoder run")
    )
