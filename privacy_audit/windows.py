"""Normalised cross-correlation of aligned image pairs over sliding windows: a training image's
region pasted or blended into an otherwise new image. A training image's window means and
spreads are the same for every query, so an index computes them once (`window_stats`) and a
pair then costs three box filters instead of five."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# box_mean is a loop a map: avg_pool2d with a large kernel costs side^2 per output, and running
# sums by tensor operations pass over the maps four times
from .kernels import box_mean


def area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) area-resized to size x size, as F.interpolate's "area" mode: by avg_pool2d
    where `size` divides both sides (the same means bit for bit, about a third faster: adaptive
    pooling works out every output's window), else by interpolate."""
    h, w = x.shape[-2:]
    if h % size == 0 and w % size == 0:
        return F.avg_pool2d(x, (h // size, w // size))
    return F.interpolate(x, size=(size, size), mode="area")


def window_stats(images: torch.Tensor, side: int, stride: int) -> tuple[torch.Tensor, ...]:
    """(mean, spread) of every side x side window at `stride` of (N, H, W) images, each
    (N, 1, h, w): what patch_ncc needs of the second image of a pair."""
    x = images[:, None]
    mean = box_mean(x, side, stride)
    return mean, (box_mean(x * x, side, stride) - mean**2).clamp(min=0).sqrt()


def patch_ncc(
    a: torch.Tensor,
    b: torch.Tensor,
    side: int,
    stride: int,
    b_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B,) best NCC over side x side windows (stride `stride`) of aligned pairs (B, H, W);
    `b_stats`: window_stats of `b`, when known."""
    mb, sb = window_stats(b, side, stride) if b_stats is None else b_stats
    a = a[:, None]
    ma = box_mean(a, side, stride)
    cov = box_mean(a * b[:, None], side, stride) - ma * mb
    sa = (box_mean(a * a, side, stride) - ma**2).clamp(min=0).sqrt()
    ncc = cov / (sa * sb).clamp(min=1e-10)
    return ncc.flatten(1).amax(1).clamp(-1, 1)
