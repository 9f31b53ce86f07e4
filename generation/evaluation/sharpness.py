"""How much detail a generator's autoencoder keeps: the floor of any latent model's realism.

A decoder that smooths away fine texture gives every synthetic image the same soft look; a
downstream classifier can learn that look as a shortcut. Two measures of it on held-out real
images: the share of high-frequency spectral power the reconstructions keep, and how well a
classifier tells reconstructions from originals (`detectability`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .detectability import DetectabilityConfig, detectability
from .images import ImageSet


def high_frequency_power(images: np.ndarray, cutoff: float = 0.25) -> float:
    """Mean spectral power above `cutoff` cycles per pixel (of the 0.5 Nyquist limit), after
    removing each image's mean."""
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred)) ** 2
    fy = np.fft.fftfreq(images.shape[1])[:, None]
    fx = np.fft.fftfreq(images.shape[2])[None, :]
    band = np.sqrt(fx**2 + fy**2) >= cutoff
    return float(power[:, band].mean())


def reconstruction_check(
    real: ImageSet,
    reconstruct: Callable[[np.ndarray], np.ndarray],
    schema,
    config: DetectabilityConfig | None = None,
) -> dict:
    """High-frequency power kept by the reconstructions (1 = all of it) and the detectability
    of reconstructions of one half of `real` against the originals of the other half."""
    recon = reconstruct(real.images)
    order = np.random.default_rng(0).permutation(len(real))
    originals, rebuilt = order[::2], order[1::2]
    rebuilt_set = ImageSet(recon[rebuilt], [real.conditions[i] for i in rebuilt])
    detect = detectability(real.subset(originals), rebuilt_set, schema, config)
    return {
        "high_frequency_power_kept": high_frequency_power(recon)
        / high_frequency_power(real.images),
        "l1": float(np.abs(recon - real.images).mean()),
        "detectability": detect,
    }
