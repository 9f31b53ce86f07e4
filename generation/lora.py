"""LoRA (low-rank adaptation) of the UNet's linear layers, with peft.

peft's LoRA keeps each targeted nn.Linear frozen and learns W + (alpha/r) * B @ A, with B
initialised to zero, so an adapted model starts exactly at its parent; alpha = r here (scale 1).
`merge_lora` folds the update back into plain nn.Linear layers (peft's `merge_and_unload`), so
an adapted run saves and loads like any other model, with the same weight names.
"""

from __future__ import annotations

import re

from peft import LoraConfig, LoraModel
from torch import nn

ADAPTER = "default"


def add_lora(model: nn.Module, rank: int, skip: tuple[str, ...] = ()) -> LoraModel:
    """peft's LoRA of `rank` on every nn.Linear in `model` outside the modules named in `skip`.

    `model` is adapted in place and wrapped: put the returned LoraModel where `model` was (it
    calls `model` and reaches its attributes). Only the LoRA weights are left trainable."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and not any(name == s or name.startswith(f"{s}.") for s in skip)
    ]
    if not targets:
        raise ValueError("the model has no linear layer to adapt with LoRA")
    # a pattern peft matches against whole module names: these layers and no others
    pattern = "|".join(map(re.escape, targets))
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=pattern)
    return LoraModel(model, config, ADAPTER)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoraModel in `model` (or `model` itself) by its wrapped model with the LoRA
    updates merged into plain nn.Linear layers (in place); returns the model."""
    if isinstance(model, LoraModel):
        return model.merge_and_unload()
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraModel):
            model.set_submodule(name, module.merge_and_unload())
    return model
