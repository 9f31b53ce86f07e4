"""Detail scores (privacy_audit/detail.py) on self-built 'films' that share their anatomy and
differ in fine detail, as chest films do: a blend of a training film into a new patient's film
and a training region pasted into one score high against their source; a new patient's film
scores low against every training film, although its plain band-passed NCC is high."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from privacy_audit.detail import DetailIndex, band_queries, detail_scores
from privacy_audit.register import _unit, band_pass

SIZE = 64


def _films(rng: np.random.Generator, n: int) -> np.ndarray:
    """One anatomy (smooth shapes, a little moved and re-scaled per patient) plus each
    patient's own fine texture."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = []
    for _ in range(n):
        dy, dx = rng.normal(0, 0.02, 2)
        film = 0.3 + 0.4 * np.exp(-((xx - 0.3 - dx) ** 2 + (yy - 0.5 - dy) ** 2) / 0.04)
        film += 0.4 * np.exp(-((xx - 0.7 - dx) ** 2 + (yy - 0.5 - dy) ** 2) / 0.04)
        film -= 0.2 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.75 - dy) ** 2) / 0.02)
        film += 0.05 * np.sin(yy * 40 + rng.uniform(0, 0.3))  # 'ribs' in every film
        film += 0.06 * ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.2)
        out.append(np.clip(film, 0, 1))
    return np.stack(out).astype(np.float32)


def _pasted(source: np.ndarray, into: np.ndarray) -> np.ndarray:
    out = into.copy()
    out[6:54, 10:58] = source[6:54, 10:58]  # 75% x 75% of the film
    return out


def test_blends_and_pasted_regions_score_above_every_new_patient(one_thread):
    rng = np.random.default_rng(0)
    train, fresh = _films(rng, 80), _films(rng, 40)
    index = DetailIndex.build(train)
    src = np.arange(20)
    blends = 0.65 * train[src] + 0.35 * fresh[src]
    pasted = np.stack([_pasted(train[i], fresh[20 + i]) for i in src])
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def scores(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        thetas = identity.expand(len(refs), 2, 3)
        match = detail_scores(index, band_queries(index, queries), torch.as_tensor(refs), thetas)
        return match.whole.numpy(), match.patch.numpy()

    blend_whole, blend_patch = scores(blends, src)
    paste_whole, paste_patch = scores(pasted, src)
    # every new patient against every training film: the best of each
    pairs = np.stack(np.meshgrid(np.arange(len(fresh)), np.arange(len(train)), indexing="ij"), -1)
    q, r = pairs.reshape(-1, 2).T
    fresh_whole, fresh_patch = (s.reshape(len(fresh), -1).max(1) for s in scores(fresh[q], r))
    margins = (
        f"fresh whole <= {fresh_whole.max():.2f}, patch <= {fresh_patch.max():.2f}; blends "
        f"whole >= {blend_whole.min():.2f}; pasted patch >= {paste_patch.min():.2f}"
    )
    assert blend_whole.min() > fresh_whole.max() + 0.2, margins
    assert paste_patch.min() > fresh_patch.max() + 0.2, margins
    assert paste_whole.min() > fresh_whole.max(), margins
    # the films share their anatomy: a plain band-passed NCC finds every new patient close
    plain = (_unit(band_pass(fresh)) @ _unit(band_pass(train)).T).max(1).values
    assert plain.median() > 0.8, plain.median()


def test_best_detail_scores_take_the_alignment_that_fits_best(one_thread):
    """Over several candidate alignments, the scores are those of the one whose whole-window
    detail NCC is highest: those the pair gets at that alignment alone."""
    from privacy_audit.detail import best_detail_scores
    from privacy_audit.register import FIELD, Transform

    rng = np.random.default_rng(2)
    train = _films(rng, 40)
    index = DetailIndex.build(train)
    query = ndimage.rotate(train[5], 3.0, reshape=False, order=1, mode="nearest")[None]
    angles = (-6.0, -3.0, 0.0, 3.0)  # the copy's own alignment is -3 degrees
    thetas = torch.stack([Transform(False, a, 1.0).theta(FIELD) for a in angles])
    banded = band_queries(index, query)
    each = [detail_scores(index, banded, torch.tensor([5]), t[None]) for t in thetas]
    whole = [float(m.whole[0]) for m in each]
    assert int(np.argmax(whole)) == 1 and whole[1] > 0.9 and max(whole[2:]) < whole[1] - 0.2
    best = best_detail_scores(index, banded, torch.tensor([5]), thetas[None])
    assert int(best.at[0]) == 1  # where they were taken: the report shows that alignment
    assert float(best.whole[0]) == pytest.approx(whole[1], abs=1e-6)
    assert float(best.patch[0]) == pytest.approx(float(each[1].patch[0]), abs=1e-6)


def test_band_passing_before_the_warp_scores_as_band_passing_after_it(one_thread):
    """band_queries band-passes each query once and the scores warp that per pair: near a
    copy's alignment (where the scores are high and decide) they stay what warping first, then
    band-passing, gives (the filter is isotropic), and the best alignment is the same."""
    from privacy_audit.detail import _band, _resize, _scores_at
    from privacy_audit.kernels import warp_affine
    from privacy_audit.register import FIELD, Transform

    rng = np.random.default_rng(5)
    train = _films(rng, 40)
    index = DetailIndex.build(train)
    queries = np.stack([ndimage.rotate(f, 3.0, reshape=False, order=1) for f in train[:12]])
    transforms = [
        Transform(m, a, z) for m in (False, True) for a in (-4.5, -3.0, -1.5) for z in (1.0, 1.03)
    ]
    thetas = torch.stack([t.theta(FIELD) for t in transforms])
    q_idx = torch.arange(len(queries)).repeat_interleave(len(thetas))
    t_idx = torch.arange(len(thetas)).repeat(len(queries))
    band_first = detail_scores(index, band_queries(index, queries)[q_idx], q_idx, thetas[t_idx])
    inner = 4  # the margin detail_scores cuts less the shift search's reach, at 64x64
    warped = warp_affine(torch.as_tensor(queries)[q_idx], thetas[t_idx][:, None], SIZE)[:, 0]
    banded = _band(_resize(warped, SIZE))[:, inner:-inner, inner:-inner]
    warp_first = _scores_at(index, banded, q_idx)
    for name in ("whole", "patch"):
        a, b = (getattr(m, name).view(len(queries), -1) for m in (band_first, warp_first))
        high = (a > 0.5) | (b > 0.5)
        assert high.any(1).all() and (a - b)[high].abs().max() < 0.02, (a - b)[high]
        assert (a.argmax(1) == b.argmax(1)).all()


def test_detail_scores_report_the_shift_they_were_taken_at(one_thread):
    """A copy shifted within the detail search's reach scores as the copy it is, and the shift
    it was found at is the copy's: the report aligns the pair where the score was measured."""
    rng = np.random.default_rng(3)
    train = _films(rng, 40)
    index = DetailIndex.build(train)
    query = np.roll(train[7], (1, -2), axis=(0, 1))[None]  # down 1 px, left 2 px
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    match = detail_scores(index, band_queries(index, query), torch.tensor([7]), identity)
    assert float(match.whole[0]) > 0.9
    assert match.shift[0].tolist() == [-1.0, 2.0]  # undone: the query is moved back


def test_the_local_score_separates_a_pasted_region_from_every_new_patient(one_thread):
    """The anatomy projected out of each window alone (not out of the whole window, where the
    other patient's part of a partial copy sets the projection): a region pasted into a new
    patient's film scores well above any new patient's film against any training film. (On the
    Kermany films it flags 4-7 more of 1,000 planted copies than the six other terms alone:
    docs/privacy-audit.md.)"""
    from privacy_audit.detail import local_detail_scores

    rng = np.random.default_rng(4)
    train, fresh = _films(rng, 80), _films(rng, 40)
    index = DetailIndex.build(train)
    src = np.arange(20)
    # a smaller region than the other test's, off-centre: no 36x36 window avoids its border
    pasted = np.stack([_pasted_corner(train[i], fresh[i]) for i in src])
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def scores(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        thetas = identity.expand(len(refs), 2, 3)
        refs_t = torch.as_tensor(refs)
        match = detail_scores(index, band_queries(index, queries), refs_t, thetas)
        local = local_detail_scores(index, match.window, refs_t)
        return local.numpy(), match.patch.numpy()

    paste_local, paste_patch = scores(pasted, src)
    pairs = np.stack(np.meshgrid(np.arange(20, 40), np.arange(len(train)), indexing="ij"), -1)
    q, r = pairs.reshape(-1, 2).T
    fresh_local = scores(fresh[q], r)[0].reshape(20, -1).max(1)
    margins = (
        f"pasted local >= {paste_local.min():.2f} (patch >= {paste_patch.min():.2f}); "
        f"fresh local <= {fresh_local.max():.2f}"
    )
    assert paste_local.min() > fresh_local.max() + 0.1, margins


def _pasted_corner(source: np.ndarray, into: np.ndarray) -> np.ndarray:
    out = into.copy()
    out[:40, 20:] = source[:40, 20:]  # 62% x 69% of the film, in a corner
    return out


def test_the_local_score_is_the_ncc_of_the_windows_without_their_anatomy(one_thread):
    """local_detail_scores skips projecting the anatomy out of the query's windows (the training
    window is free of it, so only the norm changes): it must still be, per pair, the best
    cosine of the two windows each with its own anatomy and mean projected out."""
    from privacy_audit.detail import _local_residual, local_detail_scores

    rng = np.random.default_rng(5)
    train, fresh = _films(rng, 60), _films(rng, 12)
    index = DetailIndex.build(train)
    refs = torch.as_tensor(np.r_[np.arange(12), rng.integers(0, 60, 12)])
    queries = np.concatenate([_pasted_corner(train[i], fresh[i])[None] for i in range(12)])
    queries = np.concatenate([queries, fresh])
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(refs), 2, 3)
    windows = detail_scores(index, band_queries(index, queries), refs, identity).window
    products = [
        _local_residual(windows, p, basis) * _local_residual(index.bands[refs], p, basis)
        for p, basis in enumerate(index.local_bases)
    ]
    defined = torch.stack([product.sum(1) for product in products]).amax(0)
    got = local_detail_scores(index, windows, refs)
    assert torch.allclose(got, defined, atol=2e-3), (got - defined).abs().max()
    assert got[:12].min() > got[12:].max()  # and it still tells the pasted from the fresh


def test_the_unwarped_route_picks_a_blends_source_among_its_patients_films(one_thread):
    """A blend left in place (65% of a training film, a pixel off) against every film of its
    candidate patients: the unwarped route picks its source, by a margin over every training
    film's correlation with a new patient's film; pads (-1) are never picked."""
    from privacy_audit.copies import UNWARPED_GATE
    from privacy_audit.detail import unwarped_best

    rng = np.random.default_rng(3)
    train, fresh = _films(rng, 60), _films(rng, 20)
    index = DetailIndex.build(train)
    src = np.arange(0, 40, 4)
    blends = 0.65 * np.roll(train[src], 1, axis=-1) + 0.35 * fresh[: len(src)]
    films = np.stack([np.r_[rng.permutation(np.r_[s, 40 + np.arange(12)]), -1, -1] for s in src])
    best, value = unwarped_best(index, band_queries(index, blends.astype(np.float32)), films, 3)
    assert (best == src).all()
    every = np.tile(np.r_[np.arange(60), -1], (len(fresh), 1))
    fresh_banded = band_queries(index, fresh)
    fresh_best, fresh_value = unwarped_best(index, fresh_banded, every)
    assert (fresh_best >= 0).all()
    margins = f"blends >= {value.min():.2f}, new patients <= {fresh_value.max():.2f}"
    assert value.min() > UNWARPED_GATE > fresh_value.max(), margins
    assert value.min() > fresh_value.max() + 0.2, margins
    none, nothing = unwarped_best(index, fresh_banded[:2], np.full((2, 3), -1))
    assert (none == -1).all() and np.isneginf(nothing).all()


def test_patient_films_lists_every_film_of_each_candidates_patient():
    from privacy_audit.copies import _patient_films

    groups = np.array([0, 1, 0, 2, 1, 0, 3])  # patient of each training film
    index = np.array([[2, 3, -1], [6, -1, -1], [4, 5, 3]])  # candidates (films), -1 pad
    films = _patient_films(groups, index)
    assert [sorted(int(f) for f in row if f >= 0) for row in films] == [
        [0, 2, 3, 5],
        [6],
        [0, 1, 2, 3, 4, 5],
    ]
    assert films.shape[1] == 6


def test_the_unwarped_route_names_the_film_copied_where_a_sibling_was_the_candidate(one_thread):
    """Three films a patient that differ in fine detail alone: where a route named another
    film of the source's patient (as the embedding did for a pasted copy on the Kermany films),
    the unwarped route names the film copied, and that film is finely registered as a wide
    pair; a new patient's film gets no pick."""
    from privacy_audit.copies import _refined_columns, _union, _unwarped_route, build_reference
    from privacy_audit.encoder import CopyEncoder

    rng = np.random.default_rng(4)
    base, fresh = np.repeat(_films(rng, 20), 3, axis=0), _films(rng, 10)
    own = ndimage.gaussian_filter(rng.standard_normal(base.shape), (0, 1.2, 1.2))
    train = np.clip(base + 0.04 * own / own.std(), 0, 1).astype(np.float32)
    groups = [f"p{i // 3}" for i in range(len(train))]
    torch.manual_seed(0)
    encoder = CopyEncoder().eval()
    reference = build_reference(encoder, train, [str(i) for i in range(60)], groups, SIZE)
    src = np.arange(1, 60, 6)
    queries = np.concatenate([0.65 * train[src] + 0.35 * fresh, fresh]).astype(np.float32)
    sibling = np.r_[src + 1, src + 1]  # another film of the same patient (fresh rows: any)
    index = np.stack([sibling, (sibling + 9) % 60], 1)
    picks = _unwarped_route(reference, band_queries(reference.registration.detail, queries), index)
    assert (picks[: len(src)] == src).all()
    assert (picks[len(src) :] == -1).all()
    index = _union(index, picks[:, None])
    nearest = np.zeros((len(index), 2), dtype=np.int64)
    band = [(index[:, :1], np.ones((len(index), 1)))] * 2
    wide = _refined_columns(index, nearest, band, (np.full(len(index), -1), picks)).wide
    assert (index[np.arange(len(src)), wide[: len(src), 2]] == src).all()
