"""Train the KL autoencoder: L1 + SSIM + KL losses, optional patch-adversarial loss (no
pretrained perceptual network: nothing is downloaded)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.dataset import write_json_atomic

from .autoencoder import (
    Reconstruction,
    autoencoder_spec,
    build_autoencoder,
    kl_loss,
    latent_shape,
)
from .checkpoints import save_weights
from .config import AutoencoderConfig, Profile, RunSettings
from .data import load_training_data
from .grids import save_grid
from .model_card import write_model_card
from .parallel import (
    frozen,
    global_batch,
    mean_over_processes,
    replica_digests,
)
from .runs import (
    card_basics,
    make_accelerator,
    open_run,
    resume_run,
    settings_hash,
    step_generator,
    train_run,
    write_checkpoint,
)

log = logging.getLogger("radsynth.train")
KIND = "autoencoder"
WEIGHTS = "autoencoder.safetensors"


def train_autoencoder(
    data: str | Path,
    out: str | Path,
    settings: Profile,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) an autoencoder run in `out`; returns its model card. Under
    `accelerate launch` the processes train one model data-parallel (generation/parallel.py)."""
    cfg = settings.autoencoder
    accelerator = make_accelerator(cfg.mixed_precision, int(cfg.grad_accum))
    with open_run(out, resume, KIND, accelerator) as (run, resume):
        return _train(data, run, settings, cfg, accelerator, resume, show_progress)


def _train(data, run: Path, settings, cfg, accelerator, resume: bool, show_progress: bool):
    main = accelerator.is_main_process
    train = load_training_data(data, show_progress=show_progress and main)
    spec = autoencoder_spec(cfg, train.spatial_dims, train.images.shape[1])
    batch = global_batch(cfg, accelerator)
    config = _run_config(train, spec, settings, cfg, batch)
    if main:
        write_json_atomic(run / "config.json", config)
    torch.manual_seed(int(cfg.seed))
    parts = _Networks.build(cfg, train.spatial_dims, spec)
    identity = {
        "dataset_hash": config["dataset"]["hash"],
        "settings_hash": settings_hash(cfg),
        "global_batch_size": batch.size,
    }
    start, elapsed = 0, 0.0
    if resume:
        start, elapsed, _ = resume_run(
            run, parts.modules, parts.optimizers, identity, accelerator, "autoencoder", cfg
        )
    if main:  # after the resume check, which compares with the settings saved before
        RunSettings("autoencoder", settings).write(run)
    steps = _Steps(run, train, config, cfg, accelerator, batch, parts, identity)
    result = train_run(
        cfg, start, elapsed, steps.train_step, steps.checkpoint, "autoencoder", show_progress,
        accelerator,
    )  # fmt: skip
    digests = replica_digests(accelerator, parts.model)
    if main:
        save_weights(run / WEIGHTS, parts.model.state_dict())
    card = {
        "kind": KIND,
        "dataset": config["dataset"],
        "profile": settings.profile,
        **card_basics(result, accelerator, batch, digests),
        "network": spec,
        "params": cfg.to_dict(),
        "weights": WEIGHTS,
    }
    if main:
        write_model_card(run, card)
    accelerator.wait_for_everyone()
    log.info("autoencoder done: %d steps in %.0f s -> %s", result.step, result.wall_seconds, run)
    return card


def _run_config(
    train, spec: dict, settings: Profile, cfg: AutoencoderConfig, batch
) -> dict[str, Any]:
    """The run's config.json: the network, what it was trained on and how."""
    image_size = train.dataset.image_size
    return {
        "kind": KIND,
        "network": spec,
        "image_size": image_size,
        "spatial_dims": train.spatial_dims,
        "has_masks": train.has_masks,
        "latent_shape": latent_shape(spec, image_size),
        "schema": train.schema.to_json(),
        "dataset": {"name": train.dataset.name, "hash": train.dataset.content_hash()},
        "profile": settings.profile,
        "settings": cfg.to_dict(),
        "global_batch": batch.describe(),
    }


@dataclass(frozen=True)
class _Networks:
    """The autoencoder and, with the adversarial loss on, its patch discriminator, each with its
    optimizer; `modules` and `optimizers` as checkpoints name them."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    disc: torch.nn.Module | None
    disc_opt: torch.optim.Optimizer | None

    @classmethod
    def build(cls, cfg: AutoencoderConfig, spatial_dims: int, spec: dict) -> _Networks:
        model = build_autoencoder(spec)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr))
        disc = build_discriminator(cfg, spatial_dims, spec["in_channels"])
        disc_opt = None
        if disc is not None:
            disc_opt = torch.optim.AdamW(disc.parameters(), lr=float(cfg.lr))
        return cls(model, optimizer, disc, disc_opt)

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        found = {"model": self.model}
        return found if self.disc is None else {**found, "discriminator": self.disc}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        found = {"optimizer": self.optimizer}
        if self.disc_opt is None:
            return found
        return {**found, "discriminator_optimizer": self.disc_opt}


class _Steps:
    """One training step and one checkpoint, as the shared loop calls them."""

    def __init__(self, run: Path, train, config: dict, cfg: AutoencoderConfig, accelerator, batch,
                 parts: _Networks, identity: dict):  # fmt: skip
        from monai.losses import PatchAdversarialLoss, SSIMLoss

        self.run, self.train, self.accelerator, self.batch = run, train, accelerator, batch
        self.parts, self.identity, self.cfg = parts, identity, cfg
        if parts.disc is not None:
            self.adv_loss = PatchAdversarialLoss(criterion="least_squares")
        # prepared: DDP-wrapped under several processes, optimizers that step once per
        # accumulation
        self.recon_net, self.opt = accelerator.prepare(Reconstruction(parts.model), parts.optimizer)
        if parts.disc is not None:
            self.disc_net, self.d_opt = accelerator.prepare(parts.disc, parts.disc_opt)
        win = int(self.cfg.ssim_kernel)
        self.ssim = SSIMLoss(train.spatial_dims, data_range=2.0, win_size=win)
        self.latent = config["latent_shape"]
        self.seed = int(self.cfg.seed)

    def micro_step(self, x: torch.Tensor, eps: torch.Tensor, use_adv: bool) -> dict[str, float]:
        accelerator, cfg = self.accelerator, self.cfg
        with accelerator.autocast():
            recon, z_mu, z_sigma = self.recon_net(x, eps)
        recon = recon.float()
        l1 = (recon - x).abs().mean()
        ssim_value = self.ssim(recon, x)
        kl = kl_loss(z_mu.float(), z_sigma.float())
        loss = l1 + float(cfg.ssim_weight) * ssim_value + float(cfg.kl_weight) * kl
        losses = {"l1": l1.item(), "ssim": ssim_value.item(), "kl": kl.item()}
        if use_adv:
            with frozen(self.parts.disc), accelerator.autocast():
                fake = self.parts.disc(recon.contiguous())[-1]  # the bare module: no DDP hook
            g_adv = self.adv_loss(fake.float(), target_is_real=True, for_discriminator=False)
            loss = loss + float(cfg.adversarial_weight) * g_adv
            losses["g_adv"] = g_adv.item()
        accelerator.backward(loss)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if use_adv:
            losses["d_adv"] = self.discriminator_step(x, recon)
        losses["loss"] = loss.item()
        return losses

    def discriminator_step(self, x: torch.Tensor, recon: torch.Tensor) -> float:
        with self.accelerator.autocast():
            fake = self.disc_net(recon.detach().contiguous())[-1]
            real = self.disc_net(x.contiguous())[-1]
        d_loss = 0.5 * (
            self.adv_loss(fake.float(), target_is_real=False, for_discriminator=True)
            + self.adv_loss(real.float(), target_is_real=True, for_discriminator=True)
        )
        self.accelerator.backward(d_loss)
        self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)
        return d_loss.item()

    def train_step(self, step: int) -> dict[str, float]:
        batch, seed, disc = self.batch, self.seed, self.parts.disc
        self.recon_net.train()
        idx = self.train.batch_indices(step, batch.size, seed)
        eps = torch.randn((batch.size, *self.latent), generator=step_generator(seed, step))
        use_adv = disc is not None and step >= int(self.cfg.adversarial_start)
        nets = (self.recon_net, self.disc_net) if disc is not None else (self.recon_net,)
        losses = []
        for part in batch.micro_slices(self.accelerator.process_index):
            with self.accelerator.accumulate(*nets):
                x = self.train.images[idx[part]].to(self.accelerator.device)
                losses.append(self.micro_step(x, eps[part], use_adv))
        return mean_over_processes(self.accelerator, losses)

    def checkpoint(self, step: int, wall: float) -> None:
        if not self.accelerator.is_main_process:
            return
        parts = self.parts
        write_checkpoint(
            self.run, step, wall, parts.modules, parts.optimizers, self.identity, self.accelerator
        )
        preview = self.train.images[np.arange(min(8, len(self.train)))]
        path = self.run / "samples" / f"recon_step{step:07d}.png"
        save_reconstructions(parts.model, preview, path)


def build_discriminator(cfg: AutoencoderConfig, spatial_dims: int, in_channels: int):
    """The patch discriminator when the adversarial loss is on, else None. Instance norm, not
    MONAI's default batch norm: batch statistics would differ between one process's slice and
    the global batch, so N processes would no longer train the model one process does."""
    if float(cfg.adversarial_weight) <= 0:
        return None
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=int(cfg.discriminator_channels),
        in_channels=in_channels,
        num_layers_d=2,
        norm="INSTANCE",
    )


@torch.no_grad()
def save_reconstructions(model, images: torch.Tensor, path: Path) -> None:
    """Originals (top) and reconstructions (bottom): the quick check that the latent keeps detail."""
    model.eval()
    device = next(model.parameters()).device
    z_mu, _ = model.encode(images.to(device))
    recon = model.decode(z_mu).float().clamp(-1, 1).cpu()
    rows = [((images[:, 0] + 1) / 2).numpy(), ((recon[:, 0] + 1) / 2).numpy()]
    if images.shape[1] > 1:  # masks
        rows += [((images[:, 1] + 1) / 2).numpy(), ((recon[:, 1] + 1) / 2).numpy()]
    save_grid(path, rows)
