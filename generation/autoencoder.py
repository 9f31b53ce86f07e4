"""The KL autoencoder (MONAI AutoencoderKL) that maps images (and masks) to a small latent grid.

A dataset with masks is encoded as 2 channels (image, mask), so one latent holds both and the
diffusion model generates image+mask pairs; decoding splits them again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import AutoencoderConfig


def autoencoder_spec(cfg: AutoencoderConfig, spatial_dims: int, in_channels: int) -> dict[str, Any]:
    """The constructor arguments saved beside the weights (config.json 'network')."""
    channels = list(cfg.channels)
    return {
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "channels": channels,
        "latent_channels": int(cfg.latent_channels),
        "num_res_blocks": int(cfg.num_res_blocks),
        "norm_num_groups": int(cfg.norm_num_groups),
        "attention_levels": [False] * (len(channels) - 1) + [bool(cfg.attention)],
        "with_encoder_nonlocal_attn": bool(cfg.attention),
        "with_decoder_nonlocal_attn": bool(cfg.attention),
    }


def build_autoencoder(spec: dict[str, Any]) -> nn.Module:
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(**spec)


def downsampling(spec: dict[str, Any]) -> int:
    return 2 ** (len(spec["channels"]) - 1)


def latent_shape(spec: dict[str, Any], image_size: list[int]) -> list[int]:
    factor = downsampling(spec)
    for size in image_size:
        if size % factor:
            raise ValueError(
                f"image size {image_size} is not divisible by the {factor}x downsampling"
            )
    return [spec["latent_channels"], *(s // factor for s in image_size)]


def kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    dims = list(range(1, z_mu.ndim))
    kl = 0.5 * torch.sum(
        z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2).clamp_min(1e-12)) - 1, dim=dims
    )
    return kl.mean()


class Reconstruction(nn.Module):
    """Encode, sample the latent with given noise, decode: one forward, so that DDP (which hooks
    `forward` only) all-reduces the gradients of a training step. MONAI's own forward draws its
    noise from the global RNG; here every process takes its slice of the step's noise."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        z_mu, z_sigma = self.autoencoder.encode(x)
        z = z_mu + eps.to(z_mu.device, z_mu.dtype) * z_sigma
        return self.autoencoder.decode(z), z_mu, z_sigma


@torch.no_grad()
def reconstruct(autoencoder: nn.Module, images, batch: int = 64):
    """Images (N, H, W) in [0, 1] passed through the autoencoder (posterior mean, deterministic):
    what real images look like with the generator's decoder signature."""
    import numpy as np

    autoencoder.eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch], np.float32))
        z_mu, _ = autoencoder.encode(x[:, None] * 2 - 1)
        out.append(((autoencoder.decode(z_mu).float()[:, 0].clamp(-1, 1) + 1) / 2).numpy())
    return np.concatenate(out).astype(np.float32)
