"""A small LoRA (low-rank adaptation) for the UNet's linear layers (peft is not installed).

Each wrapped nn.Linear keeps its frozen weight W and learns W + (alpha/r) * B @ A with B starting
at zero, so an adapted model starts exactly at its parent. `merge_lora` folds the update back
into plain nn.Linear layers, so an adapted run saves and loads like any other model.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.scale = (alpha or rank) / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype)
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        linear = nn.Linear(
            self.base.in_features, self.base.out_features, self.base.bias is not None
        )
        with torch.no_grad():
            linear.weight.copy_(self.base.weight + self.scale * self.lora_b @ self.lora_a)
            if self.base.bias is not None:
                linear.bias.copy_(self.base.bias)
        return linear


def add_lora(model: nn.Module, rank: int, skip: tuple[str, ...] = ()) -> list[nn.Parameter]:
    """Wrap every nn.Linear in `model` (outside modules named in `skip`); returns the LoRA params."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(name.startswith(s) for s in skip)
    ]
    params: list[nn.Parameter] = []
    for name, module in targets:
        wrapper = LoRALinear(module, rank)
        model.set_submodule(name, wrapper)
        params += [wrapper.lora_a, wrapper.lora_b]
    if not params:
        raise ValueError("the model has no linear layer to adapt with LoRA")
    return params


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged nn.Linear (in place); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            model.set_submodule(name, module.merged())
    return model
