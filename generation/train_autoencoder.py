"""Train the KL autoencoder: L1 + SSIM + KL losses, optional patch-adversarial loss (no
pretrained perceptual network: nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.dataset import write_json_atomic

from .autoencoder import autoencoder_spec, build_autoencoder, kl_loss, latent_shape, sample_latent
from .checkpoints import load_checkpoint, save_checkpoint, save_weights
from .data import load_training_data
from .grids import save_grid
from .model_card import write_model_card
from .runs import attach_log, check_resume, make_accelerator, prepare_run_dir, step_generator
from .train_loop import run_loop

log = logging.getLogger("radsynth.train")
KIND = "autoencoder"
WEIGHTS = "autoencoder.safetensors"


# Settings a resumed run may change: how long it trains and how often it checkpoints.
EXTENDABLE = ("steps", "max_minutes", "checkpoint_every")


def settings_hash(cfg: dict[str, Any]) -> str:
    """Identifies the settings a checkpoint depends on (not its length: `--resume` with more
    steps or a longer cap continues training)."""
    kept = {k: v for k, v in cfg.items() if k not in EXTENDABLE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def train_autoencoder(
    data: str | Path,
    out: str | Path,
    settings: dict[str, Any],
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) an autoencoder run in `out`; returns its model card."""
    from monai.losses import PatchAdversarialLoss, SSIMLoss
    from monai.networks.nets import PatchDiscriminator

    cfg = settings["autoencoder"]
    run, resume = prepare_run_dir(out, resume, KIND)
    handler = attach_log(run)
    try:
        train = load_training_data(data, show_progress=show_progress)
        spec = autoencoder_spec(cfg, train.spatial_dims, train.images.shape[1])
        image_size = train.dataset.image_size
        config = {
            "kind": KIND,
            "network": spec,
            "image_size": image_size,
            "spatial_dims": train.spatial_dims,
            "has_masks": train.has_masks,
            "latent_shape": latent_shape(spec, image_size),
            "schema": train.schema.to_json(),
            "dataset": {"name": train.dataset.name, "hash": train.dataset.content_hash()},
            "profile": settings.get("profile"),
            "settings": cfg,
        }
        write_json_atomic(run / "config.json", config)
        seed = int(cfg["seed"])
        torch.manual_seed(seed)
        model = build_autoencoder(spec)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]))
        modules: dict[str, torch.nn.Module] = {"model": model}
        optimizers: dict[str, torch.optim.Optimizer] = {"optimizer": optimizer}
        adversarial = float(cfg["adversarial_weight"]) > 0
        if adversarial:
            disc = PatchDiscriminator(
                spatial_dims=train.spatial_dims,
                channels=int(cfg["discriminator_channels"]),
                in_channels=spec["in_channels"],
                num_layers_d=2,
            )
            disc_opt = torch.optim.AdamW(disc.parameters(), lr=float(cfg["lr"]))
            modules["discriminator"], optimizers["discriminator_optimizer"] = disc, disc_opt
            adv_loss = PatchAdversarialLoss(criterion="least_squares")
        accelerator = make_accelerator(cfg["mixed_precision"])
        device = accelerator.device
        for module in modules.values():
            module.to(device)
        identity = {"dataset_hash": config["dataset"]["hash"], "settings_hash": settings_hash(cfg)}
        start, elapsed = 0, 0.0
        if resume:
            state = load_checkpoint(run, modules, optimizers)
            check_resume(state, identity, run)
            start, elapsed = int(state["step"]), float(state["wall_seconds"])
            log.info("resuming autoencoder at step %d", start)
        ssim = SSIMLoss(train.spatial_dims, data_range=2.0, win_size=int(cfg["ssim_kernel"]))
        batch, rank, world = (
            int(cfg["batch_size"]),
            accelerator.process_index,
            accelerator.num_processes,
        )
        preview_idx = np.arange(min(8, len(train)))

        def train_step(step: int) -> dict[str, float]:
            model.train()
            idx = train.batch_indices(step, batch, seed, rank, world)
            x = train.images[idx].to(device)
            gen = step_generator(seed, step, rank)
            with accelerator.autocast():
                z_mu, z_sigma = model.encode(x)
                recon = model.decode(sample_latent(z_mu, z_sigma, gen))
            recon = recon.float()
            l1 = (recon - x).abs().mean()
            ssim_value = ssim(recon, x)
            kl = kl_loss(z_mu.float(), z_sigma.float())
            loss = l1 + float(cfg["ssim_weight"]) * ssim_value + float(cfg["kl_weight"]) * kl
            losses = {"l1": l1.item(), "ssim": ssim_value.item(), "kl": kl.item()}
            use_adv = adversarial and step >= int(cfg["adversarial_start"])
            if use_adv:
                with accelerator.autocast():
                    fake = disc(recon.contiguous())[-1]
                g_adv = adv_loss(fake.float(), target_is_real=True, for_discriminator=False)
                loss = loss + float(cfg["adversarial_weight"]) * g_adv
                losses["g_adv"] = g_adv.item()
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            if use_adv:
                with accelerator.autocast():
                    fake = disc(recon.detach().contiguous())[-1]
                    real = disc(x.contiguous())[-1]
                d_loss = 0.5 * (
                    adv_loss(fake.float(), target_is_real=False, for_discriminator=True)
                    + adv_loss(real.float(), target_is_real=True, for_discriminator=True)
                )
                disc_opt.zero_grad(set_to_none=True)
                accelerator.backward(d_loss)
                disc_opt.step()
                losses["d_adv"] = d_loss.item()
            losses["loss"] = loss.item()
            return losses

        def checkpoint(step: int, wall: float) -> None:
            if not accelerator.is_main_process:
                return
            save_checkpoint(run, step, modules, optimizers, {**identity, "wall_seconds": wall})
            save_reconstructions(
                model, train.images[preview_idx], run / "samples" / f"recon_step{step:07d}.png"
            )

        result = run_loop(
            total_steps=int(cfg["steps"]),
            start_step=start,
            max_minutes=float(cfg["max_minutes"]),
            checkpoint_every=int(cfg["checkpoint_every"]),
            elapsed_before=elapsed,
            train_step=train_step,
            checkpoint=checkpoint,
            desc="autoencoder",
            show_progress=show_progress,
        )
        save_weights(run / WEIGHTS, model.state_dict())
        card = {
            "kind": KIND,
            "dataset": config["dataset"],
            "profile": settings.get("profile"),
            "steps": result.step,
            "stopped_by": result.stopped_by,
            "max_minutes_hit": result.stopped_by == "max_minutes",
            "wall_seconds": round(result.wall_seconds, 1),
            "mixed_precision": accelerator.mixed_precision,
            "final_losses": result.losses,
            "network": spec,
            "params": cfg,
            "weights": WEIGHTS,
        }
        write_model_card(run, card)
        log.info(
            "autoencoder done: %d steps in %.0f s -> %s", result.step, result.wall_seconds, run
        )
        return card
    finally:
        logging.getLogger("radsynth").removeHandler(handler)
        handler.close()


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
