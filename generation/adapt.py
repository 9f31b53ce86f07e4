"""`radsynth train adapt`: fine-tune a trained model on a small subset (a rare class, one site),
fully (default: continuing the parent's lr and batch) or with LoRA on the UNet's linear layers,
recording the lineage in the card."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from conditioning.dataset import ConditionSchema, load_dataset

from .lora import add_lora, merge_lora
from .pipeline import AE_DIR, model_hash, read_config
from .train_diffusion import train_diffusion


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


def adapt_model(
    parent: str | Path,
    data: str | Path,
    out: str | Path,
    settings: dict[str, Any],
    *,
    where: list[str] | None = None,
    limit: int | None = None,
    lora_rank: int | None = None,
    full: bool = False,
    steps: int | None = None,
    replay: float | None = None,
    exclude: list[str | Path] | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune the model run `parent` on the selected train images of `data`; returns the card.

    `replay` (default params `adapt.replay`) mixes that share of train images that do not match
    `where` into every batch, so the other conditions and the unconditional branch stay put.
    `exclude` names datasets (e.g. the parent's) whose images, matched by pixel hash in any split,
    are not adapted on: the few-shot images are then ones the parent never saw."""
    parent = Path(parent)
    config = read_config(parent)
    if config.get("kind") != "latent-diffusion":
        raise ValueError(f"{parent}: not a latent-diffusion model run")
    schema = ConditionSchema.from_json(config["schema"])
    selection = parse_where(schema, where or [])
    cfg = dict(settings["adapt"])
    seed = int(cfg["seed"])
    rank = int(lora_rank if lora_rank is not None else cfg["lora_rank"] or 0)
    rank = None if full or rank == 0 else rank
    if rank is not None and rank < 0:
        raise ValueError(f"--lora must be a positive rank, got {rank}")
    parent_settings = config.get("settings") or settings["diffusion"]
    for key in ("lr", "batch_size"):  # unset: continue with the parent's own setting
        if cfg.get(key) is None:
            cfg[key] = parent_settings[key]
    skip, excluded = excluded_hashes(exclude or [])
    # chosen once, here, so an empty selection fails before the run directory exists
    chosen_ids = [
        r.id
        for r in select_records(load_dataset(data).split("train"), selection, limit, seed, skip)
    ]

    def limit_to(records):
        keep = set(chosen_ids)
        return [r for r in records if r.id in keep]

    def trainable(unet):
        if rank is None:
            return list(unet.parameters())
        unet.requires_grad_(False)
        params = add_lora(unet.unet, rank, skip=("class_embedding",))
        encoder = unet.unet.class_embedding.requires_grad_(True)
        return params + list(encoder.parameters())

    overrides = {"steps": steps, "replay": replay}
    cfg = {**cfg, **{k: v for k, v in overrides.items() if v is not None}}
    settings = {**settings, "adapt": cfg}
    if not selection:  # nothing lies outside the selection: the params default does not apply
        if replay:
            raise ValueError("--replay needs --where: replayed images are those outside it")
        cfg["replay"] = 0.0
    replay_share = float(cfg.get("replay", 0.0))

    def replay_from(records):
        return [r for r in records if any(r.conditions.get(k) != v for k, v in selection.items())]

    lineage = {
        "parent_model": str(parent.resolve()),
        "parent_model_hash": model_hash(parent),
        "method": "full fine-tuning" if rank is None else f"LoRA rank {rank} (merged)",
        "where": selection,
        "limit": limit,
        "selection_seed": seed,
        "replay_share": replay_share,
        "excluded_datasets": excluded,
    }

    def record_selection(card):
        card["lineage"]["images"] = len(chosen_ids)
        card["lineage"]["image_ids_sha256"] = hashlib.sha256(
            "\n".join(chosen_ids).encode()
        ).hexdigest()
        card["lineage"]["image_ids"] = chosen_ids
        return card

    card = train_diffusion(
        data,
        parent / AE_DIR,
        out,
        settings,
        resume=resume,
        show_progress=show_progress,
        limit_to=limit_to,
        replay_from=replay_from,
        init_from=parent,
        lineage=lineage,
        section="adapt",
        trainable=trainable,
        finalize=merge_lora if rank is not None else None,
    )
    from accelerate import PartialState

    from .model_card import write_model_card

    card = record_selection(card)
    if PartialState().is_main_process:  # one writer under `accelerate launch`
        write_model_card(out, card)
    return card
