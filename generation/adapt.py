"""`radsynth train adapt`: fine-tune a trained model on a small subset (a rare class, one site),
fully (default: continuing the parent's lr and batch) or with LoRA on the UNet's linear layers,
recording the lineage in the card.

Its own small trainer: the parent's space (its autoencoder and latent statistics, or pixels),
schedule, UNet and weights, the selected images (with a replayed share of the others), then the
diffusion training loop unchanged."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.dataset import ConditionSchema, load_dataset

from .checkpoints import load_into
from .config import AdaptConfig, AdaptedConfig, DiffusionConfig, Profile, RunSettings
from .data import load_training_data
from .lora import add_lora, merge_lora
from .model_card import write_model_card
from .pipeline import AE_DIR, UNET_WEIGHTS, model_hash, read_config
from .runs import make_accelerator, open_run
from .space import space_name
from .train_diffusion import KIND, prepare_latents, prepare_pixels, run_config, save_run
from .unet import ConditionedUNet
from .unet_trainer import RunPlace, train_unet

log = logging.getLogger("radsynth.train")


def parse_where(schema: ConditionSchema, where: list[str]) -> dict[str, Any]:
    """["pathology=viral", ...] -> parsed values; unknown names or values raise a ValueError."""
    request: dict[str, Any] = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--where {item!r} must look like KEY=VALUE")
        request[key.strip()] = value.strip()
    return {k: v for k, v in schema.validate_request(request).items() if k in request}


def select_records(
    records, where: dict[str, Any], limit: int | None, seed: int, skip: frozenset[str] = frozenset()
):
    """Records matching every `where` value whose pixel hash is not in `skip`; at most `limit`,
    drawn by a seeded permutation."""
    chosen = [r for r in records if all(r.conditions.get(k) == v for k, v in where.items())]
    fresh = [r for r in chosen if r.sha256 not in skip]
    if not fresh:
        why = f" that the excluded datasets do not hold ({len(chosen)} do)" if chosen else ""
        raise ValueError(f"no training image matches {where}{why}")
    chosen = fresh
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        order = np.random.default_rng(seed).permutation(len(chosen))[:limit]
        chosen = [chosen[i] for i in sorted(order)]
    return chosen


def excluded_hashes(datasets: list[str | Path]) -> tuple[frozenset[str], list[dict[str, Any]]]:
    """Pixel hashes of every image of `datasets`, and their names and content hashes for the
    lineage (not their paths)."""
    hashes: set[str] = set()
    described = []
    for path in datasets:
        dataset = load_dataset(path)
        hashes.update(r.sha256 for r in dataset.records)
        described.append(
            {"name": dataset.name, "hash": dataset.content_hash(), "images": len(dataset.records)}
        )
    return frozenset(hashes), described


@dataclass(frozen=True)
class Adaptation:
    """What an adapted run starts from and trains on: the parent run and its config, the
    selected image ids and the `where` values that picked them (the rest may be replayed), the
    LoRA rank (None: every weight) and the lineage its card records."""

    parent: Path
    parent_config: dict[str, Any]
    where: dict[str, Any]
    chosen_ids: list[str]
    rank: int | None
    lineage: dict[str, Any]

    def limit_to(self, records):
        keep = set(self.chosen_ids)
        return [r for r in records if r.id in keep]

    def replay_from(self, records):
        where = self.where.items()
        return [r for r in records if any(r.conditions.get(k) != v for k, v in where)]

    def trainable(self, unet) -> list[torch.nn.Parameter]:
        """Every weight, or LoRA (peft) on the UNet's linear layers plus the condition encoder;
        with LoRA, `unet.unet` becomes peft's LoraModel until `merge_lora` unwraps it."""
        if self.rank is None:
            return list(unet.parameters())
        unet.requires_grad_(False)
        unet.unet = add_lora(unet.unet, self.rank, skip=("class_embedding",))
        params = [p for p in unet.parameters() if p.requires_grad]
        encoder = unet.unet.class_embedding.requires_grad_(True)
        return params + list(encoder.parameters())


@dataclass(frozen=True)
class AdaptOptions:
    """What one adaptation asks beyond params.yaml's `adapt` section (the command's flags): the
    `where` selection (KEY=VALUE items), at most `limit` images, a LoRA rank or `full`
    fine-tuning, steps and replay share (None: the params value) and the datasets to exclude.

    `replay` mixes that share of train images that do not match `where` into every batch, so the
    other conditions and the unconditional branch stay put. `exclude` names datasets (e.g. the
    parent's) whose images, matched by pixel hash in any split, are not adapted on: the few-shot
    images are then ones the parent never saw."""

    where: tuple[str, ...] = ()
    limit: int | None = None
    lora_rank: int | None = None
    full: bool = False
    steps: int | None = None
    replay: float | None = None
    exclude: tuple[str | Path, ...] = ()


def adapt_model(
    parent: str | Path,
    data: str | Path,
    out: str | Path,
    settings: Profile,
    options: AdaptOptions | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the model run `parent` on the train images of `data` that `options` select;
    returns the card."""
    options = options or AdaptOptions()
    limit, steps, replay = options.limit, options.steps, options.replay
    parent = Path(parent)
    config = parent_config(parent)
    selection = parse_where(ConditionSchema.from_json(config["schema"]), list(options.where))
    cfg = settings.adapt
    rank = lora_rank_of(cfg, options.lora_rank, options.full)
    trained = parent_training(parent, config, settings)
    for key in ("lr", "batch_size"):  # unset: continue with the parent's own setting
        if getattr(cfg, key) is None:
            cfg = replace(cfg, **{key: getattr(trained, key)})
    skip, excluded = excluded_hashes(list(options.exclude))
    # chosen once, here, so an empty selection fails before the run directory exists
    train_records = load_dataset(data).split("train")
    seed = int(cfg.seed)
    chosen_ids = [r.id for r in select_records(train_records, selection, limit, seed, skip)]
    cfg = cfg.updated("adapt options", **{
        k: v for k, v in {"steps": steps, "replay": replay}.items() if v is not None
    })  # fmt: skip
    if not selection:  # nothing lies outside the selection: the params default does not apply
        if replay:
            raise ValueError("--replay needs --where: replayed images are those outside it")
        cfg = replace(cfg, replay=0.0)
    lineage = {
        "parent_model": str(parent.resolve()),
        "parent_model_hash": model_hash(parent),
        "method": "full fine-tuning" if rank is None else f"LoRA rank {rank} (merged)",
        "where": selection,
        "limit": limit,
        "selection_seed": seed,
        "replay_share": float(cfg.replay),
        "excluded_datasets": excluded,
        "images": len(chosen_ids),
        "image_ids_sha256": hashlib.sha256("\n".join(chosen_ids).encode()).hexdigest(),
        "image_ids": chosen_ids,
    }
    adaptation = Adaptation(parent, config, selection, chosen_ids, rank, lineage)
    return train_adapted(adaptation, data, out, replace(settings, adapt=cfg), resume, show_progress)


def parent_config(parent: Path) -> dict[str, Any]:
    config = read_config(parent)
    if config.get("kind") != "latent-diffusion":
        raise ValueError(f"{parent}: not a latent-diffusion model run")
    return config


def parent_training(parent: Path, config: dict[str, Any], settings: Profile):
    """The settings the parent run trained with: its training_config.json, checked as a
    profile is; for a run from before that file, its config.json `settings` (else the
    profile's diffusion section)."""
    saved = RunSettings.read(parent)
    if saved is not None:
        return saved.config
    old = config.get("settings")
    if not old:
        return settings.diffusion
    kind = AdaptedConfig if "warmup_steps" in old else DiffusionConfig
    return kind.from_json(old, f"{parent / 'config.json'} settings")


def lora_rank_of(cfg: AdaptConfig, lora_rank: int | None, full: bool) -> int | None:
    """The LoRA rank asked for (--lora, else params), or None for full fine-tuning."""
    rank = int(lora_rank if lora_rank is not None else cfg.lora_rank or 0)
    rank = None if full or rank == 0 else rank
    if rank is not None and rank < 0:
        raise ValueError(f"--lora must be a positive rank, got {rank}")
    return rank


def train_adapted(
    adaptation: Adaptation,
    data: str | Path,
    out: str | Path,
    settings: Profile,
    resume: bool,
    show_progress: bool,
) -> dict[str, Any]:
    """Train (or resume) the adapted run in `out` from its parent; returns its model card."""
    parent = adaptation.parent_config
    # the parent's space, whatever the profile's diffusion section says
    settings = replace(settings, diffusion=replace(settings.diffusion, space=space_name(parent)))
    cfg = AdaptedConfig.merge(settings.diffusion, settings.adapt, settings.diffusion.space)
    accelerator = make_accelerator(cfg.mixed_precision, int(cfg.grad_accum))
    with open_run(out, resume, KIND, accelerator) as (run, resume):
        place = RunPlace(run, resume, accelerator, cfg, settings, "adapt", show_progress)
        main = accelerator.is_main_process
        train = load_training_data(
            data,
            limit_to=adaptation.limit_to,
            replay_from=adaptation.replay_from,
            replay_share=float(cfg.replay),
            show_progress=show_progress and main,
        )
        if cfg.space == "pixel":
            inputs = prepare_pixels(train, place)
        else:
            stats = (parent["latent_mean"], parent["latent_std"])
            inputs = prepare_latents(train, adaptation.parent / AE_DIR, place, stats)
        schedule = dict(parent["schedule"])  # schedule_spec's, as the parent saved it
        config = run_config(inputs, settings, cfg, parent["unet"], schedule, parent.get("schema"))
        if parent["schema"] != train.schema.to_json():
            raise ValueError(
                f"{data}: condition schema differs from the parent model's; adapt needs the same schema"
            )
        torch.manual_seed(int(cfg.seed))
        unet = ConditionedUNet(parent["unet"], train.schema, mask_input=train.has_masks)
        load_into(unet, adaptation.parent / UNET_WEIGHTS)
        params = adaptation.trainable(unet)
        trained = train_unet(place, inputs, config, unet, params, ema_warmup=False)
        final = trained.ema.model if adaptation.rank is None else merge_lora(trained.ema.model)
        card = {**save_run(place, config, trained, final, settings), "lineage": adaptation.lineage}
        if main:
            write_model_card(run, card)
        log.info("diffusion done: %d steps in %.0f s -> %s", trained.result.step,
                 trained.result.wall_seconds, run)  # fmt: skip
        return card
