"""The learned aligner on tiny self-built films: the alignments it gives are the Transform family
the report shows, it moves a transformed film back onto its source (films it never saw), its
training is deterministic, and its cache is reused only for the key it was trained for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy_audit.aligner import (
    Aligner,
    AlignerParams,
    _homogeneous,
    _inverse,
    align,
    aligner_key,
    compose,
    load_aligner,
    save_aligner,
    thetas_of,
    train_aligner,
    transforms_of,
)
from privacy_audit.augment import draw_geometric, warp
from privacy_audit.register import FIELD, band_pass

STEPS = 400  # each stage: enough for these films to be aligned far better than left (about 70 s)
SIZE = 64  # area-resized to FIELD as the films are


def _films(seed: int, n: int) -> np.ndarray:
    """Smooth random texture, its detail in the band the aligner sees (register.band_pass)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        texture = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), SIZE / 16)
        out.append(np.clip(0.5 + 0.15 * texture / texture.std(), 0, 1))
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def trained(one_thread):
    films = _films(0, 64)
    model, stats = train_aligner(
        films, [f"p{i}" for i in range(64)], AlignerParams(steps=STEPS), False
    )
    return model, stats


def _ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)


def test_alignments_are_the_transforms_the_report_shows():
    generator = torch.Generator().manual_seed(0)
    params = (torch.rand(50, 4, generator=generator) - 0.5) * torch.tensor([0.2, 0.3, 0.4, 0.4])
    mirrored = torch.rand(50, generator=generator) < 0.5
    shown = torch.stack([t.theta(FIELD) for t in transforms_of(mirrored, params)])
    torch.testing.assert_close(thetas_of(mirrored, params), shown, atol=1e-5, rtol=0)


def test_moves_a_transformed_film_back_onto_its_source(trained):
    model, _ = trained
    sources = _films(1, 48)  # films the aligner never saw
    x = torch.as_tensor(sources)[:, None]
    limits = dict(max_rotation_deg=6.0, max_scale=0.06, min_crop=0.8, max_shift_px=2.0)
    theta = draw_geometric(tuple(x.shape), torch.Generator().manual_seed(1), **limits)
    theta[:, :, 0] *= torch.sign(torch.linalg.det(theta[:, :, :2]))[:, None]  # unmirrored
    queries = warp(x, theta)[:, 0].numpy()
    mirrored, params = align(model, queries, band_pass(sources))
    assert not mirrored.any()
    found, truth = thetas_of(mirrored, params), _inverse(theta)
    error = (found - truth).abs().mean((1, 2))
    left = (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) - truth).abs().mean((1, 2))
    assert float((error < left).float().mean()) >= 0.75
    assert float(error.median()) < 0.7 * float(left.median())
    moved = warp(torch.as_tensor(queries)[:, None], found)[:, 0]
    inner = (slice(None), slice(8, -8), slice(8, -8))  # the border the warps repeat left out
    before = _ncc(torch.as_tensor(queries)[inner], x[:, 0][inner])
    after = _ncc(moved[inner], x[:, 0][inner])
    assert float(after.median()) > float(before.median())


def test_the_stages_compose_as_their_maps_do():
    generator = torch.Generator().manual_seed(2)
    first = (torch.rand(50, 4, generator=generator) - 0.5) * torch.tensor([0.2, 0.3, 0.4, 0.4])
    then = (torch.rand(50, 4, generator=generator) - 0.5) * torch.tensor([0.1, 0.1, 0.2, 0.2])
    mirrored = torch.rand(50, generator=generator) < 0.5
    straight = torch.zeros(50, dtype=torch.bool)
    maps = _homogeneous(thetas_of(mirrored, first)) @ _homogeneous(thetas_of(straight, then))
    found = thetas_of(mirrored, compose(mirrored, first, then))
    torch.testing.assert_close(found, maps[:, :2], atol=1e-5, rtol=0)


def test_the_fine_stage_brings_an_alignment_left_off_nearer(trained):
    """Started a few pixels and degrees off the right alignment, the fine stage ends nearer it
    for most films it never saw, and nearer on the whole."""
    model, _ = trained
    sources = _films(4, 48)
    x = torch.as_tensor(sources)[:, None]
    generator = torch.Generator().manual_seed(5)
    straight = torch.zeros(len(x), dtype=torch.bool)
    truth = (torch.rand(len(x), 4, generator=generator) - 0.5) * torch.tensor([0.1, 0.1, 0.2, 0.2])
    queries = warp(x, _inverse(thetas_of(straight, truth)))
    signs = torch.where(torch.rand(len(x), 4, generator=generator) < 0.5, -1.0, 1.0)
    start = truth + signs * torch.tensor([0.03, 0.04, 0.05, 0.05])  # 1.5 px of 64 and more
    moved = warp(queries, thetas_of(straight, start))
    with torch.no_grad():
        _, then = model.fine(band_pass(moved[:, 0]), band_pass(sources))
    found = compose(straight, start, then[:, 0])
    goal = thetas_of(straight, truth)
    before = (thetas_of(straight, start) - goal).abs().mean((1, 2))
    after = (thetas_of(straight, found) - goal).abs().mean((1, 2))
    assert float((after < before).float().mean()) >= 0.75
    assert float(after.median()) < 0.6 * float(before.median())


def test_training_is_deterministic(one_thread):
    films, patients = _films(2, 16), [f"p{i // 2}" for i in range(16)]
    params = AlignerParams(steps=10, batch=8)
    first, _ = train_aligner(films, patients, params, progress=False)
    second, _ = train_aligner(films, patients, params, progress=False)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_cache_is_reused_only_for_its_key(tmp_path, trained):
    model, stats = trained
    key = aligner_key(["a", "b"], AlignerParams(steps=STEPS))
    assert key != aligner_key(["a", "c"], AlignerParams(steps=STEPS))
    assert key != aligner_key(["a", "b"], AlignerParams(steps=STEPS + 1))
    save_aligner(model, tmp_path, {"key": key, "params": {"width": 16}, **stats})
    found = load_aligner(tmp_path, key)
    assert found is not None and isinstance(found[0], Aligner)
    for name, value in model.state_dict().items():
        assert torch.equal(found[0].state_dict()[name], value), name
    assert load_aligner(tmp_path, aligner_key(["a"], AlignerParams())) is None


def test_one_patient_is_refused():
    with pytest.raises(Exception, match="too few to train the aligner"):
        train_aligner(_films(3, 4), ["p"] * 4, AlignerParams(steps=1))


def test_pairs_sharing_a_query_align_as_when_each_brings_its_own(trained):
    """score_aligned gives each query several pairs: band-passing it once must not move them."""
    model, _ = trained
    queries, refs = _films(2, 6), band_pass(_films(3, 15))
    rows = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5, 2, 4])
    shared = align(model, queries, refs, rows, block=8)  # a query's pairs across two blocks too
    own = align(model, queries[rows.numpy()], refs, block=8)
    assert torch.equal(shared[0], own[0])
    torch.testing.assert_close(shared[1], own[1], atol=0, rtol=0)
