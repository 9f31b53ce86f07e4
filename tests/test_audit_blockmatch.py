"""Block-matched alignment (privacy_audit/blockmatch.py): a training film's region pasted into
another patient's film, rotated and zoomed, is realigned to its own transform from the off
alignment a whole-window registration lands at, and its local detail score recovers there;
a pair's result does not depend on the pairs computed with it."""

from __future__ import annotations

import numpy as np
import torch

from privacy_audit.blockmatch import MIN_AGREE, realign
from privacy_audit.detail import band_queries, local_detail_scores_at
from privacy_audit.kernels import warp_affine
from privacy_audit.register import (
    FIELD,
    Columns,
    RegistrationIndex,
    Transform,
    _params_of,
    _theta_batch,
    align_for_display,
    band_pass,
    register,
)

from .audit_data import _patient_image

TRUE = Transform(False, 4.0, 1.08, dy=1.0, dx=-1.5)  # px of FIELD


def _pasted_copies(rng: np.random.Generator, train: np.ndarray, truth: Transform) -> np.ndarray:
    """Each training film moved by `truth` (the query a registration at `truth` undoes), a
    60% region of it pasted into a new patient's film."""
    out = []
    for film in train:
        moved = align_for_display(film, truth)
        query = _patient_image(rng, 64).astype(np.float32)
        query[4:54, 2:50] = moved[4:54, 2:50]
        out.append(query)
    return np.stack(out).astype(np.float32)


def _row(t: Transform) -> torch.Tensor:
    return torch.tensor([[float(t.mirror), t.angle, t.zoom, t.dy, t.dx]])


def test_a_pasted_region_is_realigned_to_its_own_transform(one_thread):
    rng = np.random.default_rng(0)
    train = np.stack([_patient_image(rng, 64) for _ in range(12)]).astype(np.float32)
    index = RegistrationIndex.build(train)
    for mirror in (False, True):
        truth = Transform(mirror, TRUE.angle, TRUE.zoom, TRUE.dy, TRUE.dx)
        queries = _pasted_copies(rng, train, truth)
        # where a whole-window registration pulled by the other film lands: 3 degrees, 4% of
        # zoom and a pixel and a half off
        off = Transform(mirror, truth.angle + 3.0, truth.zoom * 0.96, truth.dy + 1.5, truth.dx)
        start = _theta_batch(_row(off), FIELD).expand(len(train), 2, 3)
        moving = band_pass(queries)
        warped = warp_affine(moving, start[:, None], FIELD)[:, 0]
        found, agree = realign(warped, index.fine, start)
        assert (agree >= MIN_AGREE).all()
        params = _params_of(found, FIELD)
        assert (params[:, 0] == float(mirror)).all()
        assert (params[:, 1] - truth.angle).abs().max() < 0.8  # found: at most 0.5
        assert (params[:, 2] / truth.zoom - 1).abs().max() < 0.035  # found: at most 0.022
        assert (params[:, 3] - truth.dy).abs().max() < 0.4
        assert (params[:, 4] - truth.dx).abs().max() < 0.4
        refs = torch.arange(len(train))
        banded = band_queries(index.detail, queries)
        before = local_detail_scores_at(index.detail, banded, refs, start)
        after = local_detail_scores_at(index.detail, banded, refs, found)
        margins = f"before <= {before.max():.2f}, after >= {after.min():.2f}"
        assert after.min() > 0.8 and after.min() > before.max() + 0.2, margins  # 0.95, 0.27


def test_a_pairs_alignment_does_not_depend_on_the_pairs_beside_it(one_thread):
    rng = np.random.default_rng(1)
    train = np.stack([_patient_image(rng, 64) for _ in range(8)]).astype(np.float32)
    index = RegistrationIndex.build(train)
    queries = _pasted_copies(rng, train, TRUE)
    start = _theta_batch(_row(TRUE), FIELD).expand(len(train), 2, 3).clone()
    start[:, :, 2] += 0.05  # a pixel off
    warped = warp_affine(band_pass(queries), start[:, None], FIELD)[:, 0]
    together, _ = realign(warped, index.fine, start)
    for i in range(len(train)):
        alone, _ = realign(warped[i : i + 1], index.fine[i : i + 1], start[i : i + 1])
        torch.testing.assert_close(alone[0], together[i], atol=1e-4, rtol=0)


def test_registered_pasted_copies_score_at_the_alignment_their_blocks_agree_on(one_thread):
    """Through register(): the local detail score of a pasted region, rotated and zoomed, is
    taken where its blocks agree (without the block matching the lowest of these scored 0.24),
    and the alignment the report shows for it is the copy's own."""
    rng = np.random.default_rng(2)
    train = np.stack([_patient_image(rng, 64) for _ in range(16)]).astype(np.float32)
    index = RegistrationIndex.build(train)
    queries = _pasted_copies(rng, train, TRUE)
    found = register(
        index,
        queries,
        np.arange(16)[:, None],
        refine=1,
        columns=Columns(wide=np.zeros(16, dtype=np.int64)),
    )
    assert found.detail_local.min() > 0.8  # found: 0.92
    local = [found.detail_at[(i, 0)][2] for i in range(16)]
    assert max(abs(t.angle - TRUE.angle) for t in local) < 1.5  # found: at most 1.0
    assert max(abs(t.zoom / TRUE.zoom - 1) for t in local) < 0.05  # found: at most 0.037
    moved = [found.detail_at[(i, 0)][1] != t for i, t in enumerate(local)]
    assert sum(moved) >= 8  # realigned, not the patch score's alignment


def test_the_strongest_pair_of_each_query_is_realigned():
    from privacy_audit.register import _first_per_row

    rows = torch.tensor([0, 0, 1, 1, 1, 3])
    score = torch.tensor([0.2, 0.5, 0.3, 0.1, 0.3, -1.0])
    assert _first_per_row(rows, score).tolist() == [False, True, True, False, False, True]


def test_transform_parameters_round_trip_through_their_maps():
    params = torch.tensor(
        [[0.0, 4.0, 1.08, 1.0, -1.5], [1.0, -5.5, 0.94, -2.0, 0.5], [1.0, 0.0, 1.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(_params_of(_theta_batch(params, FIELD), FIELD), params)
