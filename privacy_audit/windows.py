"""Normalised cross-correlation of aligned image pairs over sliding windows: a training image's
region pasted or blended into an otherwise new image. A training image's window means and
spreads are the same for every query, so an index computes them once (`window_stats`) and a
pair then costs three box filters instead of five."""

from __future__ import annotations

import torch


def box_mean(x: torch.Tensor, side: int, stride: int = 1) -> torch.Tensor:
    """Means of every side x side window at `stride`, by running sums along rows, then columns
    (avg_pool2d with a large kernel costs side^2 per output). Only the windows asked for are
    differenced, so a search over a few shifts of a large window costs little more than the
    sums."""
    return _window_sums(_window_sums(x, side, stride, -1), side, stride, -2) / (side * side)


def _window_sums(x: torch.Tensor, side: int, stride: int, dim: int) -> torch.Tensor:
    """Sums of `side` consecutive entries along `dim`, every `stride`-th: the running sum at
    each window's end less that before its start (the first window has nothing before it),
    differenced straight into the result (no copy of the ends first: the same values)."""
    c = x.cumsum(dim)
    n = x.shape[dim]
    ends = _every(c, side - 1, n, stride, dim)
    out, rest = torch.empty_like(ends), ends.shape[dim] - 1
    out.narrow(dim, 0, 1).copy_(ends.narrow(dim, 0, 1))
    before = _every(c, stride - 1, n - side, stride, dim)
    torch.sub(ends.narrow(dim, 1, rest), before, out=out.narrow(dim, 1, rest))
    return out


def _every(x: torch.Tensor, start: int, stop: int, stride: int, dim: int) -> torch.Tensor:
    index = [slice(None)] * x.dim()
    index[dim] = slice(start, stop, stride)
    return x[tuple(index)]


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
