"""Latent diffusion: autoencoder, conditioned UNet, training, samplers (uses `conditioning`);
or, with `diffusion: space: pixel`, the UNet on the pixels with no autoencoder (space.py).

Public API (other parts call only these):

    from generation import load_model, Sampling, SAMPLERS
    model = load_model("runs/model")          # a `radsynth train diffusion --out` directory
    model.schema        # conditioning.dataset.ConditionSchema the model accepts
    model.image_size    # [H, W] (or [D, H, W])
    model.has_masks     # True: the model generates image+mask pairs
    model.space_name    # "latent" or "pixel" (model.autoencoder is None in pixel space)
    model.model_hash    # sha256 of config.json + weights, as written in manifests
    images = model.generate(conditions, seed)  # (N, H, W) float32 in [0, 1], default sampling
    model.generate(conditions, seed, Sampling(steps=50, guidance=4.0))  # only what differs
    images, masks = model.generate(..., return_masks=True)   # masks (N, H, W) uint8 or None
    model.generate(..., masks=given_masks)    # masked models: images that fit given masks
    model.denoising_error(images01, conditions, timesteps, seed)  # (N, len(timesteps))
    model.stepwise_error(images01, conditions, timesteps, seed)   # PIA-style, same shape

Sampling's unset fields take the model's defaults: generation/config.py's GenerateConfig,
overridden by the run's own. `conditions` is a list of dicts, one per image, e.g.
{"pathology": "viral", "age_months": 30}; attributes left out are unconditioned; bad
names/values raise ValueError listing what is allowed.
Image i is drawn from a seed derived from (seed, i) (pass `indices=` to choose i), so results
do not depend on batch size. Training: generation.train_autoencoder.train_autoencoder,
generation.train_diffusion.train_diffusion, generation.adapt.adapt_model; sets on disk:
generation.generate_set.generate_set (a SetRequest, sampled as a Sampling); timing:
generation.bench.bench_sampling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import LatentDiffusionModel, load_model
    from .sampling import Sampling

from .config import SAMPLERS
from .lazy import lazy_getattr

__all__ = ["SAMPLERS", "LatentDiffusionModel", "Sampling", "load_model"]
# imported on first use, so `generation.config` (the CLI's help texts) does not load torch
_LAZY = {"LatentDiffusionModel": ".pipeline", "load_model": ".pipeline", "Sampling": ".sampling"}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
