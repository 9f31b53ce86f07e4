"""Train the conditioned diffusion UNet on the latents of a trained autoencoder, or (settings
`space: pixel`) on the images themselves.

Latents are the autoencoder's means, computed once (the autoencoder is frozen), scaled to unit
variance; in pixel space the UNet takes the images in [-1, 1] as they are, with no autoencoder
(generation/space.py). Training: DDPM noise schedule, epsilon or v prediction, min-SNR
weighting, per-attribute condition dropout (classifier-free guidance), EMA weights (the ones
saved for sampling).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .autoencoder import build_autoencoder
from .checkpoints import file_sha256, load_into, save_weights
from .config import DiffusionConfig, Profile
from .data import TrainingData, load_training_data
from .generate_set import training_distribution
from .model_card import write_model_card
from .parallel import global_batch
from .pipeline import AE_DIR, AE_WEIGHTS, CONFIG, UNET_WEIGHTS, model_hash
from .runs import card_basics, make_accelerator, open_run
from .schedulers import schedule_spec
from .space import LatentSpace, PixelSpace
from .train_autoencoder import WEIGHTS as AE_RUN_WEIGHTS
from .unet import ConditionedUNet, mask_to_input, unet_spec
from .unet_trainer import AutoencoderSource, Latents, RunPlace, Trained, train_unet
from .unet_trainer import save_sample_grid as save_sample_grid

log = logging.getLogger("radsynth.train")
KIND = "latent-diffusion"


def load_autoencoder_run(path: str | Path) -> tuple[dict[str, Any], torch.nn.Module, Path]:
    run = Path(path)
    config_path = run / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not an autoencoder run (config.json missing)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("kind") != "autoencoder":
        raise ValueError(f"{config_path}: kind is {config.get('kind')!r}, not 'autoencoder'")
    weights = run / AE_RUN_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: autoencoder training has not finished")
    model = build_autoencoder(config["network"])
    load_into(model, weights)
    return config, model.eval(), weights


@torch.no_grad()
def encode_all(autoencoder, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch):
        z_mu, _ = autoencoder.encode(images[start : start + batch])
        out.append(z_mu.float())
    return torch.cat(out)


def check_compatible(ae_config: dict[str, Any], train: TrainingData, ae_path: Path) -> None:
    mine = {
        "image_size": train.dataset.image_size,
        "has_masks": train.has_masks,
        "spatial_dims": train.spatial_dims,
    }
    for key, value in mine.items():
        if ae_config[key] != value:
            raise ValueError(
                f"{ae_path / CONFIG}: autoencoder has {key}={ae_config[key]!r} but the dataset "
                f"has {value!r}"
            )


def check_space(settings: Profile, autoencoder_run: str | Path | None) -> str:
    """The settings' space, refusing an autoencoder run where nothing is encoded with it and
    none where the latents come from it."""
    space = settings.diffusion.space
    profile = f"profile {settings.profile!r}" if settings.profile else "the settings"
    if space == "pixel" and autoencoder_run:
        raise ValueError(
            f"--autoencoder {autoencoder_run}: {profile} trains the diffusion model in pixel "
            "space (diffusion: space: pixel), on the images themselves with no autoencoder; "
            "leave --autoencoder out"
        )
    if space == "latent" and not autoencoder_run:
        raise ValueError(
            f"{profile} trains the diffusion model in latent space: give --autoencoder RUN (the "
            "autoencoder run whose latents it learns), or use a pixel-space profile (diffusion: "
            "space: pixel, e.g. --profile pixel)"
        )
    return space


def train_diffusion(
    data: str | Path,
    autoencoder_run: str | Path | None,
    out: str | Path,
    settings: Profile,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) a diffusion run in `out`; returns its model card. `autoencoder_run`:
    the autoencoder whose latents it learns, or None in pixel space."""
    cfg = settings.diffusion
    space = check_space(settings, autoencoder_run)
    accelerator = make_accelerator(cfg.mixed_precision, int(cfg.grad_accum))
    with open_run(out, resume, KIND, accelerator) as (run, resume):
        place = RunPlace(run, resume, accelerator, cfg, settings, "diffusion", show_progress)
        main = accelerator.is_main_process
        train = load_training_data(data, show_progress=show_progress and main)
        if space == "pixel":
            inputs = prepare_pixels(train, place)
        else:
            inputs = prepare_latents(train, autoencoder_run, place)
        spec = unet_spec(cfg, train.spatial_dims, inputs.latents.shape[1], train.has_masks)
        config = run_config(inputs, settings, cfg, spec, schedule_spec(cfg))
        torch.manual_seed(int(cfg.seed))
        unet = ConditionedUNet(spec, train.schema, mask_input=train.has_masks)
        trained = train_unet(place, inputs, config, unet, list(unet.parameters()), ema_warmup=True)
        card = save_run(place, config, trained, trained.ema.model, settings)
        if main:
            write_model_card(run, card)
        log.info("diffusion done: %d steps in %.0f s -> %s", trained.result.step,
                 trained.result.wall_seconds, run)  # fmt: skip
        return card


def prepare_latents(
    train: TrainingData,
    autoencoder_run: str | Path,
    place: RunPlace,
    stats: tuple[list[float], list[float]] | None = None,
) -> Latents:
    """The training images' latent means, standardised per channel by `stats` (mean, std; by
    default their own), with the mask inputs at the latent size and the autoencoder's run."""
    ae_path = Path(autoencoder_run)
    ae_config, autoencoder, ae_weights = load_autoencoder_run(ae_path)
    check_compatible(ae_config, train, ae_path)
    batch = global_batch(place.cfg, place.accelerator)
    device = place.accelerator.device
    autoencoder.to(device)
    log.info("encoding %d training images to latents", len(train))
    latents = encode_all(autoencoder, train.images.to(device))
    mean, std = stats or latent_stats(latents)
    view = (1, -1, *([1] * (latents.ndim - 2)))
    shift, scale = (torch.tensor(s, device=latents.device).view(view) for s in (mean, std))
    latents = (latents - shift) / scale
    mask_inputs = None
    if train.has_masks:
        masks01 = (train.images[:, 1:2] > 0).float()
        mask_inputs = mask_to_input(masks01, list(latents.shape[2:])).to(device)
    autoencoder_source = AutoencoderSource(ae_path, ae_config, autoencoder, ae_weights)
    space = LatentSpace(autoencoder, mean, std, latents.ndim - 2)
    return Latents(train, latents, mean, std, mask_inputs, autoencoder_source, batch, space)


def prepare_pixels(train: TrainingData, place: RunPlace) -> Latents:
    """Pixel space: the training images in [-1, 1] themselves (an image and, on a masked
    dataset, its mask channel), with the mask inputs at the image size; no autoencoder."""
    batch = global_batch(place.cfg, place.accelerator)
    device = place.accelerator.device
    space = PixelSpace()
    log.info("pixel space: the UNet trains on the %d training images themselves", len(train))
    pixels = space.encode(train.images).to(device)
    mask_inputs = None
    if train.has_masks:
        masks01 = (train.images[:, 1:2] > 0).float()
        mask_inputs = mask_to_input(masks01, list(pixels.shape[2:])).to(device)
    return Latents(train, pixels, None, None, mask_inputs, None, batch, space)


def latent_stats(latents: torch.Tensor) -> tuple[list[float], list[float]]:
    """Each latent channel's mean and standard deviation: the autoencoder's channels have means
    of several standard deviations, which the unit-variance noise of diffusion does not expect."""
    dims = [0, *range(2, latents.ndim)]
    return latents.mean(dims).tolist(), latents.std(dims).clamp_min(1e-6).tolist()


def run_config(
    data: Latents,
    settings: Profile,
    cfg: DiffusionConfig,
    spec: dict[str, Any],
    schedule: dict[str, Any],
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's config.json: everything generation needs to rebuild the model. `schema`: the
    parent's, when a run adapts one (the same schema by then, kept as the parent wrote it)."""
    train = data.train
    return {
        "kind": KIND,
        "format_version": 1,
        "space": data.space.name,
        "image_size": train.dataset.image_size,
        "spatial_dims": train.spatial_dims,
        "has_masks": train.has_masks,
        "schema": schema or train.schema.to_json(),
        "latent_shape": list(data.latents.shape[1:]),
        **_latent_entries(data),
        "unet": spec,
        "schedule": schedule,
        "generate": settings.generate.to_dict(),
        "training_conditions": training_distribution(
            train.schema, [r.conditions for r in train.focus_records]
        ),
        "dataset": {"name": train.dataset.name, "hash": train.dataset.content_hash()},
        "profile": settings.profile,
        "settings": cfg.to_dict(),
        "global_batch": data.batch.describe(),
    }


def _latent_entries(data: Latents) -> dict[str, Any]:
    """What a latent-space run records of its autoencoder and latent statistics; nothing in
    pixel space (the images need no statistics: they are in [-1, 1] by construction)."""
    ae = data.autoencoder
    if ae is None:
        return {}
    return {
        "latent_mean": data.mean,
        "latent_std": data.std,
        "autoencoder": {
            "network": ae.config["network"],
            "weights": f"{AE_DIR}/{AE_WEIGHTS}",
            "source": ae.path.resolve().name,  # a run name: no local path travels
            "sha256": file_sha256(ae.weights),
        },
    }


def save_run(
    place: RunPlace, config: dict[str, Any], trained: Trained, final, settings: Profile
) -> dict[str, Any]:
    """Save the `final` UNet weights (the EMA's, made plain) and return the model card."""
    if place.accelerator.is_main_process:
        save_weights(place.run / UNET_WEIGHTS, final.state_dict())
    place.accelerator.wait_for_everyone()  # the model hash reads the saved weights
    if "autoencoder" in config:
        autoencoder = {k: config["autoencoder"][k] for k in ("source", "sha256")}
    else:
        autoencoder = "none: the UNet denoises the images themselves (pixel space)"
    return {
        "kind": KIND,
        "space": config["space"],
        "model_hash": model_hash(place.run),
        "dataset": config["dataset"],
        "autoencoder": autoencoder,
        "profile": settings.profile,
        **card_basics(trained.result, place.accelerator, trained.batch, trained.digests),
        "conditioning": "per-attribute embeddings summed into the UNet time embedding; "
        "classifier-free guidance by per-attribute dropout",
        "schema": config["schema"],
        "unet": config["unet"],
        "schedule": config["schedule"],
        "params": place.cfg.to_dict(),
        "samples": "samples/",
    }
