"""The copy encoder's hard phase: batches of look-alike films of different patients, in
rounds, and an encoder cached before the phase or a round existed trained on rather than
trained again."""

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


# training_key(["h0", ..., "h4"], EncoderParams(steps=100)) before the hard phase had rounds:
# an encoder cached then is the first round of one trained now, found by this key
ONE_ROUND_KEY = "fe3fc21b5142fb809a3ecccf1560f499fd3fafe8a6bf4ff0261da9a93d957187"


def test_each_hard_round_has_its_key_and_one_round_keeps_the_former_one():
    hashes = [f"h{i}" for i in range(5)]
    params = EncoderParams(steps=100)
    assert params.rounds == 2
    one = EncoderParams(steps=100, hard_rounds=1)
    assert (
        training_key(hashes, one) == ONE_ROUND_KEY == training_key(hashes, base_params(params, 1))
    )
    assert training_key(hashes, params) != ONE_ROUND_KEY
    assert training_key(hashes, params) != training_key(
        hashes, EncoderParams(steps=100, hard_rounds=3)
    )
    no_hard = EncoderParams(steps=100, hard_steps=0)
    assert no_hard.rounds == 0
    assert training_key(hashes, no_hard) == training_key(
        hashes, EncoderParams(steps=100, hard_steps=0, hard_rounds=5)
    )


def _same(a, b) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_an_encoder_cached_part_way_is_trained_on_not_trained_again(tmp_path):
    images, groups = _films()
    train = [SimpleNamespace(sha256=f"h{i}", patient_id=g) for i, g in enumerate(groups)]
    hashes = [r.sha256 for r in train]
    params = EncoderParams(input_size=16, steps=3, batch=8, hard_steps=2)  # two hard rounds
    scratch, stats = train_encoder(images, groups, params, progress=False)
    assert not stats["hardened_a_cached_encoder"] and stats["hard_rounds_trained"] == 2

    for done in (0, 1):  # the first phase alone, one round
        part = base_params(params, done)
        first, _ = train_encoder(images, groups, part, progress=False)
        cache = tmp_path / f"cache{done}"
        save_encoder(first, cache, {"key": training_key(hashes, part), "params": asdict(part)})
        config = AuditConfig(encoder=params, encoder_cache=str(cache), progress=False)
        stage, old = tmp_path / f"stage{done}", tmp_path / "old"

        model, meta, reused = _get_encoder(config, images, train, stage, old)
        assert not reused and meta["hardened_a_cached_encoder"]
        assert meta["hard_rounds_trained"] == 2 - done
        assert meta["key"] == training_key(hashes, params) != training_key(hashes, part)
        # a round after the first draws afresh: trained on from one round, the encoder is the
        # one trained in one go; the first round goes on with the first phase's draws (as
        # before there were rounds), which one hardened from the first phase draws afresh
        assert _same(model, scratch) == (done == 1)

        _, _, reused = _get_encoder(config, images, train, tmp_path / "again", old)
        assert reused  # the encoder trained on is cached in turn
