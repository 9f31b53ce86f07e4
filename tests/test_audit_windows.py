"""Window sums of the audit (privacy_audit/windows.py): the box means equal the plain window
means at every stride the audit uses, the patch NCC is the best window's NCC, and the area
resize is the library's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from privacy_audit.kernels import box_mean
from privacy_audit.windows import area_resize, patch_ncc


@pytest.mark.parametrize(
    ("size", "side", "stride"), [(16, 12, 1), (32, 26, 1), (26, 12, 4), (52, 36, 4), (9, 9, 2)]
)
def test_box_mean_is_the_mean_of_every_window_at_its_stride(size, side, stride):
    x = torch.randn(3, 2, size, size, generator=torch.Generator().manual_seed(size + side))
    plain = F.avg_pool2d(x, side, stride)
    fast = box_mean(x, side, stride)
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-5)


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_patch_ncc_is_the_best_windows_ncc():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 20, 20, generator=g), torch.randn(2, 20, 20, generator=g)
    b[0, 4:12, 8:16] = 3 * a[0, 4:12, 8:16] + 1  # one window of the first pair is a copy
    best = patch_ncc(a, b, 8, 4)
    for n in range(2):
        windows = [(i, j) for i in range(0, 13, 4) for j in range(0, 13, 4)]
        plain = max(
            _ncc(a[n, i : i + 8, j : j + 8], b[n, i : i + 8, j : j + 8]) for i, j in windows
        )
        assert float(best[n]) == pytest.approx(plain, abs=1e-4)
    assert float(best[0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("size", "to"), [(64, 32), (32, 16), (64, 16), (52, 32), (30, 16)])
def test_area_resize_is_interpolate_area_mode_bit_for_bit(size, to):
    x = torch.rand(4, 1, size, size, generator=torch.Generator().manual_seed(size + to))
    library = F.interpolate(x, size=(to, to), mode="area")
    assert torch.equal(area_resize(x, to), library)
