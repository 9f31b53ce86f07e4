"""Inference: a trained run directory as one object that generates images for requested
conditions and scores images for the privacy audit (per-image denoising error). The UNet
denoises in the run's space (generation/space.py): an autoencoder's latents, or the pixels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.dataset import ConditionSchema
from conditioning.encoders import encode_conditions

from .autoencoder import build_autoencoder
from .checkpoints import file_sha256, load_into
from .config import GenerateConfig
from .sampling import Sampling, autocast, image_generators, sample_latents
from .schedulers import SAMPLERS, alphas_cumprod
from .space import LatentSpace, PixelSpace, space_name
from .unet import ConditionedUNet, mask_to_input

CONFIG = "config.json"
UNET_WEIGHTS = "unet.safetensors"
AE_DIR = "autoencoder"
AE_WEIGHTS = "autoencoder.safetensors"


class LatentDiffusionModel:
    """A conditioned diffusion model ready to sample (EMA weights, eval mode), in latent or pixel
    space (`space`: a generation.space LatentSpace or PixelSpace; `space_name` says which)."""

    def __init__(
        self,
        config: dict[str, Any],
        unet: ConditionedUNet,
        space: LatentSpace | PixelSpace,
        model_hash: str = "unsaved",
        device: str | torch.device = "cpu",
    ):
        self.config = config
        self.device = torch.device(device)
        self.unet = unet.to(self.device).eval()
        self.space = space.to(self.device)
        self.space_name: str = space_name(config)
        if self.space_name != space.name:
            raise ValueError(f"{CONFIG} says space {self.space_name!r}, given a {space.name} space")
        self.schema = ConditionSchema.from_json(config["schema"], CONFIG)
        self.image_size: list[int] = list(config["image_size"])
        self.spatial_dims: int = int(config["spatial_dims"])
        self.has_masks: bool = bool(config["has_masks"])
        # what the UNet denoises: (latent channels, *latent size), or (C, *image_size) in pixels
        self.latent_shape: list[int] = list(config["latent_shape"])
        self.schedule: dict[str, Any] = dict(config["schedule"])
        # generation defaults: the project's (GenerateConfig), under the run's saved ones
        self.defaults = GenerateConfig.from_json(config.get("generate"), f"{CONFIG} generate")
        self.model_hash = model_hash
        self.samplers = SAMPLERS

    @property
    def autoencoder(self) -> torch.nn.Module | None:
        """The latent space's autoencoder; None for a pixel-space model."""
        return self.space.autoencoder

    def to(self, device: str | torch.device) -> LatentDiffusionModel:
        """Move the networks (and latent statistics) to `device`."""
        self.device = torch.device(device)
        self.unet = self.unet.to(self.device)
        self.space = self.space.to(self.device)
        return self

    # -- conditions -------------------------------------------------------------------------
    def validate(self, conditions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each request checked against the schema; ValueError lists what is allowed."""
        return [self.schema.validate_request(dict(c)) for c in conditions]

    def _masks_input(self, masks: np.ndarray | None, n: int) -> torch.Tensor | None:
        if not self.has_masks:
            if masks is not None:
                raise ValueError("this model was trained without masks; it cannot take masks")
            return None
        if masks is None:
            return torch.zeros((n, 2, *self.latent_shape[1:]))
        masks = np.asarray(masks)
        if masks.shape != (n, *self.image_size):
            raise ValueError(f"masks must have shape {(n, *self.image_size)}, got {masks.shape}")
        return mask_to_input(
            torch.from_numpy((masks > 0).astype(np.float32))[:, None], self.latent_shape[1:]
        )

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        conditions: Sequence[dict[str, Any]],
        seed: int,
        how: Sampling | None = None,
        *,
        indices: Sequence[int] | None = None,
        masks: np.ndarray | None = None,
        return_masks: bool = False,
        progress: bool = False,
    ):
        """Images for the requested conditions: (N, *image_size) float32 in [0, 1].

        `how` names the sampling options that differ from the model's defaults. Image i uses the
        seed derived from (seed, indices[i]) (default indices 0..N-1), so the result does not
        depend on the batch size. `masks` (N, *image_size) asks a masked model for images
        fitting given masks. With return_masks=True returns (images, masks) where masks is
        (N, *image_size) uint8 for a masked model and None otherwise."""
        parsed = self.validate(conditions)
        n = len(parsed)
        how = (how or Sampling()).resolve(self.defaults, self.device)
        indices = list(range(n)) if indices is None else list(indices)
        if len(indices) != n:
            raise ValueError("indices must have one entry per requested image")
        values = encode_conditions(self.schema, parsed)
        mask_input = self._masks_input(masks, n)
        images, out_masks = [], []
        starts = range(0, n, how.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="generating", unit="batch")
        for start in starts:
            stop = min(start + how.batch_size, n)
            latents = sample_latents(
                self.unet,
                self.schedule,
                self.latent_shape,
                values[start:stop],
                image_generators(seed, indices[start:stop]),
                how,
                mask_input=None if mask_input is None else mask_input[start:stop],
                device=self.device,
            )
            decoded = self.decode(latents, bf16=how.bf16)
            images.append(decoded[:, 0])
            if self.has_masks:
                out_masks.append((decoded[:, 1] > 0.5).astype(np.uint8))
        empty = np.zeros((0, *self.image_size), np.float32)
        result = np.concatenate(images) if images else empty
        if not return_masks:
            return result
        if not self.has_masks:
            return result, None
        return result, (np.concatenate(out_masks) if out_masks else empty.astype(np.uint8))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, bf16: bool = False) -> np.ndarray:
        """Latents (or pixels, in pixel space) -> (N, C, *size) float32 in [0, 1]."""
        with autocast(self.device, bf16):
            decoded = self.space.decode(latents).float()
        return ((decoded.clamp(-1, 1) + 1) / 2).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def encode(self, images01: np.ndarray, masks: np.ndarray | None = None) -> torch.Tensor:
        """Images (N, *size) in [0, 1] (and masks on a masked model) -> scaled latent means
        (in pixel space: the images in [-1, 1])."""
        images01 = np.asarray(images01, dtype=np.float32)
        if images01.shape[1:] != tuple(self.image_size):
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.image_size))}), "
                f"got {images01.shape}"
            )
        channels = [images01]
        if self.has_masks:
            if masks is None:
                raise ValueError("this model encodes image+mask pairs: pass masks= with the images")
            channels.append((np.asarray(masks) > 0).astype(np.float32))
        x = torch.from_numpy(np.stack(channels, axis=1)).to(self.device) * 2 - 1
        return self.space.encode(x)

    # -- scores for the privacy audit -------------------------------------------------------
    @torch.no_grad()
    def denoising_error(
        self,
        images01: np.ndarray,
        conditions: Sequence[dict[str, Any]],
        timesteps: Sequence[int],
        seed: int,
        *,
        masks: np.ndarray | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Per-image diffusion loss (N, len(timesteps)) at fixed timesteps with fixed noise.

        The noise at timestep j is the same for every image (drawn from (seed, j)), so scores are
        comparable across images; the error is the mean squared error of the model's prediction
        (epsilon or v) against its target, in the model's space, with the given conditions."""
        return self._scores(images01, conditions, timesteps, seed, masks, batch_size, "loss")

    @torch.no_grad()
    def stepwise_error(
        self,
        images01: np.ndarray,
        conditions: Sequence[dict[str, Any]],
        timesteps: Sequence[int],
        seed: int,
        *,
        masks: np.ndarray | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """PIA-style score (Kong et al. 2024) (N, len(timesteps)): the model's own noise estimate
        at t=0 is used as deterministic noise to reach x_t, and the error is how far the model's
        prediction at t is from that noise. Members of the training set score lower. `seed` is
        unused (the procedure is deterministic) and kept for the same signature."""
        return self._scores(images01, conditions, timesteps, seed, masks, batch_size, "pia")

    def _scores(self, images01, conditions, timesteps, seed, masks, batch_size, kind) -> np.ndarray:
        images01 = np.asarray(images01, dtype=np.float32)
        if len(conditions) != len(images01):
            raise ValueError(
                f"{len(images01)} images but {len(conditions)} condition dicts: give one per image"
            )
        horizon = int(self.schedule["num_train_timesteps"])
        bad = [t for t in timesteps if not 0 <= int(t) < horizon]
        if bad:
            raise ValueError(f"timesteps must lie in [0, {horizon - 1}], got {bad}")
        values = encode_conditions(self.schema, self.validate(conditions))
        table = alphas_cumprod(self.schedule)
        v_pred = self.schedule["prediction_type"] == "v_prediction"
        noises = [
            torch.randn(self.latent_shape, generator=g)
            for g in image_generators(seed, range(len(timesteps)))
        ]
        out = np.zeros((len(images01), len(timesteps)), np.float32)
        for start in range(0, len(images01), batch_size):
            stop = min(start + batch_size, len(images01))
            z0 = self.encode(images01[start:stop], None if masks is None else masks[start:stop])
            cond = values[start:stop].to(self.device)
            mask_in = self._masks_input(None, stop - start)
            mask_in = None if mask_in is None else mask_in.to(self.device)
            if kind == "pia":
                zeros = torch.zeros(stop - start, device=self.device)
                eps0 = self._eps(self.unet(z0, zeros, cond, mask_in).float(), z0, 0, table)
            for j, t in enumerate(timesteps):
                ab = table[int(t)].item()
                noise = noises[j].to(self.device).expand_as(z0) if kind == "loss" else eps0
                zt = ab**0.5 * z0 + (1 - ab) ** 0.5 * noise
                ts = torch.full((stop - start,), int(t), device=self.device)
                pred = self.unet(zt, ts, cond, mask_in).float()
                if kind == "loss":
                    target = ab**0.5 * noise - (1 - ab) ** 0.5 * z0 if v_pred else noise
                    err = (pred - target) ** 2
                else:
                    err = (self._eps(pred, zt, int(t), table) - eps0) ** 2
                out[start:stop, j] = err.flatten(1).mean(1).cpu().numpy()
        return out

    def _eps(self, pred: torch.Tensor, zt: torch.Tensor, t: int, table: torch.Tensor):
        """The model output as a noise estimate, whatever it was trained to predict."""
        if self.schedule["prediction_type"] != "v_prediction":
            return pred
        ab = table[t].item()
        return ab**0.5 * pred + (1 - ab) ** 0.5 * zt


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a trained model run (config.json missing)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return config


def weight_files(run_dir: str | Path, config: dict[str, Any]) -> list[Path]:
    """The weights generation uses: the UNet's, and the autoencoder's in latent space."""
    run = Path(run_dir)
    if space_name(config) == "pixel":
        return [run / UNET_WEIGHTS]
    return [run / UNET_WEIGHTS, run / AE_DIR / AE_WEIGHTS]


def model_hash(run_dir: str | Path) -> str:
    """SHA-256 over config.json and the weights generation uses: names a model in manifests."""
    run = Path(run_dir)
    return file_sha256(run / CONFIG, *weight_files(run, read_config(run)))


def build_space(config: dict[str, Any], weights_dir: Path | None = None):
    """The run's space: its autoencoder (weights from `weights_dir`) and latent statistics, or
    the pixels."""
    if space_name(config) == "pixel":
        return PixelSpace()
    autoencoder = build_autoencoder(config["autoencoder"]["network"])
    if weights_dir is not None:
        load_into(autoencoder, weights_dir / AE_DIR / AE_WEIGHTS)
    spatial_dims = len(config["latent_shape"]) - 1
    return LatentSpace(autoencoder, config["latent_mean"], config["latent_std"], spatial_dims)


def build_model(
    config: dict[str, Any], device="cpu", weights_dir: Path | None = None, hash_="unsaved"
):
    schema = ConditionSchema.from_json(config["schema"], CONFIG)
    unet = ConditionedUNet(config["unet"], schema, mask_input=bool(config["has_masks"]))
    space = build_space(config, weights_dir)
    if weights_dir is not None:
        load_into(unet, weights_dir / UNET_WEIGHTS)
    return LatentDiffusionModel(config, unet, space, hash_, device)


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> LatentDiffusionModel:
    """Load a diffusion run (`radsynth train diffusion --out RUN`), in latent or pixel space,
    for generation."""
    run = Path(run_dir)
    config = read_config(run)
    if config.get("kind") != "latent-diffusion":
        raise ValueError(
            f"{run / CONFIG}: kind is {config.get('kind')!r}, not a latent-diffusion model run"
        )
    return build_model(config, device, run, model_hash(run))
