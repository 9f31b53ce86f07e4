"""Native loops (numba) for the registration's per-pixel passes.

The registration warps each query under thousands of small maps and normalises its
correlations by the spread of every shifted window. As tensor operations these are a chain of
full-size passes (a sampling grid, then the sampling; running sums along rows, then columns,
for the values and again for their squares), each reading and writing memory the next reads
again. One loop per map does the same arithmetic while the map sits in cache, its inner loops
written so they vectorise (along a row) or gather once per pixel: on one AVX2 thread the window
spreads about 15 times faster than the running sums and the warp about 1.5 times faster than
`affine_grid` and `grid_sample` (docs/privacy-audit.md). Each function takes and returns
float32 tensors and computes what its docstring names, within rounding (the summation order
differs), so tests hold them against the library's operations.

The loops release the GIL: blocks.map_blocks runs them on several threads at once.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

_FAST = {"nnan", "ninf", "nsz", "contract"}  # no reordering of sums beyond a fused multiply-add


def window_energy(x: torch.Tensor, side: int) -> torch.Tensor:
    """(..., S, S) -> (..., L, L), L = S - side + 1: the sum of squared deviations from their
    mean of the values in every side x side window (stride 1), the square of the norm an NCC
    divides by. May be slightly negative where the window is flat: callers clamp."""
    size = x.shape[-1]
    if x.shape[-2] != size or not 0 < side <= size:
        raise ValueError(f"window_energy: {side} px windows of {tuple(x.shape)} maps")
    lags = size - side + 1
    flat = _as_maps(x)
    out = np.empty((len(flat), lags, lags), np.float32)
    _window_energy(flat, side, out)
    return torch.from_numpy(out).view(*x.shape[:-2], lags, lags)


def box_mean(x: torch.Tensor, side: int, stride: int = 1) -> torch.Tensor:
    """(..., H, W) -> the mean of every side x side window at `stride` ((..., h, w))."""
    h, w = x.shape[-2:]
    if not 0 < side <= min(h, w) or stride < 1:
        raise ValueError(f"box_mean: {side} px windows at stride {stride} of {tuple(x.shape)}")
    rows, cols = (h - side) // stride + 1, (w - side) // stride + 1
    flat = _as_maps(x)
    out = np.empty((len(flat), rows, cols), np.float32)
    _box_mean(flat, side, stride, out)
    return torch.from_numpy(out).view(*x.shape[:-2], rows, cols)


def warp_affine(x: torch.Tensor, thetas: torch.Tensor, size: int, margin: int = 0) -> torch.Tensor:
    """x (N, H, W), thetas (N, T, 2, 3) -> (N, T, side, side), side = size - 2 * margin: image
    n sampled at each of its T affine_grid maps (align_corners=False) on a size x size field,
    bilinearly, the border repeated (grid_sample's padding_mode="border"), less `margin` px each
    side of the field. Laid out transform-major in memory (a (T, N, ...) tensor transposed):
    the fine search correlates all queries' fields of one transform in one convolution."""
    n, t = thetas.shape[:2]
    side = size - 2 * margin
    if x.dim() != 3 or len(x) != n or thetas.shape[2:] != (2, 3) or side < 1:
        raise ValueError(f"warp_affine: images {tuple(x.shape)}, maps {tuple(thetas.shape)}")
    out = np.empty((t, n, side, side), np.float32)
    images = _as_maps(x)
    maps = thetas.detach().to(torch.float32).contiguous().numpy()
    _warp_affine(images, maps, size, margin, out)
    return torch.from_numpy(out).transpose(0, 1)


def _as_maps(x: torch.Tensor) -> np.ndarray:
    """A (M, H, W) float32 C-contiguous array of `x`'s trailing 2-D maps (a view where it can)."""
    return x.detach().to(torch.float32).reshape(-1, *x.shape[-2:]).contiguous().numpy()


@njit(cache=True, nogil=True, fastmath=_FAST, boundscheck=False)
def _window_energy(x, side, out):  # pragma: no cover - compiled
    m, s = x.shape[0], x.shape[1]
    lags = s - side + 1
    area = np.float32(side * side)
    sums = np.zeros((lags, s), np.float32)  # each column's sums over each window's rows
    squares = np.zeros((lags, s), np.float32)
    for i in range(m):
        img = x[i]
        sums[0] = 0
        squares[0] = 0
        for r in range(side):  # down the rows first, a whole row at a time: this vectorises
            for c in range(s):
                v = img[r, c]
                sums[0, c] += v
                squares[0, c] += v * v
        for li in range(1, lags):
            for c in range(s):
                u, v = img[li + side - 1, c], img[li - 1, c]
                sums[li, c] = sums[li - 1, c] + (u - v)
                squares[li, c] = squares[li - 1, c] + (u * u - v * v)
        for li in range(lags):  # then along each row of window sums, sliding
            a = np.float32(0)
            q = np.float32(0)
            for c in range(side):
                a += sums[li, c]
                q += squares[li, c]
            out[i, li, 0] = q - a * (a / area)
            for j in range(1, lags):
                a += sums[li, j + side - 1] - sums[li, j - 1]
                q += squares[li, j + side - 1] - squares[li, j - 1]
                out[i, li, j] = q - a * (a / area)


@njit(cache=True, nogil=True, fastmath=_FAST, boundscheck=False)
def _box_mean(x, side, stride, out):  # pragma: no cover - compiled
    m, w = x.shape[0], x.shape[2]
    rows, cols = out.shape[1], out.shape[2]
    area = np.float32(side * side)
    sums = np.zeros((rows, w), np.float32)  # each column's sums over each window's rows
    for i in range(m):
        img = x[i]
        sums[0] = 0
        for r in range(side):  # down the rows first, a whole row at a time: this vectorises
            for c in range(w):
                sums[0, c] += img[r, c]
        for li in range(1, rows):  # slide: add the rows that enter the window, less those leaving
            for c in range(w):
                sums[li, c] = sums[li - 1, c]
            for r in range((li - 1) * stride, li * stride):
                for c in range(w):
                    sums[li, c] += img[r + side, c] - img[r, c]
        for li in range(rows):  # then along each row of window sums, alike
            a = np.float32(0)
            for c in range(side):
                a += sums[li, c]
            out[i, li, 0] = a / area
            for j in range(1, cols):
                for c in range((j - 1) * stride, j * stride):
                    a += sums[li, c + side] - sums[li, c]
                out[i, li, j] = a / area


@njit(cache=True, nogil=True, fastmath=_FAST, boundscheck=False)
def _warp_affine(x, thetas, size, margin, out):  # pragma: no cover - compiled
    n, h, w = x.shape
    t = thetas.shape[1]
    side = size - 2 * margin
    axis = np.empty(side, np.float32)  # affine_grid's coordinates of the field's pixel centres
    for j in range(side):
        axis[j] = np.float32(2 * (j + margin) + 1) / np.float32(size) - np.float32(1)
    half_w, half_h = np.float32(w) * np.float32(0.5), np.float32(h) * np.float32(0.5)
    last_x, last_y = np.float32(w - 1), np.float32(h - 1)
    zero = np.float32(0)
    top_at, bottom_at = np.empty(side, np.int32), np.empty(side, np.int32)
    right = np.empty(side, np.int32)
    fx, fy = np.empty(side, np.float32), np.empty(side, np.float32)
    flat = x.reshape(n, h * w)
    for i in range(n):
        img = flat[i]
        for k in range(t):
            th = thetas[i, k]  # grid_sample's source pixel: (g + 1) * size / 2 - 1/2
            ax, bx = th[0, 0] * half_w, th[0, 1] * half_w
            cx = th[0, 2] * half_w + half_w - np.float32(0.5)
            ay, by = th[1, 0] * half_h, th[1, 1] * half_h
            cy = th[1, 2] * half_h + half_h - np.float32(0.5)
            field = out[k, i]
            for r in range(side):
                row_x, row_y = bx * axis[r] + cx, by * axis[r] + cy
                for c in range(side):  # a row's source pixels first: this loop vectorises
                    px = min(max(ax * axis[c] + row_x, zero), last_x)
                    py = min(max(ay * axis[c] + row_y, zero), last_y)
                    x0, y0 = np.int32(px), np.int32(py)
                    fx[c], fy[c] = px - np.float32(x0), py - np.float32(y0)
                    top_at[c] = y0 * w + x0
                    bottom_at[c] = top_at[c] + np.int32(y0 < h - 1) * w
                    right[c] = np.int32(x0 < w - 1)
                line = field[r]
                for c in range(side):  # then the gathers
                    p, q, d = top_at[c], bottom_at[c], right[c]
                    top = img[p] + fx[c] * (img[p + d] - img[p])
                    bottom = img[q] + fx[c] * (img[q + d] - img[q])
                    line[c] = top + fy[c] * (bottom - top)
