"""The changes a copy of a training image could have undergone (mirror, small shifts and
rotations, crop+resize, noise, contrast/gamma/brightness, blur, JPEG-like recompression, and
partial copies: blended into or pasted into another image), as random batched torch transforms:
the contrastive encoder learns to be invariant to exactly these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT = _dct_matrix()
# The JPEG luminance quantisation table (ITU T.81, Annex K), scaled by quality below.
_JPEG_Q = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def jpeg_like(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Quantise 8x8 block DCT coefficients as baseline JPEG does at `quality` (per image)."""
    b, c, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    y = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255.0 - 128.0
    hh, ww = y.shape[-2:]
    blocks = y.reshape(b, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)
    coef = _DCT @ blocks @ _DCT.T
    q = quality.clamp(1, 100).to(x.dtype)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q) / 100.0
    table = (_JPEG_Q[None] * scale[:, None, None]).clamp(min=1.0).view(b, 1, 1, 1, 8, 8)
    coef = torch.round(coef / table) * table
    blocks = _DCT.T @ coef @ _DCT
    y = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh, ww)
    return ((y + 128.0) / 255.0)[..., :h, :w]


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (0 leaves the image unchanged)."""
    b, c, h, w = x.shape
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).to(x.dtype)[:, None]
    kernel = torch.exp(-(t[None] ** 2) / (2 * s**2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (b, 7)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    kx = kernel.repeat_interleave(c, 0).view(b * c, 1, 1, -1)
    ky = kernel.repeat_interleave(c, 0).view(b * c, 1, -1, 1)
    y = F.conv2d(F.conv2d(y, kx, groups=b * c), ky, groups=b * c)
    return y.view(b, c, h, w)


def draw_geometric(
    shape: tuple[int, int, int, int],
    generator: torch.Generator,
    *,
    max_shift_px: float = 4.0,
    min_crop: float = 0.75,
    max_rotation_deg: float = 4.0,
    max_scale: float = 0.0,
) -> torch.Tensor:
    """(B, 2, 3) random affine_grid maps for a batch of `shape`: mirror, crop+resize (crop side
    in [min_crop, 1]) or, for the other half, a scaling by up to `max_scale` either way (none
    at 0), shift and a small rotation. Drawn apart from warp(), so the known transform can be a
    training target (aligner.py)."""
    b, _, h, w = shape
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    crop = min_crop + (1 - min_crop) * u(b)
    whole = u(b) < 0.5  # half the views keep full scale (or are only scaled)
    full = 1 + (u(b) * 2 - 1) * max_scale if max_scale else torch.ones(b)
    crop = torch.where(whole, crop, full)
    angle = (u(b) * 2 - 1) * math.radians(max_rotation_deg)
    room = (1 - crop).clamp(min=0)  # where a crop may sit, in normalised units
    tx = (u(b) * 2 - 1) * room + (u(b) * 2 - 1) * 2 * max_shift_px / w
    ty = (u(b) * 2 - 1) * room + (u(b) * 2 - 1) * 2 * max_shift_px / h
    cos, sin = torch.cos(angle) * crop, torch.sin(angle) * crop
    return torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) sampled at the affine_grid maps theta (B, 2, 3), the border repeated."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def geometric(x: torch.Tensor, generator: torch.Generator, **limits) -> torch.Tensor:
    """Mirror, crop+resize, shift and a small rotation (draw_geometric's `limits`)."""
    return warp(x, draw_geometric(tuple(x.shape), generator, **limits))


def photometric(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma, contrast and brightness; then blur, JPEG-like recompression and noise, each at
    random strength and each applied to about half the views."""
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    view = (b, 1, 1, 1)
    gamma = torch.exp((u(b) * 2 - 1) * math.log(1.5)).view(view)
    x = x.clamp(0, 1) ** gamma
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = (0.7 + 0.6 * u(b)).view(view)
    x = (x - mean) * contrast + mean + (u(b) * 0.2 - 0.1).view(view)
    x = x.clamp(0, 1)
    blur = u(b) < 0.5
    if blur.any():
        x[blur] = gaussian_blur(x[blur], 0.3 + 0.9 * u(int(blur.sum())))
    jpeg = u(b) < 0.5
    if jpeg.any():
        x[jpeg] = jpeg_like(x[jpeg], 25 + 70 * u(int(jpeg.sum())))
    noise = torch.where(u(b) < 0.5, 0.06 * u(b), torch.zeros(b)).view(view)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)


def partial(
    x: torch.Tensor, others: torch.Tensor, generator: torch.Generator, share: float = 0.5
) -> torch.Tensor:
    """About `share` of the batch (B, 1, H, W) mixed with `others` (images of other patients):
    half of those blended (the copy's weight 55-85%), half a region of the copy (65-90% of each
    side, anywhere) pasted into the other image. The copy stays the larger part, so it is still
    "this image" to the encoder."""
    b, _, h, w = x.shape
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    mixed = u(b) < share
    blend = u(b) < 0.5
    weight = (0.55 + 0.3 * u(b)).view(b, 1, 1, 1)
    out = torch.where((mixed & blend).view(b, 1, 1, 1), weight * x + (1 - weight) * others, x)
    sides = 0.65 + 0.25 * u(b, 2)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    ph, pw = (sides[:, 0] * h).round().long(), (sides[:, 1] * w).round().long()
    top = (u(b) * (h - ph + 1)).long().clamp(max=h - 1)
    left = (u(b) * (w - pw + 1)).long().clamp(max=w - 1)
    inside = (rows >= top.view(b, 1, 1)) & (rows < (top + ph).view(b, 1, 1))
    inside = inside & (cols >= left.view(b, 1, 1)) & (cols < (left + pw).view(b, 1, 1))
    pasted = torch.where(inside[:, None], x, others)
    return torch.where((mixed & ~blend).view(b, 1, 1, 1), pasted, out)


def copy_augment(
    x: torch.Tensor,
    generator: torch.Generator,
    others: torch.Tensor | None = None,
    share: float = 0.5,
) -> torch.Tensor:
    """One random 'altered copy' of every image in the batch (B, 1, H, W) in [0, 1]; with
    `others` (one image of another patient per row), about `share` of them are partial copies
    mixed into them."""
    x = geometric(x, generator)
    if others is not None:
        x = partial(x, geometric(others, generator), generator, share=share)
    return photometric(x, generator)
