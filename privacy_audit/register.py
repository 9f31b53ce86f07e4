"""Registration of a query with its candidate training images: the best normalised
cross-correlation over a small transform search (mirror, rotation, scale, shift), and a
patch-level score at the alignment found.

What a memorised sample looks like in practice: the training image slightly rotated, scaled or
shifted, re-contrasted or blurred, or only part of it, mixed into another image. Chest films all
look alike at low frequency, so the comparison runs on band-passed images (a difference of
Gaussians): the fine structure that makes a film this patient's, which brightness, contrast,
gamma and a light blur leave in place. Whole-image NCC catches aligned copies; the best 12x12
window (a quarter of the aligned field each side) catches a copied region inside a new image.

Cost: the transforms are applied to the query (once per query, not per candidate); a candidate
is one centre window, correlated with every shifted window of every warped query by a grouped
convolution (window norms from running sums), coarse-to-fine: 16x16 over the whole search, then
for the best few candidates 32x32 around the best coarse transform (angle and zoom steps at
whole-pixel shifts, then half-pixel offsets around the best of those); for each query's best
candidate and each route's nearest, at unrotated zooms too. Blocks of
queries run one per thread, each with one intra-op thread (blocks.map_blocks): these are
thousands of small operations, which split across threads wait at a barrier each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .augment import gaussian_blur
from .blockmatch import MIN_AGREE, realign
from .blocks import map_blocks
from .detail import (
    DetailIndex,
    anatomy_basis,
    band_queries,
    best_detail_scores,
    detail_scores,
    grid_axis,
    local_detail_scores,
    local_detail_scores_at,
)
from .detail import remove as remove_anatomy
from .kernels import warp_affine, window_energy
from .windows import area_resize, patch_ncc, window_stats

FIELD = 32  # band-passed images are compared at (at most) this size
COARSE = 16  # the whole transform search runs at this size
COARSE_SHIFT = 2  # px at COARSE: +-4 px of a 64x64 image
FINE_SHIFT = 3  # px at FIELD, around the coarse shift
ANGLES = (-6.0, -3.0, 0.0, 3.0, 6.0)  # degrees
ZOOMS = (0.94, 1.0, 1.07, 1.14, 1.22)  # query magnification undone (>1: crop+resize, zoom in)
FINE_ANGLE_STEP = 1.5
FINE_ZOOM_STEP = 0.03
PATCH = 12  # px at FIELD: the window of the patch-level score
PATCH_STRIDE = 4
BAND = (0.5, 2.0)  # sigmas (px at FIELD) of the difference of Gaussians
ROUTE_ANATOMY = 20  # components projected out of the coarse windows for the candidate route
MIRROR_GAP = 0.1  # coarse NCC: a wide pair whose other mirror's best comes this close is also
# scored there (_fine_search): the sources of the planted copies aligned mirrored that way came
# within 0.03-0.06, a copy's median gap is 0.28 (scratch /work/exp/s27/gap.py)
REFINE = 1  # candidates per query by coarse NCC finely registered (and each route's nearest)
BLOCK = 128  # queries a thread registers at a time (blocks.map_blocks)


def band_pass(images01: np.ndarray | torch.Tensor, size: int = FIELD) -> torch.Tensor:
    """(N, size, size): area-resized to `size` (when larger), difference of Gaussians."""
    x = torch.as_tensor(np.asarray(images01, dtype=np.float32))[:, None]
    if max(x.shape[-2:]) > size:
        x = area_resize(x, size)
    n = len(x)
    low = gaussian_blur(x, torch.full((n,), BAND[1]))
    return (gaussian_blur(x, torch.full((n,), BAND[0])) - low)[:, 0]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Flattened, zero-mean, unit-norm rows (last two dims flattened)."""
    x = x.flatten(-2)
    x = x - x.mean(-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _centre(x: torch.Tensor, margin: int) -> torch.Tensor:
    return x[..., margin : x.shape[-2] - margin, margin : x.shape[-1] - margin]


@dataclass(frozen=True)
class Transform:
    """The transform undone from the query: mirror, rotation (degrees), zoom, shift (px of the
    field, query relative to the training image)."""

    mirror: bool
    angle: float
    zoom: float
    dy: float = 0.0
    dx: float = 0.0

    def theta(self, size: int) -> torch.Tensor:
        """The affine_grid map: output pixel u samples the query at zoom * R(angle) * M (u - shift)
        (normalised coordinates; the shift given in px of an image of `size`)."""
        a = math.radians(self.angle)
        c, s = math.cos(a) * self.zoom, math.sin(a) * self.zoom
        m = -1.0 if self.mirror else 1.0
        dx, dy = 2 * self.dx / size, 2 * self.dy / size  # the shift is of the output
        rows = [[c * m, -s, -(c * m * dx - s * dy)], [s * m, c, -(s * m * dx + c * dy)]]
        return torch.tensor(rows, dtype=torch.float32)

    def to_json(self, size: int) -> dict:
        scale = size / FIELD
        return {  # the query relative to the training image
            "mirror": self.mirror,
            "rotation_deg": round(self.angle, 2),
            "scale": round(self.zoom, 3),
            "shift_px": [round(-self.dy * scale, 1), round(-self.dx * scale, 1)],
        }


COARSE_TRANSFORMS = [
    Transform(mirror, angle, zoom) for mirror in (False, True) for angle in ANGLES for zoom in ZOOMS
]
ROUTE_MARGIN = 0.03  # how far detail_route_best's pick must lead the pool's second: on the
# Kermany films 57-60% of real images' picks do, and 6 of the 7 sources of missed copies it finds
ROUTE_TRANSFORMS = [  # detail_route_best's: fewer than the coarse search's, for a wider pool;
    # unmirrored (on the planted set the route found no mirrored copy's source with the mirror
    # too: 974 of 1,000 flagged with it, 975 without, for half its cost)
    Transform(False, angle, zoom)
    for angle in (-4.0, 0.0, 4.0)
    for zoom in (1.0, 1.1, 1.2)
]


@dataclass
class RegistrationIndex:
    """The training images prepared once: band-passed centre windows, unit norm, at both sizes."""

    coarse: torch.Tensor  # (N, (COARSE-2s)^2)
    fine: torch.Tensor  # (N, FIELD-2s, FIELD-2s), band-passed, not normalised
    fine_unit: torch.Tensor  # (N, (FIELD-2s)^2)
    route_anatomy: torch.Tensor  # (m, (COARSE-2s)^2): what the training films share (detail.py)
    route: torch.Tensor  # (N, (COARSE-2s)^2) coarse windows without it, unit norm
    detail: DetailIndex
    fine_windows: tuple[torch.Tensor, torch.Tensor]  # window_stats of `fine` (the patch score)
    whole: torch.Tensor  # (N, FIELD, FIELD) band-passed, uncut: what the aligner sees

    @classmethod
    def build(cls, images01: np.ndarray, block: int = 4096) -> RegistrationIndex:
        coarse, fine, whole = [], [], []
        for i in range(0, len(images01), block):
            bp = band_pass(images01[i : i + block])
            whole.append(bp)
            fine.append(_centre(bp, FINE_SHIFT))
            coarse.append(_centre(_to_coarse(bp), COARSE_SHIFT))
        fine_t, coarse_t = torch.cat(fine), torch.cat(coarse)
        route_basis = anatomy_basis(coarse_t, ROUTE_ANATOMY)
        route = _unit(remove_anatomy(coarse_t, route_basis))
        detail = DetailIndex.build(images01)
        windows = window_stats(fine_t, PATCH, PATCH_STRIDE)
        parts = (route_basis, route, detail, windows, torch.cat(whole))
        return cls(_unit(coarse_t), fine_t, _unit(fine_t), *parts)


def coarse_band(images01: np.ndarray, block: int = 4096) -> torch.Tensor:
    """(Q, COARSE, COARSE): the images band-passed and area-downsampled to COARSE, as the
    candidate routes compare them (computed once per query for both)."""
    parts = [_to_coarse(band_pass(images01[i : i + block])) for i in range(0, len(images01), block)]
    return torch.cat(parts) if parts else torch.zeros(0, COARSE, COARSE)


def _to_coarse(bp: torch.Tensor) -> torch.Tensor:
    """(N, COARSE, COARSE): band-passed images (N, FIELD, FIELD) area-downsampled."""
    return area_resize(bp[:, None], COARSE)[:, 0]


def band_pass_descriptors(small: torch.Tensor, basis: torch.Tensor) -> list[torch.Tensor]:
    """Queries (their coarse_band images) as RegistrationIndex.route holds the training images,
    as is and mirrored: a candidate route of its own (a copy mixed into another image keeps its
    fine structure when its thumbnail no longer looks like the original)."""
    return [
        _unit(remove_anatomy(_centre(view, COARSE_SHIFT), basis))
        for view in (small, small.flip(-1))
    ]


def detail_route_best(
    index: RegistrationIndex, small: torch.Tensor, pool: np.ndarray, block: int = BLOCK
) -> np.ndarray:
    """(Q,) for each query (its coarse_band image), the image of its `pool` (Q, P) of training
    images (-1 pad) whose
    band-passed coarse window, the shared anatomy projected out (`index.route`), correlates best
    with the query's at any ROUTE_TRANSFORMS transform and coarse shift, if it stands out of the
    pool by ROUTE_MARGIN (else -1, as for an empty pool). A candidate route for blends: the
    encoder ranks a blended, cropped copy's source among its 20 nearest but not its 10, and the
    fixed-alignment band route not at all, while its detail, found at its transform, stands out
    of that pool (docs/privacy-audit.md)."""
    grid = _affine_grid(_theta_batch(_params(ROUTE_TRANSFORMS), COARSE), COARSE)

    def one(start: int) -> np.ndarray:
        cand = torch.as_tensor(pool[start : start + block])
        warped = _warp_shared(small[start : start + block], grid)
        sims = _route_ncc(index, warped, cand.clamp(min=0))
        sims = torch.where(cand >= 0, sims, torch.tensor(-float("inf")))
        top = sims.topk(min(2, sims.shape[1]), dim=1)
        best = cand[torch.arange(len(cand)), top.indices[:, 0]]
        margin = top.values[:, 0] - (top.values[:, 1] if sims.shape[1] > 1 else -float("inf"))
        keep = top.values[:, 0].isfinite() & (margin >= ROUTE_MARGIN)
        return torch.where(keep, best, -1).numpy()

    out = map_blocks(one, range(0, len(pool), block), False, "detail route")
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _route_ncc(index: RegistrationIndex, warped: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """(b, P): for query i warped at T transforms (`warped` (b, T, COARSE, COARSE)),
    the best cosine over transforms and shifts between a window without the anatomy and each
    candidate's `index.route` (_route_scores)."""
    return _route_scores(index, warped, cand).amax((1, 3, 4))


def _route_scores(
    index: RegistrationIndex, warped: torch.Tensor, cand: torch.Tensor
) -> torch.Tensor:
    """(b, T, P, L, L): the cosine at every transform and coarse shift between query i's window
    without the anatomy and each candidate's `index.route` (which is zero-mean and free of the
    anatomy already, so the window's projection changes only its norm: |x|^2 - n mean^2 -
    |B x|^2)."""
    b, t = warped.shape[:2]
    side = COARSE - 2 * COARSE_SHIFT
    refs = index.route[cand].view(*cand.shape, 1, side, side)
    if cand.shape[1] == 1:  # a reference per query: one grouped convolution (ten times faster)
        x = warped.transpose(0, 1)  # (T, b, COARSE, COARSE): query i is group i
        num = F.conv2d(x, refs.view(b, 1, side, side), groups=b).transpose(0, 1)[:, :, None]
    else:  # many: a convolution per query
        num = torch.stack([F.conv2d(warped[i][:, None], refs[i]) for i in range(b)])
    basis = index.route_anatomy.view(-1, 1, side, side)
    anatomy = F.conv2d(warped.reshape(b * t, 1, COARSE, COARSE), basis).square().sum(1)
    energy = window_energy(warped, side)
    norm2 = energy - anatomy.view(b, t, *energy.shape[-2:])
    return num / norm2.clamp(min=1e-12).sqrt()[:, :, None]


ALIGN_TRANSFORMS = [  # detail_route_alignment's: the route's, as they are and mirrored
    Transform(mirror, t.angle, t.zoom) for mirror in (False, True) for t in ROUTE_TRANSFORMS
]


def detail_route_alignment(
    index: RegistrationIndex, moving: torch.Tensor, refs: torch.Tensor
) -> torch.Tensor:
    """(n, 5) per pair (the query band-passed at FIELD, `moving` (n, FIELD, FIELD), and training
    image refs[i]): the ALIGN_TRANSFORMS transform and coarse shift (px of FIELD) at which the
    pair's coarse windows correlate best with the shared anatomy projected out, as the detail
    route compares them. The registration aligns by the whole band-passed window, which the
    anatomy every film shares and, in a partial copy, the other patient's film can pull to a
    wrong mirror, rotation or zoom; the copied film's own detail peaks at its own transform."""
    params = _params(ALIGN_TRANSFORMS)
    grid = _affine_grid(_theta_batch(params, COARSE), COARSE)
    scores = _route_scores(index, _warp_shared(_to_coarse(moving), grid), refs[:, None])
    return _coarse_transform(params, scores.flatten(1).argmax(1))


@dataclass
class Registered:
    """Per (query, candidate): whole-image NCC, patch NCC, and the transform found."""

    ncc: np.ndarray  # (Q, k), -inf where no candidate
    patch: np.ndarray  # (Q, k)
    detail: np.ndarray  # (Q, k) whole-window NCC with the shared anatomy projected out
    detail_patch: np.ndarray  # (Q, k) the same over DETAIL_PATCH windows
    detail_local: np.ndarray  # (Q, k) the same windows, the anatomy projected out of each alone
    transforms: dict[tuple[int, int], Transform]  # for the finely registered pairs
    detail_at: dict[tuple[int, int], tuple[Transform, Transform, Transform]]  # where detail,
    # detail_patch and detail_local were taken (the alignment that scored each best)


def _params(transforms: list[Transform]) -> torch.Tensor:
    """(T, 5): mirror, angle, zoom, dy, dx."""
    return torch.tensor([[t.mirror, t.angle, t.zoom, t.dy, t.dx] for t in transforms])


def _theta_batch(p: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 5) transform parameters -> (N, 2, 3) affine_grid maps (as Transform.theta)."""
    a = torch.deg2rad(p[:, 1])
    c, s = torch.cos(a) * p[:, 2], torch.sin(a) * p[:, 2]
    m = 1.0 - 2.0 * p[:, 0]
    dy, dx = 2 * p[:, 3] / size, 2 * p[:, 4] / size
    row0 = torch.stack([c * m, -s, -(c * m * dx - s * dy)], 1)
    row1 = torch.stack([s * m, c, -(s * m * dx + c * dy)], 1)
    return torch.stack([row0, row1], 1)


def _warp_shared(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x (N, H, W) under the same T maps each, `grid` (T, size, size, 2) -> (N, T, size, size):
    the images as the channels of one sample, so neither the grid nor the images are copied N
    (or T) times."""
    t, size = grid.shape[:2]
    out = F.grid_sample(
        x[None],
        grid.reshape(1, t * size, size, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.view(len(x), t, size, size)


def _affine_grid(thetas: torch.Tensor, size: int, margin: int = 0) -> torch.Tensor:
    """F.affine_grid(thetas, [N, 1, size, size], align_corners=False) elementwise, less `margin`
    px each side: the grids _warp_shared samples every image at (kernels.warp_affine computes
    the same coordinates in its loop). Each coordinate is written in place in one pass ((a*x +
    c) + b*y, the sum of a row and a column; the library's grid to within a rounding) to a
    contiguous plane, the grid a view of the two (grid_sample reads any strides)."""
    axis = grid_axis(size, margin, thetas.dtype)
    side = len(axis)
    xs, ys = axis[None, None, :], axis[None, :, None]
    t = thetas[:, :, :, None, None]
    planes = torch.empty(2, len(thetas), side, side, dtype=thetas.dtype)
    for c in range(2):
        torch.add(t[:, c, 0] * xs + t[:, c, 2], t[:, c, 1] * ys, out=planes[c])
    return planes.permute(1, 2, 3, 0)


def _shift_ncc(warped: torch.Tensor, refs: torch.Tensor, shift: int) -> torch.Tensor:
    """(N, T, S, S) warped queries, (N, K, S-2s, S-2s) zero-mean unit-norm references ->
    (N, K, T * (2s+1)^2): the NCC of each reference with its query's window at every transform
    and shift (transform-major, then shift row-major), each window's norm from
    kernels.window_energy (nothing of size windows x shifts is materialised). One reference a
    query: one grouped convolution over all queries; several: a convolution per query, written
    where it belongs (with many references a query and one thread, the grouped one is the
    slower by half, and its transform-major result would have to be copied into this order)."""
    n, t, size = warped.shape[:3]
    k, side = refs.shape[1], size - 2 * shift
    lags = 2 * shift + 1
    if k == 1:  # query n is group n of a (T, N, S, S) batch (warp_affine lays its fields out so:
        # no copy)
        x = warped.transpose(0, 1).contiguous()
        num = F.conv2d(x, refs.reshape(n, 1, side, side), groups=n)  # (T, N, L, L)
        norm = window_energy(x, side).clamp(min=0).sqrt().clamp(min=1e-8)
        return (num / norm).permute(1, 0, 2, 3).reshape(n, k, -1)
    norm = window_energy(warped, side).clamp(min=0).sqrt().clamp(min=1e-8)  # (N, T, L, L)
    out = torch.empty(n, k, t, lags, lags, dtype=warped.dtype)
    for i in range(n):
        num = F.conv2d(warped[i][:, None], refs[i, :, None])  # (T, K, L, L)
        torch.div(num.transpose(0, 1), norm[i], out=out[i])
    return out.view(n, k, t * lags * lags)


FINE_DELTAS = torch.tensor(  # around the coarse transform: angle, zoom factor (whole-pixel shifts)
    [
        [0.0, da, dz, 0.0, 0.0]
        for da in (-FINE_ANGLE_STEP, 0.0, FINE_ANGLE_STEP)
        for dz in (-FINE_ZOOM_STEP, 0.0, FINE_ZOOM_STEP)
    ]
)
PLAIN_ZOOMS = (1.0, 1.06, 1.12, 1.18)  # crop+resize zooms in without rotating
PLAIN = torch.tensor(  # unrotated transforms every wide pair is tried at (mirror, zoom)
    [[m, 0.0, z, 0.0, 0.0] for m in (0.0, 1.0) for z in PLAIN_ZOOMS]
)
IDENTITY = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]])  # a wide pair's detail is also taken
# here: a blended copy left in place, which its other film pulled to 4.5 degrees, a zoom of 0.91
# and 12 px away, had a detail z-score of -0.6 there and 3.8 here (on the planted set, scratch
# harness: 982 of 1,000 copies flagged against 981, 0 of 618 fresh each)
HALF_PIXEL = torch.tensor(  # then around the best of those: half-pixel offsets
    [[0.0, 0.0, 0.0, hy, hx] for hy in (-0.5, 0.0, 0.5) for hx in (-0.5, 0.0, 0.5)]
)


@dataclass(frozen=True)
class _Search:
    """The transforms every query is tried at, their maps and sampling grids: the coarse ones
    and PLAIN (at FIELD: it has no shift, so a query's warps serve all its wide pairs)."""

    params: torch.Tensor  # (T, 5) the coarse transforms, as _params
    grid: torch.Tensor  # (T, COARSE, COARSE, 2)
    plain_grid: torch.Tensor  # (len(PLAIN), FIELD, FIELD, 2)

    @classmethod
    def build(cls) -> _Search:
        params = _params(COARSE_TRANSFORMS)
        coarse = _affine_grid(_theta_batch(params, COARSE), COARSE)
        return cls(params, coarse, _affine_grid(_theta_batch(PLAIN, FIELD), FIELD))


@dataclass(frozen=True)
class Columns:
    """Candidates `register` refines besides each query's `refine` best by coarse NCC, as
    columns of its candidates, (Q,) or (Q, n) each: `wide` (each candidate route's nearest: a
    copy whose coarse NCC a sub-pixel shift spoiled is still refined; also tried at PLAIN),
    `narrow`, and `realign` (among those: their detail also at the detail's own alignment)."""

    wide: np.ndarray | None = None
    narrow: np.ndarray | None = None
    realign: np.ndarray | None = None

    def per_query(self, q_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Q, A), (Q, N) and (Q, R); none given: no columns."""
        return tuple(
            np.zeros((q_n, 0), np.int64) if a is None else np.asarray(a).reshape(q_n, -1)
            for a in (self.wide, self.narrow, self.realign)
        )


def register(
    index: RegistrationIndex,
    queries01: np.ndarray,
    candidates: np.ndarray,
    refine: int = REFINE,
    columns: Columns = Columns(),
    progress: bool = False,
    desc: str = "register",
    banded: torch.Tensor | None = None,
) -> Registered:
    """Coarse NCC over every transform for every candidate (-1: none); then, for the `refine`
    best candidates of each query and its `columns`, the fine search at FIELD around the best
    coarse transform (for the pairs _wide_pairs names, at the unrotated PLAIN transforms too;
    half-pixel steps) and the patch and detail scores there (for the `columns.realign` pairs
    also at the detail's own alignment: _detail_route_aligned). Unrefined candidates keep their
    coarse NCC and -inf for the other scores. Blocks of BLOCK queries run on torch's threads
    one block per thread (see blocks.map_blocks). `banded`: the queries' band_queries images, if
    the caller has them already."""
    q_n, k = candidates.shape
    if banded is None:
        banded = band_queries(index.detail, queries01)
    out = Registered(*(np.full((q_n, k), -np.inf, dtype=np.float32) for _ in range(5)), {}, {})
    search = _Search.build()
    per_query = columns.per_query(q_n)

    def one(start: int) -> dict[tuple[int, int], Transform]:
        rows = slice(start, start + BLOCK)
        extra = tuple(a[rows] for a in per_query)
        queries = (queries01[rows], banded[rows])
        return _register_block(index, search, queries, candidates[rows], refine, extra, out, start)

    for found, detail_at in map_blocks(one, range(0, q_n, BLOCK), progress, desc):
        out.transforms.update(found)  # in query order, whatever order blocks finished in
        out.detail_at.update(detail_at)
    return out


def _register_block(index, search, queries, cand_np, refine, also, out, start) -> tuple:
    """register() for the queries from row `start` on (`queries`: their images and band_queries
    images; `also`: their Columns.per_query rows): their scores written into `out`, the
    transforms found and the detail scores' alignments returned."""
    queries01, detail_banded = queries
    cand = torch.as_tensor(cand_np)
    valid, safe = cand >= 0, cand.clamp(min=0)
    bp = band_pass(queries01)
    best, where, mirrored = _coarse_ncc(index, search, bp, safe, valid)
    out.ncc[start : start + len(cand)] = best.numpy()
    wide_cols, narrow_cols, realign_cols = (torch.as_tensor(a) for a in also)
    rows, cols = _refined_pairs(best, valid, refine, torch.cat([wide_cols, narrow_cols], 1))
    if len(rows) == 0:
        return {}, {}
    refs, moving = safe[rows, cols], bp[rows]
    unit_refs = index.fine_unit[refs]
    wide = _wide_pairs(best, rows, cols, wide_cols)
    plain = _warp_shared(bp, search.plain_grid)[rows[wide]]
    found = where[rows, cols], mirrored[rows, cols]
    fine_best, chosen, flipped = _fine_search(moving, unit_refs, search.params, found, plain, wide)
    half_best, chosen = _half_pixel(moving, unit_refs, chosen)
    whole = torch.maximum(torch.maximum(fine_best, half_best), best[rows, cols])
    banded = detail_banded[rows]
    own = (cols[:, None] == realign_cols[rows]).any(1)
    local, d_whole, d_patch, d_local = _local_scores(
        index, moving, banded, refs, chosen, wide, own, flipped
    )
    strongest = _first_per_row(rows, torch.maximum(d_patch.score, d_local.score))
    _detail_realigned(index, moving, banded, refs, d_local, strongest)
    r_np, c_np = (rows + start).numpy(), cols.numpy()
    out.ncc[r_np, c_np] = whole.numpy()
    out.patch[r_np, c_np] = local.numpy()
    out.detail[r_np, c_np] = d_whole.score.numpy()
    out.detail_patch[r_np, c_np] = d_patch.score.numpy()
    out.detail_local[r_np, c_np] = d_local.score.numpy()
    pairs = list(zip(r_np.tolist(), c_np.tolist(), strict=True))
    at = zip(*(_transforms(d.at) for d in (d_whole, d_patch, d_local)), strict=True)
    return (
        dict(zip(pairs, _transforms(chosen), strict=True)),
        dict(zip(pairs, at, strict=True)),
    )


def _transforms(params: torch.Tensor) -> list[Transform]:
    """(n, 5) transform parameters (as _params) -> Transforms."""
    return [Transform(bool(p[0]), p[1], p[2], p[3], p[4]) for p in params.tolist()]


def _params_of(thetas: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 2, 3) affine_grid maps of similarity transforms (mirrored or not) -> (n, 5) transform
    parameters (as _params, the shift in px of an image of `size`): _theta_batch's inverse."""
    linear, offset = thetas[:, :, :2], thetas[:, :, 2]
    mirror = torch.linalg.det(linear) < 0
    c, s = linear[:, 1, 1], linear[:, 1, 0] * torch.where(mirror, -1.0, 1.0)
    shift = -torch.linalg.solve(linear, offset) * (size / 2)  # (dx, dy): theta's t = -L d
    angle, zoom = torch.rad2deg(torch.atan2(s, c)), torch.hypot(c, s)
    return torch.stack([mirror.float(), angle, zoom, shift[:, 1], shift[:, 0]], 1)


def _coarse_ncc(index, search: _Search, bp, safe, valid) -> tuple[torch.Tensor, ...]:
    """(B, k) best NCC over every coarse transform and shift (-inf: no candidate), where it
    was found (B, k) (transform-major, then shift), and where the best of the other mirror was
    where it comes within MIRROR_GAP of it (B, k; else -1)."""
    b, k = safe.shape
    warped = _warp_shared(_to_coarse(bp), search.grid)
    side = COARSE - 2 * COARSE_SHIFT
    refs = index.coarse[safe].view(b, k, side, side)
    flat = _shift_ncc(warped, refs, COARSE_SHIFT)
    half = flat.shape[2] // 2  # COARSE_TRANSFORMS: the unmirrored half first
    (as_is, at_as_is), (mirror, at_mirror) = flat[..., :half].max(2), flat[..., half:].max(2)
    unmirrored = as_is >= mirror  # the first on ties, as one max over both halves
    best = torch.maximum(as_is, mirror)
    where = torch.where(unmirrored, at_as_is, at_mirror + half)
    other = torch.where(unmirrored, at_mirror + half, at_as_is)
    other = torch.where((as_is - mirror).abs() < MIRROR_GAP, other, -1)
    return torch.where(valid, best, torch.tensor(-float("inf"))), where, other


def _refined_pairs(best, valid, refine: int, also) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of each query's `refine` best candidates that exist, and of its `also`
    columns (B, A) not among the earlier ones."""
    top = best.argsort(1, descending=True)[:, :refine]
    keep = torch.ones_like(top, dtype=torch.bool)
    for col in also.T:
        keep = torch.cat([keep, ~(top == col[:, None]).any(1, keepdim=True)], 1)
        top = torch.cat([top, col[:, None]], 1)
    rows = torch.arange(len(best))[:, None].expand_as(top).reshape(-1)
    cols = top.reshape(-1)
    keep = keep.reshape(-1) & valid[rows, cols]
    return rows[keep], cols[keep]


def _wide_pairs(best, rows, cols, also) -> torch.Tensor:
    """Which refined pairs are also tried at the PLAIN transforms: each query's best candidate
    by coarse NCC and its `also` columns (B, A) (each candidate route's nearest)."""
    return (cols == best.argmax(1)[rows]) | (cols[:, None] == also[rows]).any(1)


def _coarse_transform(coarse_params: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(n, 5) the coarse transform and shift found, the shift in px of FIELD."""
    lags_c = (2 * COARSE_SHIFT + 1) ** 2
    t_i, lag = where // lags_c, where % lags_c
    scale = FIELD / COARSE
    base = coarse_params[t_i].clone()
    base[:, 3] = (COARSE_SHIFT - lag // (2 * COARSE_SHIFT + 1)) * scale
    base[:, 4] = (COARSE_SHIFT - lag % (2 * COARSE_SHIFT + 1)) * scale
    return base


def _fine_search(moving, unit_refs, coarse_params, found, plain, wide) -> tuple[torch.Tensor, ...]:
    """_best_shift around the best coarse transform (`found`: where it is, and where the other
    mirror's best is if within MIRROR_GAP, else -1; (n,) each) and, for the `wide` pairs (n,)
    bool, at every whole-pixel shift of the PLAIN transforms too (`plain`: their queries warped
    so, (w, len(PLAIN), FIELD, FIELD)): at 16x16, a copy shifted by part of a pixel, or cropped
    and resized, can rank a wrong mirror, rotation or zoom above its own at every coarse
    transform, and a memorised sample is mostly unrotated. The better result per pair (the first
    on ties), and (rows, (w, 5) alignments) for the wide pairs whose mirrors nearly tie: the
    other mirror's best coarse transform at its best whole-pixel shift, where _local_scores
    takes the detail scores too. Chest films are nearly symmetric, and the whole window's NCC
    picks a rotated copy's mirror image rotated the other way about as often as the copy when
    part of the query is another film, or the rotation falls between the coarse steps (on the
    planted set, scratch harness: 981 of 1,000 copies flagged with this, 980 without; a plain
    rotated, shifted copy was missed, aligned mirrored at -7.5 degrees; deciding by the fine
    whole-window NCC instead swapped that miss for another)."""
    where, mirrored = found
    near = _around(_coarse_transform(coarse_params, where))
    thetas = _theta_batch(near.reshape(-1, 5), FIELD).view(*near.shape[:2], 2, 3)
    fine, chosen = _best_shift(warp_affine(moving, thetas, FIELD), unit_refs, near)
    rows = torch.nonzero(wide).flatten()
    if len(rows):
        other, at = _best_shift(plain, unit_refs[rows], PLAIN.expand(len(rows), -1, -1))
        better = other > fine[rows]
        fine[rows] = torch.where(better, other, fine[rows])
        chosen[rows] = torch.where(better[:, None], at, chosen[rows])
    rows, flipped = torch.nonzero(wide & (mirrored >= 0)).flatten(), chosen[:0]
    if len(rows):
        base = _coarse_transform(coarse_params, mirrored[rows])[:, None]
        thetas = _theta_batch(base[:, 0], FIELD)[:, None]
        _, flipped = _best_shift(warp_affine(moving[rows], thetas, FIELD), unit_refs[rows], base)
    return fine, chosen, (rows, flipped)


def _around(base: torch.Tensor) -> torch.Tensor:
    """(n, T, 5): the FINE_DELTAS angle and zoom steps around each (n, 5) transform."""
    near = base[:, None].repeat(1, len(FINE_DELTAS), 1)
    near[..., 1] += FINE_DELTAS[:, 1]
    near[..., 2] *= 1 + FINE_DELTAS[:, 2]
    return near


def _best_shift(warped, unit_refs, near) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's query warped by its transforms `near` (n, T, 5) (`warped` (n, T, FIELD,
    FIELD)) at every whole-pixel shift: the best NCC of each pair and the (n, 5) transform it
    was found at."""
    n = len(near)
    side = FIELD - 2 * FINE_SHIFT
    ncc = _shift_ncc(warped, unit_refs.view(n, 1, side, side), FINE_SHIFT)[:, 0]
    fine_best, fine_where = ncc.max(1)
    lags_f = (2 * FINE_SHIFT + 1) ** 2
    t_f, lag = fine_where // lags_f, fine_where % lags_f
    chosen = near[torch.arange(n), t_f].clone()
    chosen[:, 3] += FINE_SHIFT - lag // (2 * FINE_SHIFT + 1)
    chosen[:, 4] += FINE_SHIFT - lag % (2 * FINE_SHIFT + 1)
    return fine_best, chosen


def _half_pixel(moving, unit_refs, chosen) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-pixel offsets around the best whole-pixel alignment (the centre window only): the
    best NCC and the transform it was found at."""
    n = len(moving)
    near = chosen[:, None] + HALF_PIXEL
    thetas = _theta_batch(near.reshape(-1, 5), FIELD).view(n, len(HALF_PIXEL), 2, 3)
    warped = warp_affine(moving, thetas, FIELD, margin=FINE_SHIFT)
    half_best, half_where = (_unit(warped) @ unit_refs[:, :, None])[..., 0].max(1)
    return half_best, near[torch.arange(n), half_where]


@dataclass
class _Best:
    """A detail score per pair, the alignment (n, 5) and the query's window it was taken at,
    kept at the best."""

    score: torch.Tensor
    at: torch.Tensor
    window: torch.Tensor | None  # None: not kept (the local score's)

    def offer(self, rows: torch.Tensor, score: torch.Tensor, at: torch.Tensor, window) -> None:
        better = score > self.score[rows]
        self.score[rows] = torch.where(better, score, self.score[rows])
        self.at[rows] = torch.where(better[:, None], at, self.at[rows])
        if self.window is not None:
            self.window[rows] = torch.where(better[:, None, None], window, self.window[rows])


def _with_shift(params: torch.Tensor, match, size: int) -> torch.Tensor:
    """The alignments (n, 5) the detail scores `match` were taken at: `params` and the detail
    field's shift, in px of FIELD."""
    out = params.clone()
    out[:, 3:] += match.shift * (FIELD / size)
    return out


def _local_scores(index, moving, banded, refs, chosen, wide, own, flipped=None) -> tuple:
    """At the alignment found: the patch NCC of the band-passed pair and the two detail scores
    (the shared anatomy projected out), each a _Best with the alignment it was taken at, and the
    local detail score where the patch one was taken (detail.local_detail_scores). For the
    `wide` pairs the detail scores are the larger of those at the alignment found and at the
    same shift and mirror without rotation or zoom (a memorised sample mostly sits where its
    training image did, and when part of the query is another patient's film, the whole-window
    NCC the registration maximises can prefer a slight zoom to the true identity), at the
    identity itself (IDENTITY: that film can pull the registration a whole transform away, shift
    included) and at `flipped` (rows, (w, 5) alignments of the other mirror: _fine_search's),
    then _detail_near's; for the `own` pairs also _detail_route_aligned's."""
    thetas = _theta_batch(chosen, FIELD)
    aligned = warp_affine(moving, thetas[:, None], FIELD, margin=FINE_SHIFT)[:, 0]
    windows = tuple(w[refs] for w in index.fine_windows)
    local = patch_ncc(aligned, index.fine[refs], PATCH, PATCH_STRIDE, windows)
    size = index.detail.size
    match = detail_scores(index.detail, banded, refs, thetas)
    at = _with_shift(chosen, match, size)
    d_whole = _Best(match.whole, at, match.window)
    d_patch = _Best(match.patch, at.clone(), match.window.clone())
    warped = (chosen[:, 1] != 0.0) | (chosen[:, 2] != 1.0)  # else the same alignment again
    unrotated = torch.nonzero(wide & warped).flatten()
    plain = chosen[unrotated].clone()
    plain[:, 1], plain[:, 2] = 0.0, 1.0
    moved = torch.nonzero(wide & (chosen[:, [0, 3, 4]] != 0.0).any(1)).flatten()  # else the
    # alignment found, or its unrotated try, is the identity already
    tries = [(unrotated, plain), (moved, IDENTITY.expand(len(moved), -1))]
    for rows, params in tries + ([flipped] if flipped is not None else []):
        if len(rows) == 0:
            continue
        match = detail_scores(index.detail, banded[rows], refs[rows], _theta_batch(params, FIELD))
        at = _with_shift(params, match, size)
        d_whole.offer(rows, match.whole, at, match.window)
        d_patch.offer(rows, match.patch, at, match.window)
    _detail_near(index, banded, refs, chosen, wide, d_whole, d_patch)
    _detail_route_aligned(index, moving, banded, refs, own, d_whole, d_patch)
    d_local = _Best(
        local_detail_scores(index.detail, d_patch.window, refs), d_patch.at.clone(), None
    )
    return local, d_whole, d_patch, d_local


def _detail_route_aligned(index, moving, banded, refs, own, d_whole: _Best, d_patch: _Best) -> None:
    """The detail scores of the `own` pairs (n,) bool also taken at the alignment the detail
    itself prefers (detail_route_alignment), the larger kept (in place). When the
    registration's alignment is off by a mirror, a few degrees or a zoom step (a blend or
    pasted region whose other film set it), no step around it recovers the copy (on the planted
    set, scratch harness: 978 of 1,000 copies flagged with this for the encoder's nearest
    against 975 without, and 977 for every wide pair at three times the cost; 0 of 618 fresh
    each; docs/privacy-audit.md)."""
    rows = torch.nonzero(own).flatten()
    if len(rows) == 0:
        return
    found = detail_route_alignment(index, moving[rows], refs[rows])
    match = detail_scores(index.detail, banded[rows], refs[rows], _theta_batch(found, FIELD))
    at = _with_shift(found, match, index.detail.size)
    d_whole.offer(rows, match.whole, at, match.window)
    d_patch.offer(rows, match.patch, at, match.window)


def _first_per_row(rows: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """(n,) bool: the pair of each query (`rows`) with the largest `score` (the first on ties)."""
    order = torch.argsort(score, descending=True, stable=True)
    _, first = np.unique(rows[order].numpy(), return_index=True)
    out = torch.zeros(len(rows), dtype=torch.bool)
    out[order[torch.as_tensor(first)]] = True
    return out


def _detail_realigned(index, moving, banded, refs, d_local: _Best, which) -> None:
    """For the pairs `which` (n,) bool: the local detail score also taken at the alignment the
    pair's blocks agree on (blockmatch.realign, from where the score was taken), the larger kept
    (in place). The registration aligns whole windows, and the other patient's part of a
    partial copy pulls that alignment off the copied part (on the planted set, 962 of 1,000
    copies flagged with this against 950 without; docs/privacy-audit.md). Only each query's
    pair with the strongest detail score so far: realigning every refined pair costs 2.5 times
    as much for one copy more."""
    pairs = torch.nonzero(which).flatten()
    thetas = _theta_batch(d_local.at[pairs], FIELD)
    warped = warp_affine(moving[pairs], thetas[:, None], FIELD)[:, 0]
    found, agree = realign(warped, index.fine[refs[pairs]], thetas)
    moved = agree >= MIN_AGREE
    pairs, found = pairs[moved], found[moved]
    if len(pairs) == 0:
        return
    score = local_detail_scores_at(index.detail, banded[pairs], refs[pairs], found)
    d_local.offer(pairs, score, _params_of(found, FIELD), None)


DETAIL_NEAR = (FINE_DELTAS[:, 1] != 0) | (FINE_DELTAS[:, 2] != 0)  # _around's 8 off-centre steps
DETAIL_GATE = 0.45  # detail NCC (whole or best window) a pair needs to be scored DETAIL_NEAR


def _detail_near(index, banded, refs, chosen, wide, d_whole: _Best, d_patch: _Best) -> None:
    """The detail scores of the `wide` pairs at least DETAIL_GATE also taken one fine step of
    angle and zoom around the alignment found (DETAIL_NEAR), the larger kept (in place). When
    part of a query is another patient's film, that part pulls the whole-window band-passed NCC
    the registration maximises one such step off the copied part, and the detail scores are
    sharp within a step (on the planted set, 910 of 1,000 copies flagged without this, 933
    with it; those gained had a best-window detail NCC of 0.50-0.73 before). The gate keeps
    the cost to the pairs that already show a training film's own structure: on the Kermany
    films 40 of the 1,514 refined pairs of the 536 `val` images, 962 of the 1,652 of 1,000
    planted copies (docs/privacy-audit.md)."""
    gate = torch.maximum(d_whole.score, d_patch.score) >= DETAIL_GATE
    rows = torch.nonzero(wide & gate).flatten()
    if len(rows) == 0:
        return
    near = _around(chosen[rows])[:, DETAIL_NEAR]
    thetas = _theta_batch(near.flatten(0, 1), FIELD).view(*near.shape[:2], 2, 3)
    match = best_detail_scores(index.detail, banded[rows], refs[rows], thetas)
    at = _with_shift(near[torch.arange(len(rows)), match.at], match, index.detail.size)
    d_whole.offer(rows, match.whole, at, match.window)
    d_patch.offer(rows, match.patch, at, match.window)


def align_for_display(reference01: np.ndarray, transform: Transform) -> np.ndarray:
    """The training image moved onto the query (the transform found, inverted), for the report:
    a reader compares the two pixel for pixel."""
    ref = torch.as_tensor(np.asarray(reference01, dtype=np.float32))
    size = ref.shape[-1]
    theta = transform.theta(FIELD).double()
    matrix, offset = theta[:, :2], theta[:, 2:]
    inverse = torch.linalg.inv(matrix)
    back = torch.cat([inverse, -inverse @ offset], 1).float()
    return warp_affine(ref[None], back[None, None], size)[0, 0].clamp(0, 1).numpy()
