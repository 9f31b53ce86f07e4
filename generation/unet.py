"""The conditioned diffusion UNet on latents (MONAI DiffusionModelUNet).

Conditioning: the UNet's class embedding is replaced by our ConditionEncoder, so the sum of the
per-attribute embeddings is added to the time embedding and reaches every residual block. Masks:
on a masked dataset two channels are concatenated to the noisy latent: the mask downsampled to
the latent size (in [-1, 1]) and a presence flag; with the flag at 0 the model invents the mask
itself (both are hidden at random in training).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from conditioning.dataset import ConditionSchema
from conditioning.encoders import ConditionEncoder

from .config import DiffusionConfig

MASK_CHANNELS = 2  # downsampled mask + presence flag


def unet_spec(
    cfg: DiffusionConfig, spatial_dims: int, latent_channels: int, has_masks: bool
) -> dict[str, Any]:
    return {
        "spatial_dims": spatial_dims,
        "in_channels": latent_channels + (MASK_CHANNELS if has_masks else 0),
        "out_channels": latent_channels,
        "channels": list(cfg.channels),
        "attention_levels": [bool(a) for a in cfg.attention_levels],
        "num_res_blocks": int(cfg.num_res_blocks),
        "norm_num_groups": int(cfg.norm_num_groups),
        "num_head_channels": int(cfg.num_head_channels),
    }


class ConditionedUNet(nn.Module):
    """MONAI UNet whose class embedding is the condition encoder: forward(x, t, conditions)."""

    def __init__(self, spec: dict[str, Any], schema: ConditionSchema, mask_input: bool):
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.mask_input = mask_input
        self.unet = DiffusionModelUNet(**spec, num_class_embeds=1)
        self.unet.class_embedding = ConditionEncoder(schema, spec["channels"][0] * 4)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        conditions: torch.Tensor,
        mask_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.mask_input:
            if mask_input is None:
                mask_input = empty_mask_input(x)
            x = torch.cat([x, mask_input.to(x.dtype)], dim=1)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        return self.unet(x, timesteps, class_labels=conditions)


def empty_mask_input(latents: torch.Tensor) -> torch.Tensor:
    """No mask given: zeros and presence flag 0."""
    shape = (latents.shape[0], MASK_CHANNELS, *latents.shape[2:])
    return torch.zeros(shape, device=latents.device, dtype=latents.dtype)


def mask_to_input(masks01: torch.Tensor, latent_size: list[int]) -> torch.Tensor:
    """(N, 1, *image) binary masks -> (N, 2, *latent) UNet mask channels (area-downsampled)."""
    down = F.interpolate(masks01.float(), size=tuple(latent_size), mode="area")
    return torch.cat([down * 2 - 1, torch.ones_like(down)], dim=1)


def hide_masks(mask_input: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Mask-condition dropout: whole masks hidden with probability p (so unconditioned pairs work)."""
    keep = (torch.rand(mask_input.shape[0], generator=generator) >= p).float()
    keep = keep.view(-1, *([1] * (mask_input.ndim - 1))).to(mask_input.device)
    return mask_input * keep
