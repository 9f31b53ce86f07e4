"""The copy encoder's training views (privacy_audit/augment.py): partial copies are what the
issue asks the encoder to see as positives, a training image blended into or pasted into
another patient's image, with the copy the larger part."""

from __future__ import annotations

import torch

from privacy_audit.augment import copy_augment, partial


def test_partial_copies_blend_or_paste_the_copy_as_the_larger_part():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(400, 1, 32, 32)
    others = torch.ones(400, 1, 32, 32)
    out = partial(x, others, g)
    share_other = out.mean((1, 2, 3))  # 0: untouched copy; otherwise the other image's share
    untouched = share_other == 0
    flat = (out == out[:, :, :1, :1]).flatten(1).all(1)  # one value everywhere: a blend
    blended = flat & ~untouched
    pasted = ~flat
    assert 0.4 < untouched.float().mean() < 0.6  # about half the batch is mixed
    assert blended.any() and pasted.any()
    assert share_other[blended].min() >= 0.15 - 1e-6 and share_other[blended].max() <= 0.45 + 1e-6
    # a pasted copy: one rectangle of the copy (65-90% of each side) inside the other image
    for image in out[pasted]:
        rows, cols = torch.nonzero(image[0] == 0, as_tuple=True)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w
        assert 0.6 * 32 <= h <= 0.92 * 32 and 0.6 * 32 <= w <= 0.92 * 32


def test_copy_augment_is_replayable_from_its_seed():
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    others = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    a = copy_augment(x, torch.Generator().manual_seed(3), others)
    b = copy_augment(x, torch.Generator().manual_seed(3), others)
    assert torch.equal(a, b)
    assert not torch.equal(a, copy_augment(x, torch.Generator().manual_seed(4), others))
