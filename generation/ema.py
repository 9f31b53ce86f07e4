"""Exponential moving average of model weights: the weights we sample from."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps a shadow copy; decay warms up as (1+n)/(10+n) so short runs are not dominated by the
    random initialisation. A model fine-tuned from trained weights (`warmup=False`) keeps its full
    decay from the first step: its start is worth keeping, and the average of the start and the
    fine-tuned weights is what holds the few-shot drift in check."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        source = model.state_dict()
        for name, shadow in self.model.state_dict().items():
            value = source[name].detach()
            if shadow.dtype.is_floating_point:
                shadow.mul_(decay).add_(value.to(shadow.dtype), alpha=1 - decay)
            else:
                shadow.copy_(value)
