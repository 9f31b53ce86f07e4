"""The small CNN behind the domain models and the utility benchmark: MONAI residual units,
global pooling, then one linear head per condition attribute.

Small on purpose: it trains on two CPU cores in minutes at 64x64, and its pooled features
(the penultimate layer) are the embedding the distribution metrics work in.
"""

from __future__ import annotations

import torch
from torch import nn


class ConditionNet(nn.Module):
    """Shared convolutional trunk with a classification head per categorical attribute and a
    regression head (sigmoid output, target scaled to [0, 1]) per continuous attribute."""

    def __init__(
        self,
        categorical: dict[str, int],
        continuous: list[str] | tuple[str, ...] = (),
        channels: tuple[int, ...] = (16, 32, 64, 128),
        dropout: float = 0.2,
    ):
        super().__init__()
        from monai.networks.blocks import ResidualUnit

        if not categorical and not continuous:
            raise ValueError("ConditionNet needs at least one categorical or continuous head")
        blocks: list[nn.Module] = []
        previous = 1
        for width in channels:
            blocks.append(
                ResidualUnit(2, previous, width, strides=2, subunits=2, norm="BATCH", act="RELU")
            )
            previous = width
        self.trunk = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = previous
        self.dropout = nn.Dropout(dropout)
        self.categorical = dict(categorical)
        self.continuous = list(continuous)
        self.class_heads = nn.ModuleDict(
            {n: nn.Linear(previous, k) for n, k in categorical.items()}
        )
        self.value_heads = nn.ModuleDict({n: nn.Linear(previous, 1) for n in self.continuous})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled trunk activations, (N, feature_dim), for images (N, 1, H, W) in [0, 1]."""
        return self.trunk((images - 0.5) / 0.25)

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits (N, classes) per categorical attribute and values (N,) in [0, 1] (sigmoid, the
        attribute's range scaled) per continuous attribute."""
        out = {n: head(features) for n, head in self.class_heads.items()}
        out.update(
            {n: torch.sigmoid(head(features)).squeeze(1) for n, head in self.value_heads.items()}
        )
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.dropout(self.features(images)))
