"""Detail scores: a registered pair compared on what makes a film this patient's, not on the
anatomy all chest films share.

At the alignment the registration found, query and training image are compared at (at most)
64x64 after a band-pass (a difference of Gaussians) and after projecting out the leading
principal components of the training windows. Two patients share those components (heart,
diaphragm, rib cage at their usual places); a blend or a pasted region keeps the training
image's own residual detail. Scores: the NCC of the whole window and the best NCC of
DETAIL_PATCH-sided windows (a region pasted into another image), and the best NCC of the same
windows with the anatomy projected out of each window alone (local_detail_scores: projected out
of the whole window, the other film's part of a partial copy sets the projection and distorts
the copied part's residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .augment import gaussian_blur
from .kernels import warp_affine
from .windows import area_resize, patch_ncc, window_stats

DETAIL_SIZE = 64  # px: the comparison's resolution (at most)
DETAIL_BAND = (1.0, 3.0)  # sigmas (px at DETAIL_SIZE) of the difference of Gaussians
MARGIN = 6  # px cut at each side (the warp's border)
SHIFT = 2  # px searched either side of the registration's alignment
ANATOMY = 150  # principal components of the training windows projected out
PATCH = 36  # px: the window of the patch score
STRIDE = 4
LOCAL_ANATOMY = 60  # leading components projected out of each window alone (the local score)
LOCAL_STRIDE = 8  # px between the local score's windows: 9 at 64x64


def _resize(images01: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images01, dtype=np.float32))[:, None]
    if max(x.shape[-2:]) > size:
        x = area_resize(x, size)
    return x[:, 0]


def _band(x: torch.Tensor) -> torch.Tensor:
    """(N, S, S) difference of Gaussians at DETAIL_BAND."""
    n = len(x)
    lo, hi = (gaussian_blur(x[:, None], torch.full((n,), s))[:, 0] for s in DETAIL_BAND)
    return lo - hi


def _flat_zero_mean(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return flat - flat.mean(1, keepdim=True)


def remove(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(B, S, S) windows, zero-mean, without their projection on `basis` (m, S*S)."""
    flat = _flat_zero_mean(x)
    return (flat - (flat @ basis.T) @ basis).view_as(x)


def anatomy_basis(windows: torch.Tensor, m: int = ANATOMY, seed: int = 0) -> torch.Tensor:
    """(m, S*S) orthonormal: the leading principal directions of the zero-mean windows
    (uncentred across images, so the mean film is among them), by a seeded randomised SVD. At
    most one per 10 images: what many films share, not what makes one of them."""
    x = _flat_zero_mean(windows)
    m = min(m, len(x) // 10, x.shape[1])
    if m == 0:
        return x.new_zeros(0, x.shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(x, q=min(m + 10, *x.shape), niter=3, M=None)
    return v[:, :m].T.contiguous()


@dataclass
class DetailIndex:
    """The training images prepared once: band-passed centre windows without the anatomy."""

    size: int
    basis: torch.Tensor  # (m, side*side)
    bands: torch.Tensor  # (N, side, side) band-passed, unit norm (the shift search)
    windows: torch.Tensor  # (N, side, side), anatomy removed
    window_stats: tuple[torch.Tensor, torch.Tensor]  # of `windows`' patch-score windows
    local_bases: torch.Tensor  # (P, w*w, m+1) per local window: its anatomy and its mean
    local_refs: torch.Tensor  # (N, P, w*w) float16, each training window without those, unit norm

    @classmethod
    def build(cls, images01: np.ndarray, block: int = 2048) -> DetailIndex:
        size = min(DETAIL_SIZE, max(np.asarray(images01).shape[-2:]))
        margin = _margin(size)
        bands = []
        for i in range(0, len(images01), block):
            b = _band(_resize(images01[i : i + block], size))
            bands.append(b[:, margin : size - margin, margin : size - margin])
        windows = torch.cat(bands)
        basis = anatomy_basis(windows)
        unit = F.normalize(_flat_zero_mean(windows), dim=1).view_as(windows)
        residual = remove(windows, basis)
        stats = window_stats(residual, _patch_side(size), STRIDE)
        bases = _local_bases(basis, windows.shape[-1], _patch_side(size))
        refs = torch.stack([_local_residual(unit, p, q).half() for p, q in enumerate(bases)], 1)
        return cls(size, basis, unit, residual, stats, bases, refs)


def _local_positions(side: int, window: int) -> list[tuple[int, int]]:
    """The (top, left) corners of the local score's windows in a side x side field."""
    starts = range(0, side - window + 1, LOCAL_STRIDE)
    return [(t, left) for t in starts for left in starts]


def _local_bases(basis: torch.Tensor, side: int, window: int) -> torch.Tensor:
    """(P, window^2, m+1): per local window, an orthonormal basis of the leading LOCAL_ANATOMY
    components restricted to it and of a constant (at most a quarter of its pixels' dimensions,
    so a small test image keeps a residual)."""
    m = min(LOCAL_ANATOMY, len(basis), window * window // 4)
    full = basis[:m].view(m, side, side)
    out = []
    for t, left in _local_positions(side, window):
        part = full[:, t : t + window, left : left + window].reshape(m, window * window).T
        part = torch.cat([part, torch.ones(len(part), 1)], 1)
        out.append(torch.linalg.qr(part).Q)
    return torch.stack(out)


def _local_window(windows: torch.Tensor, position: int, basis: torch.Tensor) -> torch.Tensor:
    """(n, w*w): local window `position` of (n, side, side) windows, flat (w: `basis`'s, the
    window's (w*w, m+1) basis)."""
    window = math.isqrt(basis.shape[0])
    t, left = _local_positions(windows.shape[-1], window)[position]
    return windows[:, t : t + window, left : left + window].reshape(len(windows), -1)


def _local_residual(windows: torch.Tensor, position: int, basis: torch.Tensor) -> torch.Tensor:
    """(n, w*w): local window `position` of (n, side, side) windows without `basis`, unit norm."""
    x = _local_window(windows, position, basis)
    return F.normalize(x - (x @ basis) @ basis.T, dim=1)


def _patch_side(size: int) -> int:
    """The patch score's window at `size`: PATCH at DETAIL_SIZE, at most the whole window."""
    return min(PATCH * size // DETAIL_SIZE, size - 2 * _margin(size))


def _margin(size: int) -> int:
    return max(SHIFT + 1, round(MARGIN * size / DETAIL_SIZE))


class DetailMatch(NamedTuple):
    """Detail scores of n pairs and where they were taken (the report shows that alignment)."""

    whole: torch.Tensor  # (n,) NCC of the whole window
    patch: torch.Tensor  # (n,) best NCC of a window of the patch score's side
    shift: torch.Tensor  # (n, 2) dy, dx within SHIFT added to the alignment, px at index.size
    at: torch.Tensor  # (n,) which of the alignments given (0 for detail_scores)
    window: torch.Tensor  # (n, side, side) the query's band-passed window they were taken on


def band_queries(index: DetailIndex, queries01: np.ndarray, block: int = 512) -> torch.Tensor:
    """(N, size, size): the queries resized to the index's size and band-passed, once per query;
    the scores below warp these per pair. The filter is isotropic, so for the search's small
    angles and zooms this is nearly what warping first gives, for one band-pass per query
    instead of one per pair (about half the cost of a pair's detail scores). `block` queries at
    a time (each image is filtered alone, so the result is the same): 10,000 at once took twice
    as long, their temporaries out of the cache."""
    starts = range(0, len(queries01), block)
    parts = [_band(_resize(queries01[i : i + block], index.size)) for i in starts]
    return torch.cat(parts) if parts else torch.zeros(0, index.size, index.size)


def detail_scores(
    index: DetailIndex, banded: torch.Tensor, refs: torch.Tensor, thetas: torch.Tensor
) -> DetailMatch:
    """Per pair: its query's band_queries image banded[i] warped by thetas[i] (an affine_grid
    map in normalised coordinates, as register.py finds it) against training image refs[i], at
    the best whole-pixel shift within SHIFT (by band-passed NCC: a shift chosen on the residual
    alone would chase the anatomy the residual's norm leaves out)."""
    return _scores_at(index, _warped(index, banded, thetas, _margin(index.size) - SHIFT), refs)


def _warped(
    index: DetailIndex, banded: torch.Tensor, thetas: torch.Tensor, margin: int
) -> torch.Tensor:
    """(n, side, side): banded[i] warped by thetas[i], `margin` px cut at each side."""
    return warp_affine(banded, thetas[:, None], index.size, margin=margin)[:, 0]


def best_detail_scores(
    index: DetailIndex, banded: torch.Tensor, refs: torch.Tensor, thetas: torch.Tensor
) -> DetailMatch:
    """Per pair, at the one of A alignments thetas (n, A, 2, 3) of banded[i] (band_queries)
    against refs[i] whose whole-window detail NCC is the largest (the patch score, the costly
    one, only there)."""
    n, inner = len(refs), _margin(index.size) - SHIFT
    best, at = torch.full((n,), -2.0), None
    which = torch.zeros(n, dtype=torch.long)
    for j in range(thetas.shape[1]):  # one alignment at a time: the windows stay in cache
        warped = _warped(index, banded, thetas[:, j], inner)
        whole = _scores_at(index, warped, refs, patch=False).whole
        better = whole > best
        best = torch.where(better, whole, best)
        at = warped if at is None else torch.where(better[:, None, None], warped, at)
        which[better] = j
    return _scores_at(index, at, refs)._replace(at=which)


def local_detail_scores(
    index: DetailIndex, windows: torch.Tensor, refs: torch.Tensor
) -> torch.Tensor:
    """(n,) per pair: the query's aligned band-passed window (DetailMatch.window, the one the
    patch score was taken on) against refs[i], the best NCC of the local windows, each with the
    anatomy projected out of it alone. The training windows are free of it already, so the
    query's projection changes only its norm: x.r / sqrt(|x|^2 - |B'x|^2), without forming the
    residual (a quarter less of the score's cost)."""
    best = torch.full((len(refs),), -1.0)
    for p, basis in enumerate(index.local_bases):
        x = _local_window(windows, p, basis)
        residual2 = x.square().sum(1) - (x @ basis).square().sum(1)
        dot = (x * index.local_refs[refs, p].float()).sum(1)
        ncc = dot / residual2.clamp(min=0).sqrt().clamp(min=1e-12)
        best = torch.maximum(best, ncc)
    return best.clamp(-1, 1)


def local_detail_scores_at(
    index: DetailIndex, banded: torch.Tensor, refs: torch.Tensor, thetas: torch.Tensor
) -> torch.Tensor:
    """local_detail_scores with banded[i] (band_queries) warped by thetas[i] (n, 2, 3), taken
    there (no shift search: the alignment is the one to score)."""
    return local_detail_scores(index, _query_window(index, banded, thetas), refs)


def pair_windows(
    index: DetailIndex, banded: torch.Tensor, refs: torch.Tensor, thetas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows the local detail score compares, for the pair verifier: banded[i]
    (band_queries) warped by thetas[i] (n, 2, 3), and training image refs[i]'s band-passed
    window (zero mean, unit norm); each (n, side, side)."""
    return _query_window(index, banded, thetas), index.bands[refs]


def grid_axis(size: int, margin: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The normalised coordinates (affine_grid's, align_corners=False) of the pixels along
    either side of a size x size field, less `margin` px each side."""
    return ((torch.arange(size, dtype=dtype) * 2 + 1) / size - 1)[margin : size - margin]


def _query_window(index: DetailIndex, banded: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """(n, side, side): banded[i] warped by thetas[i], the margin cut."""
    return _warped(index, banded, thetas, _margin(index.size))


def _scores_at(
    index: DetailIndex, warped: torch.Tensor, refs: torch.Tensor, patch: bool = True
) -> DetailMatch:
    """detail_scores of band-passed, warped queries (n, side + 2 SHIFT, side + 2 SHIFT: the
    window and the shift search's reach) against refs (n,); the patch score only if `patch`
    (else NaN)."""
    from .register import _shift_ncc

    size = index.size
    refs_w = index.windows[refs]
    n, side = len(refs_w), refs_w.shape[-1]
    lags = 2 * SHIFT + 1
    where = _shift_ncc(warped[:, None], index.bands[refs][:, None], SHIFT)[:, 0].argmax(1)
    windows = warped.unfold(1, side, 1).unfold(2, side, 1)  # (n, lags, lags, side, side) view
    aligned = windows[torch.arange(n), where // lags, where % lags]
    shift = SHIFT - torch.stack([where // lags, where % lags], 1).float()  # as register's
    q_res = remove(aligned, index.basis)
    whole = F.cosine_similarity(q_res.flatten(1), refs_w.flatten(1), dim=1).clamp(-1, 1)
    local = torch.full_like(whole, float("nan"))
    if patch:
        stats = tuple(w[refs] for w in index.window_stats)
        local = patch_ncc(q_res, refs_w, _patch_side(size), STRIDE, stats)
    return DetailMatch(whole, local, shift, torch.zeros(n, dtype=torch.long), aligned)


def unwarped_best(
    index: DetailIndex, banded: torch.Tensor, films: np.ndarray, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Per query (its band_queries image), the one of its candidate training films (Q, F) (-1
    pad) whose detail window, the anatomy projected out, correlates best with the query's as it
    is (the whole-window detail score at the identity, without its shift search, on
    UNWARPED_POOL-pooled windows), and that correlation ((Q,) each; -1 and -inf where it has
    none). One matrix product with every training film per block of queries, then the
    candidates' columns: it finds the source of a blend left in place that no route ranks near
    the top, and which of a patient's films a copy was made of when the embedding picked
    another."""
    margin = _margin(index.size)
    refs = _pooled_unit(index.windows)
    best = np.full(len(films), -1, dtype=np.int64)
    value = np.full(len(films), -np.inf, dtype=np.float32)
    for start in range(0, len(films), block):
        rows = slice(start, start + block)
        windows = banded[rows, margin:-margin, margin:-margin]
        cand = torch.as_tensor(films[rows])
        sims = (_pooled_unit(remove(windows, index.basis)) @ refs.T).gather(1, cand.clamp(min=0))
        top = torch.where(cand >= 0, sims, torch.tensor(-float("inf"))).max(1)
        found = top.values.isfinite()
        best[rows] = torch.where(found, cand[torch.arange(len(cand)), top.indices], -1).numpy()
        value[rows] = top.values.numpy()
    return best, value


UNWARPED_POOL = 2  # px: the unwarped route compares its windows average-pooled this much (a
# quarter of the cost; the band's structures are 2-6 px wide at DETAIL_SIZE)


def _pooled_unit(windows: torch.Tensor) -> torch.Tensor:
    """(n, d) windows (n, side, side) average-pooled by UNWARPED_POOL, zero-mean, unit norm."""
    return F.normalize(_flat_zero_mean(F.avg_pool2d(windows[:, None], UNWARPED_POOL)[:, 0]), dim=1)
