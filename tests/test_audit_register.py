"""Registration of a query with candidate training images (privacy_audit/register.py): the fast
correlation equals the plain definition, and a warped, re-contrasted copy is found at the
transform that made it, while an unrelated image is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from privacy_audit.register import (
    RegistrationIndex,
    _shift_ncc,
    _unit,
    align_for_display,
    register,
)

from .audit_data import _patient_image


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_shift_ncc_is_the_ncc_of_every_shifted_window(one_thread):
    g = torch.Generator().manual_seed(0)
    warped = torch.randn(3, 2, 12, 12, generator=g)
    refs = _unit(torch.randn(3, 4, 8, 8, generator=g)).view(3, 4, 8, 8)
    fast = _shift_ncc(warped, refs, shift=2)
    assert fast.shape == (3, 4, 2 * 25)
    for n in range(3):
        for k in range(4):
            for t in range(2):
                for i in range(5):
                    for j in range(5):
                        window = warped[n, t, i : i + 8, j : j + 8].flatten()
                        window = window - window.mean()
                        plain = float(window @ refs[n, k].flatten() / window.norm())
                        assert fast[n, k, t * 25 + i * 5 + j] == pytest.approx(plain, abs=1e-5)


def _copy(image: np.ndarray, angle: float, dy: int, dx: int, gamma: float) -> np.ndarray:
    x = ndimage.rotate(image, angle, reshape=False, order=1, mode="nearest")
    x = ndimage.shift(x, (dy, dx), order=1, mode="nearest")
    return np.clip(x, 0, 1) ** gamma


def test_a_warped_copy_registers_at_its_transform_and_a_stranger_does_not(one_thread):
    rng = np.random.default_rng(3)
    train = np.stack([_patient_image(rng, 64) for _ in range(6)]).astype(np.float32)
    stranger = _patient_image(rng, 64).astype(np.float32)
    queries = np.stack([_copy(train[2], 4.0, 2, -3, 1.3), stranger]).astype(np.float32)
    index = RegistrationIndex.build(train)
    found = register(index, queries, np.array([[2, 0], [2, 0]]), refine=1)
    assert found.ncc[0, 0] > 0.9
    assert found.ncc[0, 0] - found.ncc[1].max() > 0.3
    transform = found.transforms[(0, 0)].to_json(64)
    assert not transform["mirror"]
    assert abs(abs(transform["rotation_deg"]) - 4.0) <= 1.5
    assert abs(transform["scale"] - 1.0) <= 0.05
    # the training image moved by the transform found lies on the copy
    aligned = align_for_display(train[2], found.transforms[(0, 0)])
    inner = (slice(8, 56), slice(8, 56))
    before = np.corrcoef(train[2][inner].ravel(), queries[0][inner].ravel())[0, 1]
    after = np.corrcoef(aligned[inner].ravel(), queries[0][inner].ravel())[0, 1]
    assert after > before and after > 0.95
