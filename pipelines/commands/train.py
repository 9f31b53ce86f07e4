"""`radsynth train autoencoder|diffusion|adapt`: train the latent diffusion model in two stages
(or, with a pixel-space profile, the diffusion model alone on the images), then optionally
adapt it to a small subset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from generation.config import Profile

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _common(parser) -> None:
    parser.add_argument(
        "--profile", help="smoke, demo, full, pixel... (default: params.yaml `profile`)"
    )
    parser.add_argument("--params", help="params file (default: ./params.yaml, else the repo's)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--grad-accum",
        type=int,
        metavar="N",
        help="accumulate gradients over N micro-batches per optimizer step (global batch = "
        "batch_size x processes x N; default: params)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 is far faster on a busy machine",
    )


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def register(sub) -> None:
    parser = sub.add_parser("train", help="train the autoencoder, the diffusion model, or adapt it")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    ae = stages.add_parser(
        "autoencoder", help="train the KL autoencoder on a dataset's train split"
    )
    ae.add_argument("--data", required=True, help="dataset directory")
    ae.add_argument("--out", required=True, help="run directory to create")
    _common(ae)
    ae.set_defaults(func=run_autoencoder)

    diff = stages.add_parser(
        "diffusion", help="train the conditioned diffusion UNet on latents (or on pixels)"
    )
    diff.add_argument("--data", required=True, help="dataset directory")
    diff.add_argument(
        "--autoencoder",
        help="autoencoder run directory: required in latent space, refused with a pixel-space "
        "profile (diffusion: space: pixel, e.g. --profile pixel)",
    )
    diff.add_argument("--out", required=True, help="model run directory to create")
    _common(diff)
    diff.set_defaults(func=run_diffusion)

    adapt = stages.add_parser("adapt", help="fine-tune a trained model on a small subset")
    adapt.add_argument("--model", required=True, help="parent model run directory")
    adapt.add_argument("--data", required=True, help="dataset directory (same condition schema)")
    adapt.add_argument("--out", required=True, help="adapted model run directory to create")
    adapt.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only train images with this condition (repeatable)",
    )
    adapt.add_argument("--limit", type=int, help="at most this many images (seeded choice)")
    how = adapt.add_mutually_exclusive_group()
    how.add_argument(
        "--lora", type=int, metavar="RANK", help="LoRA of this rank instead of full fine-tuning"
    )
    how.add_argument(
        "--full",
        action="store_true",
        help="fine-tune every weight (default unless params say a rank)",
    )
    adapt.add_argument("--steps", type=int, help="training steps (default: params adapt.steps)")
    adapt.add_argument(
        "--replay",
        type=float,
        metavar="SHARE",
        help="share of each batch drawn from train images outside --where, keeping the rest of "
        "the distribution (default: params adapt.replay)",
    )
    adapt.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="DATASET",
        help="skip images this dataset holds (matched by pixel hash), e.g. the parent model's "
        "training set, so adaptation sees only new images (repeatable)",
    )
    _common(adapt)
    adapt.set_defaults(func=run_adapt)


def settings_from(args) -> Profile:
    """The profile's training settings; the whole profile is checked, every section."""
    from pipelines.profile import load_pipeline_profile

    set_threads(args.threads)
    params = Path(args.params) if args.params else Path("params.yaml")
    if not args.params and not params.is_file():
        params = REPO_PARAMS
    settings = load_pipeline_profile(params, args.profile).training
    if args.grad_accum is not None:
        if args.grad_accum < 1:
            raise ValueError(f"--grad-accum must be at least 1, got {args.grad_accum}")
        settings = settings.updated(**{args.stage: {"grad_accum": args.grad_accum}})
    return settings


def run_autoencoder(args) -> int:
    from generation.train_autoencoder import train_autoencoder

    card = train_autoencoder(
        args.data,
        args.out,
        settings_from(args),
        resume=args.resume,
        show_progress=not args.no_progress,
    )
    _say(
        f"{args.out}: autoencoder trained for {card['steps']} steps ({card['stopped_by']}), "
        f"{card['wall_seconds']:.0f} s; losses {_losses(card)}"
    )
    return 0


def run_diffusion(args) -> int:
    from generation.train_diffusion import train_diffusion

    card = train_diffusion(
        args.data,
        args.autoencoder,
        args.out,
        settings_from(args),
        resume=args.resume,
        show_progress=not args.no_progress,
    )
    _say(
        f"{args.out}: diffusion model trained for {card['steps']} steps ({card['stopped_by']}), "
        f"{card['wall_seconds']:.0f} s; losses {_losses(card)}; model {card['model_hash'][:12]}"
    )
    return 0


def run_adapt(args) -> int:
    from generation.adapt import AdaptOptions, adapt_model

    options = AdaptOptions(
        where=tuple(args.where),
        limit=args.limit,
        lora_rank=args.lora,
        full=args.full,
        steps=args.steps,
        replay=args.replay,
        exclude=tuple(args.exclude),
    )
    card = adapt_model(
        args.model,
        args.data,
        args.out,
        settings_from(args),
        options,
        resume=args.resume,
        show_progress=not args.no_progress,
    )
    lineage = card["lineage"]
    _say(
        f"{args.out}: adapted {lineage['parent_model_hash'][:12]} on {lineage['images']} images "
        f"({lineage['method']}) for {card['steps']} steps; model {card['model_hash'][:12]}"
    )
    return 0


def _say(text: str) -> None:
    """The summary, once: under `accelerate launch` every process returns the same card."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(text)


def _losses(card: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in card["final_losses"].items())
