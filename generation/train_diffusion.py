"""Train the conditioned diffusion UNet on the latents of a trained autoencoder.

Latents are the autoencoder's means, computed once (the autoencoder is frozen), scaled to unit
variance. Training: DDPM noise schedule, epsilon or v prediction, min-SNR weighting, per-attribute
condition dropout (classifier-free guidance), EMA weights (the ones saved for sampling).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from conditioning.dataset import write_json_atomic
from conditioning.encoders import drop_conditions

from .autoencoder import build_autoencoder
from .checkpoints import file_sha256, load_into, save_weights
from .data import TrainingData, load_training_data
from .ema import EMA
from .generate_set import training_distribution
from .grids import grid_conditions, save_grid
from .model_card import write_model_card
from .parallel import (
    global_batch,
    mean_over_processes,
    replica_digests,
)
from .pipeline import AE_DIR, AE_WEIGHTS, CONFIG, UNET_WEIGHTS, LatentDiffusionModel, model_hash
from .runs import (
    card_basics,
    make_accelerator,
    open_run,
    resume_run,
    step_generator,
    train_run,
    write_checkpoint,
)
from .schedulers import schedule_spec, snr_weights, training_scheduler
from .train_autoencoder import WEIGHTS as AE_RUN_WEIGHTS
from .train_autoencoder import settings_hash
from .unet import ConditionedUNet, hide_masks, mask_to_input, unet_spec

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


def train_diffusion(
    data: str | Path,
    autoencoder_run: str | Path,
    out: str | Path,
    settings: dict[str, Any],
    resume: bool = False,
    show_progress: bool = True,
    limit_to=None,
    replay_from=None,
    init_from: str | Path | None = None,
    lineage: dict[str, Any] | None = None,
    section: str = "diffusion",
    trainable=None,
    finalize=None,
) -> dict[str, Any]:
    """Train (or resume) a diffusion run in `out`; returns its model card.

    `limit_to`, `replay_from`, `init_from`, `lineage`, `trainable`, `finalize` serve
    `train adapt`: a record filter, the pool replayed beside it (`replay` share), a parent run
    to start from, what to record about it, a hook that picks (or adds) the trained params, and
    one that turns the trained UNet back into a plain one before saving."""
    cfg = dict(settings["diffusion"])
    if section != "diffusion":
        cfg.update(settings[section])
    accelerator = make_accelerator(cfg["mixed_precision"], int(cfg.get("grad_accum", 1)))
    with open_run(out, resume, KIND, accelerator) as (run, resume):
        main = accelerator.is_main_process
        train = load_training_data(
            data,
            limit_to=limit_to,
            replay_from=replay_from,
            replay_share=float(cfg.get("replay", 0.0)),
            show_progress=show_progress and main,
        )
        ae_path = Path(autoencoder_run)
        ae_config, autoencoder, ae_weights = load_autoencoder_run(ae_path)
        check_compatible(ae_config, train, ae_path)
        batch = global_batch(cfg, accelerator)
        device = accelerator.device
        autoencoder.to(device)
        log.info("encoding %d training images to latents", len(train))
        latents = encode_all(autoencoder, train.images.to(device))
        parent = json.loads((Path(init_from) / CONFIG).read_text()) if init_from else None
        # standardise each latent channel: the autoencoder's channels have means of several
        # standard deviations, which the unit-variance noise of diffusion does not expect
        if parent:
            mean, std = parent["latent_mean"], parent["latent_std"]
        else:
            dims = [0, *range(2, latents.ndim)]
            mean = latents.mean(dims).tolist()
            std = latents.std(dims).clamp_min(1e-6).tolist()
        view = (1, -1, *([1] * (latents.ndim - 2)))
        stats = [torch.tensor(s, device=latents.device).view(view) for s in (mean, std)]
        latents = (latents - stats[0]) / stats[1]
        mask_inputs = None
        if train.has_masks:
            masks01 = (train.images[:, 1:2] > 0).float()
            mask_inputs = mask_to_input(masks01, list(latents.shape[2:])).to(device)
        schedule = schedule_spec(parent["schedule"] if parent else cfg)
        spec = (
            parent["unet"]
            if parent
            else unet_spec(
                cfg, train.spatial_dims, ae_config["network"]["latent_channels"], train.has_masks
            )
        )
        config = {
            "kind": KIND,
            "format_version": 1,
            "image_size": train.dataset.image_size,
            "spatial_dims": train.spatial_dims,
            "has_masks": train.has_masks,
            "schema": (parent or {}).get("schema") or train.schema.to_json(),
            "latent_shape": list(latents.shape[1:]),
            "latent_mean": mean,
            "latent_std": std,
            "unet": spec,
            "schedule": schedule,
            "autoencoder": {
                "network": ae_config["network"],
                "weights": f"{AE_DIR}/{AE_WEIGHTS}",
                "source": ae_path.resolve().name,  # a run name: no local path travels
                "sha256": file_sha256(ae_weights),
            },
            "generate": settings["generate"],
            "training_conditions": training_distribution(
                train.schema, [r.conditions for r in train.focus_records]
            ),
            "dataset": {"name": train.dataset.name, "hash": train.dataset.content_hash()},
            "profile": settings.get("profile"),
            "settings": cfg,
            "global_batch": batch.describe(),
        }
        if parent and parent["schema"] != train.schema.to_json():
            raise ValueError(
                f"{data}: condition schema differs from the parent model's; adapt needs the same schema"
            )
        seed = int(cfg["seed"])
        torch.manual_seed(seed)
        unet = ConditionedUNet(spec, train.schema, mask_input=train.has_masks)
        if init_from:
            load_into(unet, Path(init_from) / UNET_WEIGHTS)
        params = trainable(unet) if trainable else list(unet.parameters())
        optimizer = torch.optim.AdamW(params, lr=float(cfg["lr"]))
        unet.to(device)
        ema = EMA(unet, float(cfg["ema_decay"]), warmup=init_from is None)
        modules = {"unet": unet, "ema": ema.model}
        optimizers = {"optimizer": optimizer}
        identity = {
            "dataset_hash": config["dataset"]["hash"],
            "settings_hash": settings_hash(cfg),
            "global_batch_size": batch.size,
        }
        start, elapsed = 0, 0.0
        if resume:
            start, elapsed = resume_run(run, modules, optimizers, identity, accelerator, section)
        net, opt = accelerator.prepare(unet, optimizer)
        if main:  # everything generation needs lives in the run: the autoencoder is copied in
            (run / AE_DIR).mkdir(exist_ok=True)
            shutil.copyfile(ae_path / CONFIG, run / AE_DIR / CONFIG)
            shutil.copyfile(ae_weights, run / AE_DIR / AE_WEIGHTS)
            write_json_atomic(run / CONFIG, config)

        noise_sched = training_scheduler(schedule)
        table = noise_sched.alphas_cumprod
        horizon = schedule["num_train_timesteps"]
        v_pred = schedule["prediction_type"] == "v_prediction"

        base_lr, warmup = float(cfg["lr"]), int(cfg.get("warmup_steps", 0))

        def micro_step(z0, noise, t, cond, mask_in) -> dict[str, float]:
            zt = noise_sched.add_noise(z0, noise, t)
            target = noise_sched.get_velocity(z0, noise, t) if v_pred else noise
            with accelerator.autocast():
                pred = net(zt, t, cond, mask_in)
            per_image = ((pred.float() - target) ** 2).flatten(1).mean(1)
            weights = snr_weights(t, schedule, float(cfg["min_snr_gamma"]), table)
            loss = (weights * per_image).mean()
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return {"loss": loss.item(), "mse": per_image.mean().item()}

        def train_step(step: int) -> dict[str, float]:
            net.train()
            # linear warmup, a function of the step alone so a resumed run gets the same rates:
            # a fresh Adam moves every weight by about lr on its first steps, which jolts a
            # trained model that is being fine-tuned
            for group in optimizer.param_groups:
                group["lr"] = base_lr * min(1.0, (step + 1) / warmup) if warmup else base_lr
            # the global batch, drawn whole on every process; each trains on its slices
            idx = torch.from_numpy(train.batch_indices(step, batch.size, seed))
            gen = step_generator(seed, step)
            z0 = latents[idx.to(latents.device)]
            noise = torch.randn(z0.shape, generator=gen).to(device)
            t = torch.randint(0, horizon, (len(idx),), generator=gen).to(device)
            cond = drop_conditions(train.conditions[idx], float(cfg["condition_dropout"]), gen).to(
                device
            )
            mask_in = None
            if mask_inputs is not None:
                mask_in = hide_masks(mask_inputs[idx.to(device)], float(cfg["mask_dropout"]), gen)
            losses = []
            for part in batch.micro_slices(accelerator.process_index):
                with accelerator.accumulate(net):
                    masks = None if mask_in is None else mask_in[part]
                    losses.append(micro_step(z0[part], noise[part], t[part], cond[part], masks))
            if not opt.step_was_skipped:  # fp16 overflow: the weights did not move
                ema.update(unet, step)
            return mean_over_processes(accelerator, losses)

        def checkpoint(step: int, wall: float) -> None:
            if not main:
                return
            write_checkpoint(run, step, wall, modules, optimizers, identity, accelerator)
            model = LatentDiffusionModel(config, ema.model, autoencoder, device=device)
            save_sample_grid(
                model, run / "samples" / f"grid_step{step:07d}.png", int(cfg["grid_columns"]), seed
            )
            ema.model.eval()

        result = train_run(
            cfg, start, elapsed, train_step, checkpoint, section, show_progress, accelerator
        )
        digests = replica_digests(accelerator, ema.model)
        final = finalize(ema.model) if finalize else ema.model
        if main:
            save_weights(run / UNET_WEIGHTS, final.state_dict())
        accelerator.wait_for_everyone()  # the model hash reads the saved weights
        card = {
            "kind": KIND,
            "model_hash": model_hash(run),
            "dataset": config["dataset"],
            "autoencoder": {k: config["autoencoder"][k] for k in ("source", "sha256")},
            "profile": settings.get("profile"),
            **card_basics(result, accelerator, batch, digests),
            "conditioning": "per-attribute embeddings summed into the UNet time embedding; "
            "classifier-free guidance by per-attribute dropout",
            "schema": config["schema"],
            "unet": spec,
            "schedule": schedule,
            "params": cfg,
            "samples": "samples/",
        }
        if lineage:
            card["lineage"] = lineage
        if main:
            write_model_card(run, card)
        log.info("diffusion done: %d steps in %.0f s -> %s", result.step, result.wall_seconds, run)
        return card


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
