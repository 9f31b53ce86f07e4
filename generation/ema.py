"""Exponential moving average of model weights: the weights we sample from."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps a shadow copy; decay warms up as (1+n)/(10+n) so short runs are not dominated by the
    random initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        source = model.state_dict()
        for name, shadow in self.model.state_dict().items():
            value = source[name].detach()
            if shadow.dtype.is_floating_point:
                shadow.mul_(decay).add_(value.to(shadow.dtype), alpha=1 - decay)
            else:
                shadow.copy_(value)
