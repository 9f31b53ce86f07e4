"""`radsynth bench-sampling --model RUN`: images/s per sampler x steps, fp32 and bf16, vs 1000-step
DDPM on the same weights (numbers depend on the machine and on what else runs on it)."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("bench-sampling", help="time each sampler x steps on a trained model")
    parser.add_argument("--model", required=True, help="model run directory")
    parser.add_argument("--n", type=int, default=16, help="images per timing (default 16)")
    parser.add_argument("--steps", default="10,20,50", help="comma-separated step counts")
    parser.add_argument("--ddpm-1000-n", type=int, default=2, help="images for 1000-step DDPM")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from conditioning.dataset import write_json_atomic
    from generation import load_model
    from generation.bench import bench_sampling, format_table
    from pipelines.commands.train import set_threads

    set_threads(args.threads)
    try:
        steps = tuple(int(s) for s in args.steps.split(","))
    except ValueError:
        raise ValueError(f"--steps {args.steps!r} must be comma-separated integers") from None
    model = load_model(args.model)
    rows = bench_sampling(
        model, n=args.n, steps=steps, ddpm_1000_n=args.ddpm_1000_n, guidance=args.guidance
    )
    print(format_table(rows))
    if args.json:
        write_json_atomic(args.json, rows)
    return 0
