"""The audit's native loops (privacy_audit/kernels.py) compute what the library's operations
compute: the warp is affine_grid then grid_sample (bilinear, the border repeated), the window
energy each window's sum of squared deviations. Tolerances are rounding's: the loops sum in
another order than the library."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from privacy_audit.kernels import box_mean, warp_affine, window_energy


def _maps(n: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """(n, t, 2, 3) rotations, zooms, shears and shifts, some moving the field past the image's
    edge (where grid_sample repeats the border) and some mirrored."""
    theta = torch.zeros(n, t, 2, 3)
    theta[..., :, :2] = torch.eye(2) + 0.3 * torch.randn(n, t, 2, 2, generator=generator)
    theta[..., 0, 0] *= torch.where(torch.rand(n, t, generator=generator) < 0.3, -1.0, 1.0)
    theta[..., :, 2] = 0.6 * torch.randn(n, t, 2, generator=generator)
    return theta


@pytest.mark.parametrize(("height", "size", "margin"), [(32, 32, 0), (32, 32, 3), (64, 64, 0)])
def test_warp_is_affine_grid_then_grid_sample_with_the_border_repeated(height, size, margin):
    g = torch.Generator().manual_seed(height + margin)
    images = torch.rand(5, height, height, generator=g)
    thetas = _maps(5, 4, g)
    fast = warp_affine(images, thetas, size, margin)
    grid = F.affine_grid(thetas.reshape(-1, 2, 3), [20, 1, size, size], align_corners=False)
    library = F.grid_sample(
        images.repeat_interleave(4, 0)[:, None],
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    ).view(5, 4, size, size)
    inner = library[..., margin : size - margin, margin : size - margin]
    assert fast.shape == inner.shape
    torch.testing.assert_close(fast, inner, atol=2e-5, rtol=0)


def test_warp_of_the_identity_is_the_image():
    images = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1))
    identity = torch.eye(2, 3).expand(2, 1, 2, 3)
    torch.testing.assert_close(warp_affine(images, identity, 16, 0)[:, 0], images)


@pytest.mark.parametrize(("size", "side"), [(32, 26), (16, 12), (8, 8)])
def test_window_energy_is_each_windows_sum_of_squared_deviations(size, side):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size)) + 5.0
    energy = window_energy(x, side)
    lags = size - side + 1
    assert energy.shape == (2, 3, lags, lags)
    windows = x.unfold(2, side, 1).unfold(3, side, 1)  # (2, 3, lags, lags, side, side)
    centred = windows - windows.mean((-2, -1), keepdim=True)
    plain = centred.square().sum((-2, -1))
    torch.testing.assert_close(energy, plain, atol=0.05, rtol=1e-4)


def test_box_mean_reads_any_layout_of_its_input():
    x = torch.randn(4, 20, 20, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(box_mean(x.transpose(1, 2), 8, 4), box_mean(x, 8, 4).transpose(1, 2))
    torch.testing.assert_close(box_mean(x.double(), 8, 4), F.avg_pool2d(x[:, None], 8, 4)[:, 0])


def test_mismatched_shapes_are_refused_not_read_past():
    images = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="warp_affine"):
        warp_affine(images, torch.eye(2, 3).expand(3, 1, 2, 3), 16, 0)  # 3 maps for 2 images
    with pytest.raises(ValueError, match="window_energy"):
        window_energy(torch.rand(2, 16, 12), 8)
    with pytest.raises(ValueError, match="box_mean"):
        box_mean(images, 20, 1)
