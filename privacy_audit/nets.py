"""What the audit's own small networks (the copy encoder, the pair verifier) share: their
convolution block, their training loop (AdamW, a linear warm-up, a cosine decay) and the form
they are run in (for_inference)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from conditioning.precision import effective_bf16

_BF16 = ContextVar("audit_networks_bf16", default=False)  # set by bf16_inference


@contextmanager
def bf16_inference(requested: bool) -> Iterator[None]:
    """Within it, the networks for_inference makes run under CPU bf16 autocast where the CPU
    runs bf16 natively (AVX512-BF16, AMX; elsewhere fp32, with one warning: emulated, it took
    11 times as long as fp32 for the pair verifier on an AVX2-only host). Opt-in (the audit's
    `bf16` setting): on the five planted sets the networks in bf16 (emulated) flagged 4,963,
    4,960 and 4,960 of 5,000 copies for verifier seeds 0-2 (fp32: 4,963, 4,961, 4,960) and no
    fresh film (docs/privacy-audit.md), but its speed is measured on such a host only."""
    token = _BF16.set(effective_bf16(requested, "cpu"))
    try:
        yield
    finally:
        _BF16.reset(token)


class _InBf16(nn.Module):
    """A network run under CPU bf16 autocast, its outputs handed back in fp32."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *inputs: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.net(*inputs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def conv_block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    """A 3x3 convolution (no bias: the batch norm has one), batch norm, ReLU."""
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def standardised(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) each row zero-mean, unit (unbiased) standard deviation: what the pair networks
    see, whatever the images' scale. Two passes over the centred values: Tensor.std's
    reduction took three times as long (about 22 against 7 us per 52x52 window, one thread),
    for the same values to within a rounding (1e-6)."""
    flat = x.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    std = (centred.square().sum(1, keepdim=True) / max(flat.shape[1] - 1, 1)).sqrt()
    return (centred / std.clamp(min=1e-6)).view_as(x)


def for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy to run (never to train): each convolution's batch norm folded into it
    and the weights channels-last, the layout oneDNN's convolutions run fastest in (on an AVX2
    host the pair verifier about 45% and the encoder 25% faster; outputs within 2e-7); run in
    bf16 inside bf16_inference."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    model = model.to(memory_format=torch.channels_last)
    return _InBf16(model) if _BF16.get() else model


def fit(
    model: nn.Module,
    loss_at: Callable[[], torch.Tensor],
    steps: int,
    lr: float,
    desc: str,
    progress: bool,
) -> dict:
    """`steps` AdamW steps (weight decay 1e-4) on `loss_at()` (which draws its own batch), the
    learning rate warmed up linearly over the first tenth and then decayed by a cosine; the
    model is left in eval mode. Returns train_seconds and final_loss (of the last 20 steps)."""
    from tqdm import tqdm

    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + np.cos(np.pi * i / steps)),
    )
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = loss_at()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    final = round(float(np.mean(losses[-20:])), 4) if losses else None
    return {"train_seconds": round(time.perf_counter() - start, 1), "final_loss": final}
