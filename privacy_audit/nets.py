"""What the audit's own small networks (the copy encoder, the pair verifier) share: their
convolution block and their learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def conv_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    """A 3x3 convolution (no bias: the batch norm has one), batch norm, ReLU."""
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int):
    """A linear warm-up over the first tenth of `steps`, then a cosine decay to zero."""
    warm = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + np.cos(np.pi * i / steps)),
    )
