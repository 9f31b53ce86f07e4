"""The refinement of an alignment on self-built films: its grid is the aligner's transform
family, its closed-form gradient climbs where autograd's does, and it moves an alignment a few
pixels off to the right one, whatever the blocks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from privacy_audit.aligner import _inverse, thetas_of
from privacy_audit.augment import warp
from privacy_audit.detail import DetailIndex, band_queries, pair_windows, window_axis
from privacy_audit.refine import ncc_and_gradient, refine, similarity_grid

SIZE = 64


def _films(seed: int, n: int) -> np.ndarray:
    """Smooth random texture with detail in the verifier's band (sigma 1-3 px)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = [ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.5) for _ in range(n)]
    out = np.stack(out)
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


def _poses(n: int, seed: int, spread: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mirrored = torch.rand(n, generator=generator) < 0.5
    return mirrored, (torch.rand(n, 4, generator=generator) - 0.5) * 2 * spread


def _ncc(index: DetailIndex, queries01: np.ndarray, refs, mirrored, params) -> torch.Tensor:
    """The NCC of the windows the verifier is given (detail.pair_windows)."""
    banded = band_queries(index, queries01)
    q, r = pair_windows(index, banded, refs, thetas_of(mirrored, params))
    q = F.normalize((q - q.mean((1, 2), keepdim=True)).flatten(1), dim=1)
    return (q * r.flatten(1)).sum(1)


def test_grid_is_the_aligners_transform():
    mirrored, params = _poses(40, 0, torch.tensor([0.1, 0.2, 0.2, 0.2]))
    grid, _ = similarity_grid(mirrored, params, window_axis(SIZE))
    full = F.affine_grid(thetas_of(mirrored, params), [40, 1, SIZE, SIZE], align_corners=False)
    side = len(window_axis(SIZE))
    cut = (SIZE - side) // 2
    torch.testing.assert_close(grid, full[:, cut : cut + side, cut : cut + side], atol=1e-5, rtol=0)


def test_gradient_points_where_autograds_does():
    films = _films(0, 40)
    index = DetailIndex.build(films)
    rng = np.random.default_rng(1)
    queries = 0.7 * films + 0.3 * films[rng.permutation(40)]  # blended copies
    refs = torch.arange(40)
    mirrored, params = _poses(40, 1, torch.tensor([0.05, 0.05, 0.05, 0.05]))
    banded = band_queries(index, queries)
    along_y, along_x = torch.gradient(banded, dim=(1, 2))
    stack = torch.stack([banded, along_x, along_y], 1)
    ncc, gradient = ncc_and_gradient(stack, index.bands[refs], mirrored, params)
    leaf = params.clone().requires_grad_(True)
    with torch.enable_grad():  # the library's grid and sampling, differentiated by autograd
        full = F.affine_grid(thetas_of(mirrored, leaf), [40, 1, SIZE, SIZE], align_corners=False)
        side = len(window_axis(SIZE))
        cut = (SIZE - side) // 2
        grid = full[:, cut : cut + side, cut : cut + side]
        window = F.grid_sample(banded[:, None], grid, align_corners=False, padding_mode="border")
        centred = (window[:, 0] - window[:, 0].mean((1, 2), keepdim=True)).flatten(1)
        auto_ncc = (F.normalize(centred, dim=1) * index.bands[refs].flatten(1)).sum(1)
        auto_ncc.sum().backward()
    torch.testing.assert_close(auto_ncc.detach(), _ncc(index, queries, refs, mirrored, params))
    torch.testing.assert_close(ncc, auto_ncc.detach(), atol=1e-4, rtol=0)
    agreement = F.cosine_similarity(gradient, leaf.grad, dim=1)
    assert float(agreement.median()) > 0.9, agreement


def test_moves_an_alignment_a_few_pixels_off_to_the_right_one():
    sources = _films(2, 32)
    index = DetailIndex.build(sources)
    n, spread = len(sources), torch.tensor([0.08, 0.1, 0.1, 0.1])
    _, truth = _poses(n, 2, spread)
    mirrored = torch.zeros(n, dtype=torch.bool)
    x = torch.as_tensor(sources)[:, None]
    queries = warp(x, _inverse(thetas_of(mirrored, truth)))[:, 0].numpy()
    off = torch.tensor([0.03, 0.03, 0.06, 0.06])  # shifts: up to 2 px of 64
    signs = torch.where(torch.rand(n, 4, generator=torch.Generator().manual_seed(3)) < 0.5, -1, 1)
    start, refs = truth + signs * off, torch.arange(n)
    banded = band_queries(index, queries)
    found = refine(index, banded, refs, mirrored, start)
    before = ((start - truth) / spread).abs().mean(1)
    after = ((found - truth) / spread).abs().mean(1)
    assert float((after < before).float().mean()) >= 0.9
    assert float(after.median()) < 0.5 * float(before.median())
    assert bool(
        (
            _ncc(index, queries, refs, mirrored, found)
            > _ncc(index, queries, refs, mirrored, start)
        ).all()
    )
    assert torch.equal(refine(index, banded, refs, mirrored, start, block=5), found)
