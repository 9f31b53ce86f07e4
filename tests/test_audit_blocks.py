"""The audit's work split into blocks, one per thread (privacy_audit/blocks.py): an audit gives
the same embeddings and registrations whatever `--threads` it ran with."""

from __future__ import annotations

import numpy as np
import torch

from privacy_audit.blocks import map_blocks
from privacy_audit.encoder import CopyEncoder, embed
from privacy_audit.register import RegistrationIndex, register

from .audit_data import _patient_image


def _at_threads(n: int, work):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return work()
    finally:
        torch.set_num_threads(before)


def test_map_blocks_keeps_the_order_of_its_blocks_and_restores_the_thread_count():
    before = torch.get_num_threads()
    out = _at_threads(
        2, lambda: map_blocks(lambda s: (s, torch.get_num_threads()), range(7), False, "")
    )
    assert [s for s, _ in out] == list(range(7))
    assert {n for _, n in out} == {1}  # each block on one intra-op thread
    assert torch.get_num_threads() == before


def test_embeddings_and_registration_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(0)
    train = np.stack([_patient_image(rng, 64) for _ in range(12)]).astype(np.float32)
    queries = np.stack([_patient_image(rng, 64) for _ in range(300)]).astype(np.float32)
    torch.manual_seed(0)
    model = CopyEncoder(8, 32).eval()
    one = _at_threads(1, lambda: embed(model, queries, 64, batch=64))
    two = _at_threads(2, lambda: embed(model, queries, 64, batch=64))
    assert one.shape == (300, 32)
    assert not one.requires_grad
    assert torch.equal(one, two)

    index = RegistrationIndex.build(train)
    candidates = np.tile(np.arange(4), (len(queries), 1))
    a = _at_threads(1, lambda: register(index, queries, candidates))
    b = _at_threads(2, lambda: register(index, queries, candidates))
    for name in ("ncc", "patch", "detail", "detail_patch"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.transforms == b.transforms
