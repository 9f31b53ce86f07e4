"""Exponential moving average of model weights, the weights we sample from: diffusers' EMAModel."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

# EMAModel's state without its tensors: what a checkpoint's state.json keeps
EMA_COUNTERS = (
    "decay",
    "min_decay",
    "optimization_step",
    "update_after_step",
    "use_ema_warmup",
    "inv_gamma",
    "power",
)


class EMA:
    """A shadow copy `model` averaged by diffusers' `EMAModel`.

    The decay at the k-th update (k = 1, 2, ...) is min(decay, k / (9 + k)): it warms up so
    short runs are not dominated by the random initialisation. EMAModel gives this with
    `use_ema_warmup`, `inv_gamma=9`, `power=1` and `update_after_step=-1` (its warmup
    1 - (1 + k/9)^-1 is k / (9 + k), and -1 lets the first update count as k = 1 rather than
    copy the weights). A model fine-tuned from trained weights (`warmup=False`) keeps its full
    decay from the first update (`min_decay=decay`): its start is worth keeping, and the average
    of the start and the fine-tuned weights is what holds the few-shot drift in check.

    EMAModel's shadow parameters are the parameters of `model` itself, so `model` always holds
    the average (checkpoints, sample grids and the saved weights read it) with no second copy.
    EMAModel averages parameters only: a model with persistent buffers is refused."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        from diffusers.training_utils import EMAModel

        buffers = set(model.state_dict()) - {name for name, _ in model.named_parameters()}
        if buffers:
            raise ValueError(f"EMA averages parameters only; buffers {sorted(buffers)}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.average = EMAModel(
            [],
            decay=decay,
            min_decay=0.0 if warmup else decay,
            update_after_step=-1,
            use_ema_warmup=warmup,
            inv_gamma=9,
            power=1,
        )
        self.average.shadow_params = [p.detach() for p in self.model.parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average in the parameters of `model` (the training copy) after an optimizer step."""
        self.average.step(model.parameters())

    def skip(self) -> None:
        """An optimizer step that did not move the weights (fp16 overflow): nothing is averaged
        in, but the warmup follows the training steps, as the step count of a resumed run does."""
        self.average.optimization_step += 1

    def counters(self) -> dict[str, Any]:
        """The decay settings and update count (JSON) that a checkpoint keeps beside the
        weights of `model`; with both, a resumed run continues the same average."""
        state = self.average.state_dict()
        return {key: state[key] for key in EMA_COUNTERS}

    def load_counters(self, counters: dict[str, Any] | None, step: int) -> None:
        """Restore `counters()` from a checkpoint at `step` (the weights come with `model`). A
        checkpoint written before they were kept (None) comes from the hand-written EMA, whose
        warmup followed the step: the same schedule, counted from `step`."""
        if counters is None:
            counters = {**self.counters(), "optimization_step": step}
        self.average.load_state_dict({key: counters[key] for key in EMA_COUNTERS})
