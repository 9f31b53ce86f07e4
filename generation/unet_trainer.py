"""The diffusion UNet's training loop on standardised latents (or, in pixel space, on the
images in [-1, 1]), shared by `train diffusion` and `train adapt`: noising, v or epsilon targets, min-SNR weights, condition and mask dropout, EMA,
checkpoints with sample grids, resumption. What differs between the two (the start weights, the
trained params, the settings section) is decided by the caller before the loop starts."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conditioning.dataset import write_json_atomic
from conditioning.encoders import drop_conditions

from .config import DiffusionConfig, Profile, RunSettings
from .data import ClassBalance, TrainingData
from .ema import EMA
from .grids import grid_conditions, save_grid
from .parallel import GlobalBatch, mean_over_processes, replica_digests
from .pipeline import AE_DIR, AE_WEIGHTS, CONFIG, LatentDiffusionModel
from .runs import resume_run, settings_hash, step_generator, train_run, write_checkpoint
from .schedulers import snr_weights, training_scheduler
from .space import LatentSpace, PixelSpace
from .unet import hide_masks

log = logging.getLogger("radsynth.train")


@dataclass(frozen=True)
class RunPlace:
    """Where a run trains and how: its directory, whether it resumes, the accelerator, its
    settings (`cfg`: the diffusion section, or for `train adapt` that section under the adapt
    one's values), the whole profile they came from (saved beside the weights) and the section
    that trains (the progress bar's name)."""

    run: Path
    resume: bool
    accelerator: Any
    cfg: DiffusionConfig
    settings: Profile
    section: str
    show_progress: bool


@dataclass(frozen=True)
class AutoencoderSource:
    """A trained autoencoder run: its directory, config, frozen model and weights file."""

    path: Path
    config: dict[str, Any]
    model: torch.nn.Module
    weights: Path


@dataclass(frozen=True)
class Latents:
    """What the UNet trains on: the training data, its latents standardised by (mean, std) per
    channel, the mask inputs, the autoencoder that made them, the global batch, and the space
    that decodes samples. In pixel space the "latents" are the images in [-1, 1], with no
    statistics and no autoencoder (None)."""

    train: TrainingData
    latents: torch.Tensor
    mean: list[float] | None
    std: list[float] | None
    mask_inputs: torch.Tensor | None
    autoencoder: AutoencoderSource | None
    batch: GlobalBatch
    space: LatentSpace | PixelSpace


@dataclass(frozen=True)
class Trained:
    result: Any  # the loop's LoopResult
    ema: EMA
    digests: list[str]
    batch: GlobalBatch


def train_unet(
    place: RunPlace, data: Latents, config: dict[str, Any], unet, params, ema_warmup: bool
) -> Trained:
    """Train `params` of `unet` with AdamW from the run's step (or its checkpoint), writing the
    run's config.json and autoencoder copy first; returns the loop's result and the EMA."""
    cfg, accelerator = place.cfg, place.accelerator
    optimizer = torch.optim.AdamW(params, lr=float(cfg.lr))
    unet.to(accelerator.device)
    ema = EMA(unet, float(cfg.ema_decay), warmup=ema_warmup)
    modules = {"unet": unet, "ema": ema.model}
    optimizers = {"optimizer": optimizer}
    identity = {
        "dataset_hash": config["dataset"]["hash"],
        "settings_hash": settings_hash(cfg),
        "global_batch_size": data.batch.size,
    }
    start, elapsed = 0, 0.0
    if place.resume:
        start, elapsed, state = resume_run(
            place.run, modules, optimizers, identity, accelerator, place.section, cfg
        )
        ema.load_counters(state.get("ema"), start)
    net, opt = accelerator.prepare(unet, optimizer)
    if accelerator.is_main_process:
        _write_run_files(place, data, config)
    steps = _Steps(place, data, config, unet, net, opt, optimizer, ema, modules, identity)
    result = train_run(
        cfg, start, elapsed, steps.train_step, steps.checkpoint, place.section,
        place.show_progress, accelerator,
    )  # fmt: skip
    return Trained(result, ema, replica_digests(accelerator, ema.model), data.batch)


def _write_run_files(place: RunPlace, data: Latents, config: dict[str, Any]) -> None:
    """Everything generation needs lives in the run: the autoencoder (latent space) is copied
    in; the settings it trains with are saved beside the weights (training_config.json)."""
    run = place.run
    if data.autoencoder is not None:
        (run / AE_DIR).mkdir(exist_ok=True)
        shutil.copyfile(data.autoencoder.path / CONFIG, run / AE_DIR / CONFIG)
        shutil.copyfile(data.autoencoder.weights, run / AE_DIR / AE_WEIGHTS)
    write_json_atomic(run / CONFIG, config)
    RunSettings(place.section, place.settings).write(run)


@dataclass
class _Steps:
    """One training step and one checkpoint, as the shared loop calls them."""

    place: RunPlace
    data: Latents
    config: dict[str, Any]
    unet: torch.nn.Module
    net: torch.nn.Module  # the accelerator's wrapped unet
    opt: Any  # the accelerator's wrapped optimizer
    optimizer: torch.optim.Optimizer
    ema: EMA
    modules: dict[str, torch.nn.Module]
    identity: dict[str, Any]

    def __post_init__(self) -> None:
        schedule = self.config["schedule"]
        self.noise_sched = training_scheduler(schedule)
        self.table = self.noise_sched.alphas_cumprod
        self.horizon = schedule["num_train_timesteps"]
        self.v_pred = schedule["prediction_type"] == "v_prediction"
        self.seed = int(self.place.cfg.seed)
        balance = ClassBalance.from_settings(self.place.cfg)
        self.balance = None if balance is None else balance.bind(self.data.train)
        if self.balance is not None:
            log.info(
                "class-balanced batches by %s (power %g): %s", balance.by, balance.power,
                ", ".join(f"{k} {v:.1%}" for k, v in self.balance.shares.items()),
            )  # fmt: skip

    def micro_step(self, z0, noise, t, cond, mask_in) -> dict[str, float]:
        accelerator, cfg = self.place.accelerator, self.place.cfg
        zt = self.noise_sched.add_noise(z0, noise, t)
        target = self.noise_sched.get_velocity(z0, noise, t) if self.v_pred else noise
        with accelerator.autocast():
            pred = self.net(zt, t, cond, mask_in)
        per_image = ((pred.float() - target) ** 2).flatten(1).mean(1)
        weights = snr_weights(t, self.config["schedule"], float(cfg.min_snr_gamma), self.table)
        loss = (weights * per_image).mean()
        accelerator.backward(loss)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "mse": per_image.mean().item()}

    def set_lr(self, step: int) -> None:
        """Linear warmup, a function of the step alone so a resumed run gets the same rates: a
        fresh Adam moves every weight by about lr on its first steps, which jolts a trained
        model that is being fine-tuned."""
        base_lr, warmup = float(self.place.cfg.lr), int(self.place.cfg.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = base_lr * min(1.0, (step + 1) / warmup) if warmup else base_lr

    def train_step(self, step: int) -> dict[str, float]:
        accelerator, cfg, train = self.place.accelerator, self.place.cfg, self.data.train
        device = accelerator.device
        self.net.train()
        self.set_lr(step)
        # the global batch, drawn whole on every process; each trains on its slices
        idx = train.batch_indices(step, self.data.batch.size, self.seed, self.balance)
        idx = torch.from_numpy(idx)
        gen = step_generator(self.seed, step)
        latents = self.data.latents
        z0 = latents[idx.to(latents.device)]
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, self.horizon, (len(idx),), generator=gen).to(device)
        dropout = float(cfg.condition_dropout)
        cond = drop_conditions(train.conditions[idx], dropout, gen).to(device)
        mask_in = None
        if self.data.mask_inputs is not None:
            chosen = self.data.mask_inputs[idx.to(device)]
            mask_in = hide_masks(chosen, float(cfg.mask_dropout), gen)
        losses = []
        for part in self.data.batch.micro_slices(accelerator.process_index):
            with accelerator.accumulate(self.net):
                masks = None if mask_in is None else mask_in[part]
                losses.append(self.micro_step(z0[part], noise[part], t[part], cond[part], masks))
        if self.opt.step_was_skipped:  # fp16 overflow: the weights did not move
            self.ema.skip()
        else:
            self.ema.update(self.unet)
        return mean_over_processes(accelerator, losses)

    def checkpoint(self, step: int, wall: float) -> None:
        place = self.place
        if not place.accelerator.is_main_process:
            return
        write_checkpoint(
            place.run, step, wall, self.modules, {"optimizer": self.optimizer}, self.identity,
            place.accelerator, {"ema": self.ema.counters()},
        )  # fmt: skip
        model = LatentDiffusionModel(
            self.config, self.ema.model, self.data.space, device=place.accelerator.device
        )
        grid = place.run / "samples" / f"grid_step{step:07d}.png"
        save_sample_grid(model, grid, int(place.cfg.grid_columns), self.seed)
        self.ema.model.eval()


def save_sample_grid(model: LatentDiffusionModel, path: Path, columns: int, seed: int) -> Path:
    """One row per class (first categorical attribute), EMA weights, the default sampler."""
    rows, labels = grid_conditions(model.schema, columns)
    flat = [c for row in rows for c in row]
    images, masks = model.generate(flat, seed=seed, return_masks=True)
    picture_rows = [images[i * columns : (i + 1) * columns] for i in range(len(rows))]
    if masks is not None:
        mask_rows = [
            masks[i * columns : (i + 1) * columns].astype("float32") for i in range(len(rows))
        ]
        picture_rows = [r for pair in zip(picture_rows, mask_rows, strict=True) for r in pair]
        labels = [s for label in labels for s in (label, "mask")]
    return save_grid(path, picture_rows, labels)
