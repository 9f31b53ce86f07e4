"""Block-matched alignment of a registered pair, the way copy-move forensics aligns a copied
region: each block of the training image is found on its own in the aligned query, within a few
pixels, and a similarity transform (rotation, zoom, shift; the mirror kept) is fitted to the
blocks that agree on one.

Why: the registration maximises the NCC of the whole window. When part of a query is another
patient's film (a pasted region, cropped and resized or rotated too), that part pulls the
alignment off the copied part by one to two pixels and a few degrees, and the detail scores,
sharp within a pixel, miss the copy. Here the copied part's blocks agree on its transform and
the other film's blocks, scattered, are outliers; the local detail score is then taken again at
the transform found (register._detail_realigned). On the planted Kermany set, the 14 missed
regions pasted into a new patient's film whose source was the best candidate scored 0.17-0.76
at the alignment the detector had, and 0.75-0.97 here.

Every pair of the PROPOSERS blocks with the best peaks proposes a transform (all of them, no
random draws: a pair's result does not depend on the other pairs computed with it), the one
most blocks agree with wins, and a weighted least-squares fit to those blocks refines it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import window_energy

BLOCK = 8  # px at the registration's FIELD (32): 16 px of a 64x64 image
STRIDE = 4
SEARCH = 3  # px either side: 6 px of a 64x64 image
TOLERANCE = 0.75  # px: a block agrees with a transform putting it this close to where it was
MIN_PEAK = 0.2  # a block whose best NCC is below this says nothing about where it is
MIN_AGREE = 3  # blocks a transform needs (two define one)
PROPOSERS = 8  # the blocks with the best peaks propose transforms, two at a time


def block_positions(side: int, size: int) -> list[int]:
    """Top (or left) corners, in `fixed`'s frame, of the blocks of a (side x side) centre window
    of a (size x size) field that can be searched SEARCH px either side within the field."""
    offset = (size - side) // 2
    low = max(0, SEARCH - offset)
    high = min(side - BLOCK, size - offset - BLOCK - SEARCH)
    return list(range(low, high + 1, STRIDE))


def match_blocks(
    warped: torch.Tensor, fixed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """warped (n, S, S): queries under their alignment; fixed (n, s, s): the training images'
    centre windows (the same band-pass). Each BLOCK-sided block of `fixed`, searched in
    `warped` within SEARCH px. Returns the block centres (K, 2) as (x, y) px of `warped`, each
    block's displacement there (n, K, 2) (sub-pixel: a parabola through the peak) and its best
    NCC (n, K)."""
    n, size, side = len(warped), warped.shape[-1], fixed.shape[-1]
    offset = (size - side) // 2
    starts = block_positions(side, size)
    lags = 2 * SEARCH + 1
    energy = window_energy(warped, BLOCK)  # every block-sized window of the query: the same
    # for every block searched there
    rows = torch.arange(n)
    centres, shifts, peaks = [], [], []
    for top in starts:
        for left in starts:
            block = fixed[:, top : top + BLOCK, left : left + BLOCK]
            block = block - block.mean((1, 2), keepdim=True)
            block = block / block.flatten(1).norm(dim=1).clamp(min=1e-8)[:, None, None]
            y0, x0 = top + offset - SEARCH, left + offset - SEARCH
            area = warped[:, y0 : y0 + BLOCK + 2 * SEARCH, x0 : x0 + BLOCK + 2 * SEARCH]
            num = F.conv2d(area[None], block[:, None], groups=n)[0]  # (n, lags, lags)
            ncc = num / energy[:, y0 : y0 + lags, x0 : x0 + lags].clamp(min=1e-10).sqrt()
            best, where = ncc.flatten(1).max(1)
            iy, ix = where // lags, where % lags
            dy = iy - SEARCH + _vertex(ncc, rows, iy, ix, 1)
            dx = ix - SEARCH + _vertex(ncc, rows, iy, ix, 2)
            half = BLOCK / 2 - 0.5
            centres.append((left + offset + half, top + offset + half))
            shifts.append(torch.stack([dx, dy], 1))
            peaks.append(best)
    return torch.tensor(centres), torch.stack(shifts, 1), torch.stack(peaks, 1)


def _vertex(ncc: torch.Tensor, rows, iy, ix, dim: int) -> torch.Tensor:
    """The sub-pixel offset of the peak along `dim` (1: rows, 2: columns) by a parabola through
    it and its two neighbours (0 at the search's edge)."""
    last = ncc.shape[dim] - 1
    at = iy if dim == 1 else ix
    inner = (at > 0) & (at < last)
    lo, hi = (at - 1).clamp(0, last), (at + 1).clamp(0, last)
    if dim == 1:
        a, b = ncc[rows, lo, ix], ncc[rows, hi, ix]
    else:
        a, b = ncc[rows, iy, lo], ncc[rows, iy, hi]
    c = ncc[rows, iy, ix]
    curve = a - 2 * c + b
    ok = inner & (curve.abs() > 1e-6)
    return torch.where(ok, 0.5 * (a - b) / torch.where(ok, curve, 1.0), 0.0).clamp(-0.5, 0.5)


def fit_similarity(
    thetas: torch.Tensor, centres: torch.Tensor, shifts: torch.Tensor, peaks: torch.Tensor, size
) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine_grid maps (n, 2, 3) the blocks agree on, `thetas` (the alignment they were
    found under) where fewer than MIN_AGREE do, and how many agree (n,). A similarity in
    normalised coordinates, as complex numbers: query point v = a * u + t for a training image
    point u (mirrored when `thetas` is), a = zoom * e^(i angle)."""
    n, k = peaks.shape
    norm = lambda p: (2 * p + 1) / size - 1  # noqa: E731 (px -> normalised, align_corners=False)
    linear = thetas[:, :, :2]
    mirror = torch.where(torch.linalg.det(linear) < 0, -1.0, 1.0)
    u = norm(centres)[None].repeat(n, 1, 1)
    u[..., 0] = u[..., 0] * mirror[:, None]
    found = (
        torch.einsum("nij,nkj->nki", linear, norm(centres[None] + shifts)) + thetas[:, None, :, 2]
    )
    zu = torch.complex(u[..., 0], u[..., 1])
    zv = torch.complex(found[..., 0], found[..., 1])
    usable = peaks >= MIN_PEAK
    m = min(PROPOSERS, k)
    top = torch.argsort(peaks, dim=1, descending=True, stable=True)[:, :m]  # ties: first block
    pi, pj = torch.triu_indices(m, m, 1)
    i, j = top[:, pi], top[:, pj]  # (n, H): every pair of proposers
    rows = torch.arange(n)[:, None]
    a = (zv[rows, j] - zv[rows, i]) / (zu[rows, j] - zu[rows, i])  # (n, H) their transforms
    t = zv[rows, i] - a * zu[rows, i]
    error = (a[..., None] * zu[:, None] + t[..., None] - zv[:, None]).abs() * (size / 2)
    weight = peaks.clamp(min=0) * usable
    votes = ((error < TOLERANCE) * weight[:, None]).sum(-1)
    votes = torch.where(usable[rows, i] & usable[rows, j], votes, -1.0)
    best = votes.argmax(1)
    agree = (error[torch.arange(n), best] < TOLERANCE) & usable
    w = weight * agree
    total = w.sum(1).clamp(min=1e-12)
    mu, mv = (w * zu).sum(1) / total, (w * zv).sum(1) / total
    du, dv = zu - mu[:, None], zv - mv[:, None]
    a = (w * dv * du.conj()).sum(1) / (w * du.abs() ** 2).sum(1).clamp(min=1e-12)
    t = mv - a * mu
    fitted = torch.stack(
        [
            torch.stack([a.real * mirror, -a.imag, t.real], 1),
            torch.stack([a.imag * mirror, a.real, t.imag], 1),
        ],
        1,
    )
    count = agree.sum(1)
    return torch.where((count >= MIN_AGREE)[:, None, None], fitted, thetas), count


def realign(
    warped: torch.Tensor, fixed: torch.Tensor, thetas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """match_blocks, then fit_similarity: the maps (n, 2, 3) the copied part's blocks agree on
    and how many agree."""
    centres, shifts, peaks = match_blocks(warped, fixed)
    if len(centres) < MIN_AGREE:  # a field too small for blocks: keep the alignment
        return thetas, torch.zeros(len(thetas), dtype=torch.long)
    return fit_similarity(thetas, centres, shifts, peaks, warped.shape[-1])
