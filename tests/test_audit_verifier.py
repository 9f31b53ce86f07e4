"""The pair verifier on tiny self-built films: its training pairs come from the training split
alone, it ranks altered copies (made by the challenge's own alterations, not the augmentations it
was trained on) above new patients' films, training is deterministic, and its cache is reused
only for the key it was trained for."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from conditioning.dataset import load_dataset
from privacy_audit.aligner import Aligner
from privacy_audit.challenge import altered, planted_copies
from privacy_audit.copies import build_reference, find_neighbours
from privacy_audit.detail import band_queries
from privacy_audit.encoder import EncoderParams, train_encoder
from privacy_audit.register import FIELD, register
from privacy_audit.verifier import (
    ALIGNED_DEPTH,
    CONFIG,
    WEIGHTS,
    PairVerifier,
    VerifierParams,
    load_verifier,
    make_pairs,
    save_verifier,
    score_aligned,
    score_pairs,
    strongest_pairs,
    train_verifier,
    verify,
)

from .audit_data import ENCODER_STEPS, VERIFIER_STEPS, make_patient_dataset

PARAMS = VerifierParams(steps=VERIFIER_STEPS, copies=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("verifier")
    ds = load_dataset(make_patient_dataset(root / "data"))
    train, test = ds.split("train"), ds.split("test")
    images = np.stack([ds.load_image(r) for r in train])
    groups = [r.patient_id for r in train]
    size = images.shape[-1]
    encoder, _ = train_encoder(
        images, groups, EncoderParams(input_size=size, steps=ENCODER_STEPS), progress=False
    )
    pairs = make_pairs(encoder, images, groups, size, PARAMS)
    model, stats = train_verifier(pairs, PARAMS, progress=False)
    fresh = [ds.load_image(r) for r in test]
    return root, images, groups, encoder, pairs, model, stats, fresh


def test_pairs_hold_both_kinds_from_the_training_split_alone(world):
    _, images, groups, _, pairs, _, stats, _ = world
    halves = len(set(groups)) // 2, len(set(groups)) - len(set(groups)) // 2
    assert int(pairs.labels.sum()) == 2 * PARAMS.copies  # every copy registers against its source
    assert len(pairs.labels) > 2 * PARAMS.copies  # and the other half's films give negatives
    assert pairs.queries.shape == pairs.references.shape and pairs.queries.ndim == 3
    assert min(halves) * 4 >= PARAMS.copies  # the copies are not capped on this data
    assert stats["pairs"] == len(pairs.labels) and stats["copy_pairs"] == 2 * PARAMS.copies


def test_altered_copies_score_above_new_patients(world):
    """Copies altered by the challenge's alterations (SciPy and PIL; blends and pasted regions
    into a new patient's film among them): where the pair scored is the copy and its source
    (nearly all), its verifier logit is above every new patient's, as the film is and blurred,
    recompressed and noisy (a degraded film is no copy). The smallest gap goes into the message
    (wide here: no CPU's rounding closes it)."""
    _, images, groups, encoder, _, model, _, fresh = world
    size = images.shape[-1]
    reference = build_reference(encoder, images, [str(i) for i in range(len(images))], groups, size)
    rng = np.random.default_rng(3)
    planted = planted_copies(lambda i: images[i], len(images), fresh, 60, rng)
    n_copies = len(planted.copies)
    degraded = [altered(f, ("blur", "jpeg", "noise"), rng)[0] for f in fresh]  # not copies either
    queries = np.stack(planted.copies + fresh + degraded).astype(np.float32)
    nb = find_neighbours(encoder, reference, queries, size)
    logits = score_pairs(model, reference, queries, nb)
    rows, cols = strongest_pairs(nb)
    assert np.isfinite(logits[rows, cols]).all() and np.isfinite(logits).sum() == len(rows)
    scored = dict(zip(rows.tolist(), nb.index[rows, cols].tolist(), strict=True))
    own = [i for i in range(n_copies) if scored.get(i) == planted.sources[i]]
    assert len(own) >= 0.9 * n_copies, f"{len(own)} of {n_copies} copies scored on their source"
    copies = logits[own].max(1)
    new = logits[n_copies:].max(1)
    new = new[np.isfinite(new)]
    gap = copies.min() - new.max()
    assert gap > 0, f"the lowest copy {copies.min():.2f} is below a new patient's {new.max():.2f}"


def test_aligned_term_is_each_querys_nearest_pairs_at_the_alignment_reported(world):
    """The verifier's logit at the aligner's alignment is taken on each query's ALIGNED_DEPTH
    nearest pairs by the embedding alone, and the transform the report shows for each
    (Neighbours.alignment) is the one it was measured at: scored again there, the logit is the
    same."""

    _, images, groups, encoder, _, model, _, fresh = world
    size = images.shape[-1]
    reference = build_reference(encoder, images, [str(i) for i in range(len(images))], groups, size)
    queries = np.stack(fresh).astype(np.float32)
    nb = find_neighbours(encoder, reference, queries, size)
    torch.manual_seed(0)
    logits, at = score_aligned(model, Aligner().eval(), reference, queries, nb)
    nb.aligned, nb.aligned_at = logits, at
    rows, cols = np.nonzero(np.isfinite(logits))
    for row in range(len(queries)):  # its ALIGNED_DEPTH candidates of largest cosine, no other
        scored, valid = np.isfinite(logits[row]), nb.index[row] >= 0
        assert scored.sum() == min(ALIGNED_DEPTH, valid.sum()) and not (scored & ~valid).any()
        assert nb.cosine[row, scored].min() >= nb.cosine[row, valid & ~scored].max(initial=-9)
    assert set(at) == set(zip(rows.tolist(), cols.tolist(), strict=True))
    shown = [nb.alignment(int(r), int(c), "aligned") for r, c in zip(rows, cols, strict=True)]
    thetas = torch.stack([t.theta(FIELD) for t in shown])
    refs = torch.as_tensor(nb.index[rows, cols])
    index = reference.registration.detail
    again = verify(model, index, band_queries(index, queries[rows]), refs, thetas)
    np.testing.assert_allclose(again, logits[rows, cols], atol=1e-3)


def test_the_queries_band_passed_once_give_the_scores_of_band_passing_again(world):
    """find_neighbours band-passes each query once (Neighbours.banded) for the registration,
    the unwarped route and both verifier terms: every score is exactly what band-passing the
    queries again for each of them gives."""
    _, images, groups, encoder, _, model, _, fresh = world
    size = images.shape[-1]
    reference = build_reference(encoder, images, [str(i) for i in range(len(images))], groups, size)
    rng = np.random.default_rng(5)
    planted = planted_copies(lambda i: images[i], len(images), fresh, 12, rng)
    queries = np.stack(planted.copies + fresh).astype(np.float32)
    nb = find_neighbours(encoder, reference, queries, size)
    index = reference.registration
    assert torch.equal(nb.banded, band_queries(index.detail, queries))
    again = register(index, queries, nb.index)
    kept = register(index, queries, nb.index, banded=nb.banded)
    for name in ("ncc", "patch", "detail", "detail_patch", "detail_local"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(again, name), err_msg=name)
    assert kept.detail_at == again.detail_at
    recomputed = replace(nb, banded=None)
    np.testing.assert_array_equal(
        score_pairs(model, reference, queries, nb),
        score_pairs(model, reference, queries, recomputed),
    )
    aligner = Aligner().eval()
    np.testing.assert_array_equal(
        score_aligned(model, aligner, reference, queries, nb)[0],
        score_aligned(model, aligner, reference, queries, recomputed)[0],
    )


def test_training_is_deterministic_and_the_cache_keyed(world, tmp_path, caplog):
    root, _, _, _, pairs, model, _, _ = world
    again, _ = train_verifier(pairs, PARAMS, progress=False)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    q, r = pairs.queries[:16], pairs.references[:16]
    save_verifier(model, tmp_path, {"key": "k1", "params": {"width": PARAMS.width}})
    loaded, meta = load_verifier(tmp_path, "k1")
    with torch.no_grad():
        assert torch.equal(loaded(q, r), model.eval()(q, r))
    assert meta["key"] == "k1" and load_verifier(tmp_path, "k2") is None  # another training
    (tmp_path / WEIGHTS).write_bytes(b"not safetensors")
    with caplog.at_level(logging.WARNING):
        assert load_verifier(tmp_path, "k1") is None  # retrained, never trusted
    assert WEIGHTS in caplog.text
    (tmp_path / CONFIG).write_text("{")
    assert load_verifier(tmp_path, "k1") is None


def test_the_network_takes_any_window_size():
    model = PairVerifier().eval()
    for side in (20, 52):
        x = torch.randn(3, side, side)
        with torch.no_grad():
            out = model(x, x * 2 + 1)  # each window is standardised: scale and offset do not matter
            same = model(x, x)
        assert out.shape == (3,) and torch.allclose(out, same, atol=1e-5)
