"""Condition encoders: requested conditions -> one embedding vector per image.

Conditions travel as a float tensor (batch, attributes): a categorical value is its index in the
vocabulary, a continuous value is normalised to [0, 1] by its declared range, and NaN means
"unknown / not requested". Each attribute has its own learned null embedding, so dropping any
subset of attributes (condition dropout in training, a partial request at generation time) is
just writing NaN, and classifier-free guidance works for every subset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .dataset.schema import CATEGORICAL, ConditionSchema


def encode_conditions(
    schema: ConditionSchema, conditions: Sequence[dict[str, Any]]
) -> torch.Tensor:
    """Parsed condition dicts -> (N, A) float tensor with NaN for unknown values.

    Values are parsed by the schema (so a bad value raises the schema's ValueError); attributes
    missing from a dict are unknown."""
    rows = []
    for request in conditions:
        row = []
        for attribute in schema.attributes:
            value = attribute.parse(request.get(attribute.name))
            if value is None:
                row.append(math.nan)
            elif attribute.kind == CATEGORICAL:
                row.append(float(attribute.values.index(value)))
            else:
                span = attribute.maximum - attribute.minimum
                row.append((float(value) - attribute.minimum) / span)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(schema))


def null_conditions(n: int, schema: ConditionSchema) -> torch.Tensor:
    """All attributes unknown: the unconditional branch of classifier-free guidance."""
    return torch.full((n, len(schema)), math.nan)


def drop_conditions(values: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Per-attribute condition dropout: each entry independently becomes NaN with probability p."""
    if p <= 0 or values.numel() == 0:
        return values
    drop = torch.rand(values.shape, generator=generator) < p
    return values.masked_fill(drop.to(values.device), math.nan)


class FourierFeatures(nn.Module):
    """Fixed sinusoidal features of a value in [0, 1] at geometric frequencies: a smooth input the
    MLP can interpolate between ages it saw."""

    def __init__(self, n_frequencies: int = 8):
        super().__init__()
        self.register_buffer(
            "frequencies", math.pi * 2.0 ** torch.arange(n_frequencies).float(), persistent=False
        )

    @property
    def dim(self) -> int:
        return 2 * len(self.frequencies) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x[:, None] * self.frequencies[None, :]
        return torch.cat([x[:, None], torch.sin(angles), torch.cos(angles)], dim=1)


class ConditionEncoder(nn.Module):
    """(N, A) condition tensor -> (N, dim) embedding: the sum of one embedding per attribute.

    Categorical: an embedding table; continuous: Fourier features + MLP. Unknown (NaN) entries
    take the attribute's learned null embedding. Used as the diffusion UNet's class embedding,
    so the conditions reach every residual block through the time embedding."""

    def __init__(self, schema: ConditionSchema, dim: int, n_frequencies: int = 8):
        super().__init__()
        self.kinds = [a.kind for a in schema.attributes]
        self.dim = dim
        self.fourier = FourierFeatures(n_frequencies)
        self.tables = nn.ModuleList()
        for attribute in schema.attributes:
            if attribute.kind == CATEGORICAL:
                self.tables.append(nn.Embedding(len(attribute.values), dim))
            else:
                self.tables.append(
                    nn.Sequential(nn.Linear(self.fourier.dim, dim), nn.SiLU(), nn.Linear(dim, dim))
                )
        self.null = nn.Parameter(torch.zeros(max(len(self.kinds), 1), dim))
        nn.init.normal_(self.null, std=0.02)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        values = values.float()
        out = torch.zeros(values.shape[0], self.dim, device=values.device)
        for i, (kind, table) in enumerate(zip(self.kinds, self.tables, strict=True)):
            column = values[:, i]
            known = ~torch.isnan(column)
            safe = torch.where(known, column, torch.zeros_like(column))
            if kind == CATEGORICAL:
                embedded = table(safe.long().clamp(0, table.num_embeddings - 1))
            else:
                embedded = table(self.fourier(safe.clamp(0.0, 1.0)))
            out = out + torch.where(known[:, None], embedded.float(), self.null[i][None, :])
        return out
