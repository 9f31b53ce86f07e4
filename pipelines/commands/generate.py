"""`radsynth generate`: condition-controlled synthetic images from a trained model run."""

from __future__ import annotations

from generation.config import BALANCED, SAMPLERS, GenerateConfig

# Unset flags take the model's saved defaults (its config.json `generate`), which training took
# from GenerateConfig: the help names those, and no default is repeated here.
_D = GenerateConfig


def register(sub) -> None:
    parser = sub.add_parser("generate", help="generate synthetic images from a trained model")
    parser.add_argument(
        "--model", required=True, help="model run directory (train diffusion --out)"
    )
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a condition for every image (repeatable), e.g. pathology=viral age_months=30; "
        "a continuous one may be a range drawn per image, e.g. age_months=0:36",
    )
    parser.add_argument(
        "--balanced",
        choices=BALANCED,
        help="spread N over the condition grid, or match the training distribution",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        help=f"classifier-free guidance scale (default: the model's, usually {_D.guidance:g})",
    )
    parser.add_argument(
        "--steps", type=int, help=f"sampling steps (default: the model's, usually {_D.steps})"
    )
    parser.add_argument(
        "--sampler",
        help=f"{', '.join(SAMPLERS)} (default: the model's, usually {_D.sampler})",
    )
    parser.add_argument("--seed", type=int, required=True, help="run seed (image i: seed + index)")
    parser.add_argument("--out", required=True, help="output directory (re-run completes it)")
    parser.add_argument(
        "--masks",
        metavar="DIR",
        help="masked models: fit these masks (.png/.nii.gz, image i gets mask i mod M) "
        "instead of drawing new ones",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=f"images per batch (default: the model's, usually {_D.batch_size})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=run)


def parse_conditions(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--condition {pair!r} must look like KEY=VALUE")
        if key.strip() in out:
            raise ValueError(f"--condition {key.strip()} given twice")
        out[key.strip()] = value.strip()
    return out


def run(args) -> int:
    from accelerate import PartialState

    from generation import load_model
    from generation.generate_set import SetRequest, generate_set
    from generation.sampling import Sampling
    from pipelines.commands.train import set_threads

    set_threads(args.threads)
    conditions = parse_conditions(args.condition)
    model = load_model(args.model)
    state = PartialState(cpu=True) if not _cuda() else PartialState()
    if state.num_processes > 1:
        model.to(state.device)
    summary = generate_set(
        model,
        args.out,
        SetRequest(args.n, conditions, args.seed, args.balanced, args.masks),
        Sampling(
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            batch_size=args.batch_size,
        ),
        accelerator=state if state.num_processes > 1 else None,
        show_progress=not args.no_progress,
    )
    if state.is_main_process:
        print(
            f"{summary['out']}: {summary['n']} images "
            f"({summary['generated']} generated, {summary['already_present']} already present)"
        )
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
