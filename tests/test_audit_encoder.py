"""The copy encoder's hard phase: batches of look-alike films of different patients, and an
encoder trained before the phase existed hardened rather than trained again."""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import torch

from privacy_audit.audit import AuditConfig, _get_encoder
from privacy_audit.encoder import (
    HARD_GROUP,
    EncoderParams,
    base_params,
    hard_batch,
    save_encoder,
    train_encoder,
    training_key,
)


def _clustered(n_films: int = 48, cluster: int = 8):
    """Films 2 per patient; each film's neighbours: the other films of its cluster."""
    groups = [f"p{i // 2}" for i in range(n_films)]
    neighbours = np.array(
        [
            [j for j in range(i - i % cluster, i - i % cluster + cluster) if j != i]
            for i in range(n_films)
        ]
    )
    return groups, neighbours


def test_a_hard_batch_is_a_film_with_its_look_alikes_one_film_per_patient():
    groups, neighbours = _clustered()
    rng = np.random.default_rng(0)
    one = hard_batch(neighbours, groups, rng, HARD_GROUP)
    assert len(one) == HARD_GROUP
    assert len({i // 8 for i in one}) == 1  # all from the first film's cluster
    assert len({groups[i] for i in one}) == HARD_GROUP  # no patient twice: no false negative
    for _ in range(20):
        batch = hard_batch(neighbours, groups, rng, 16)
        assert len(batch) == 16
        assert len({groups[i] for i in batch}) == 16
    every = hard_batch(neighbours, groups, rng, 1000)  # more than there are patients
    assert sorted({groups[i] for i in every}) == sorted(set(groups))
    assert len(every) == len(set(groups))


def _films():
    images = np.random.default_rng(0).random((40, 16, 16), dtype=np.float32)
    groups = [f"p{i // 2}" for i in range(40)]
    return images, groups


def test_the_hard_phase_changes_the_key_and_the_first_phase_keeps_the_former_one():
    hashes = [f"h{i}" for i in range(5)]
    params = EncoderParams(steps=100)
    assert params.hard == 100
    assert training_key(hashes, params) != training_key(hashes, base_params(params))
    assert training_key(hashes, base_params(params)) == training_key(
        hashes, EncoderParams(steps=100, hard_steps=0)
    )
    assert training_key(hashes, params) != training_key(
        hashes, EncoderParams(steps=100, hard_steps=60)
    )
    other_share = EncoderParams(steps=100, hard_partial=0.5)  # another hard phase, same start
    assert training_key(hashes, params) != training_key(hashes, other_share)
    assert training_key(hashes, base_params(params)) == training_key(
        hashes, base_params(other_share)
    )


def test_an_encoder_cached_without_the_hard_phase_is_hardened_not_trained_again(tmp_path):
    images, groups = _films()
    train = [SimpleNamespace(sha256=f"h{i}", patient_id=g) for i, g in enumerate(groups)]
    hashes = [r.sha256 for r in train]
    params = EncoderParams(input_size=16, steps=3, batch=8, hard_steps=2)
    first, _ = train_encoder(images, groups, base_params(params), progress=False)
    base_key = training_key(hashes, base_params(params))
    save_encoder(
        first, tmp_path / "cache", {"key": base_key, "params": asdict(base_params(params))}
    )
    config = AuditConfig(encoder=params, encoder_cache=str(tmp_path / "cache"), progress=False)

    model, meta, reused = _get_encoder(config, images, train, tmp_path / "stage", tmp_path / "old")
    assert not reused and meta["hardened_a_cached_encoder"]
    assert meta["key"] == training_key(hashes, params) != base_key

    again, _ = train_encoder(images, groups, base_params(params), progress=False)
    direct, _ = train_encoder(images, groups, params, progress=False, start=again)
    for (name, a), b in zip(model.state_dict().items(), direct.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    scratch, stats = train_encoder(images, groups, params, progress=False)
    assert not stats["hardened_a_cached_encoder"]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), scratch.state_dict().values(), strict=True)
    )  # from scratch, the random phase's batches are drawn again: another encoder

    _, _, reused = _get_encoder(config, images, train, tmp_path / "stage2", tmp_path / "old")
    assert reused  # the hardened encoder is cached in turn
