"""`radsynth audit-bench`: how fast the audit's search scales, and how well copy detection
works on a real dataset (altered training copies mixed with real held-out images)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    from privacy_audit.config import BF16_HELP, AuditSettings

    d = AuditSettings()
    parser = sub.add_parser("audit-bench", help="benchmarks of the privacy audit")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    search = actions.add_parser("search", help="time embedding, top-k search and NCC re-scoring")
    search.add_argument("--queries", type=int, default=10_000)
    search.add_argument("--train", type=int, default=5_000)
    search.add_argument("--size", type=int, default=64)
    search.add_argument("--threads", type=int, default=2)
    search.add_argument("--no-ncc", action="store_true", help="time the search only")
    search.add_argument("--bf16", action="store_true", help=BF16_HELP)
    search.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="the detector and the former method take turns this many times; medians reported",
    )
    copies = actions.add_parser(
        "copies", help="flag rates on altered training copies vs real held-out images"
    )
    copies.add_argument("--data", required=True, help="dataset (with train/val/test splits)")
    copies.add_argument("--out", required=True, help="working folder: the set and its report")
    copies.add_argument("--copies", type=int, default=1000)
    copies.add_argument(
        "--fresh-split",
        default="test",
        help="real images mixed in: never trained on, not the calibration split",
    )
    copies.add_argument("--holdout-split", default=d.holdout_split)
    copies.add_argument("--quantile", type=float, default=d.quantile)
    copies.add_argument("--encoder-cache", metavar="DIR", default=d.encoder_cache)
    copies.add_argument("--encoder-steps", type=int, default=d.encoder_steps)
    copies.add_argument("--verifier-steps", type=int, default=d.verifier_steps)
    copies.add_argument("--seed", type=int, default=d.seed)
    copies.add_argument(
        "--sets",
        type=int,
        default=1,
        help="planted sets, seeds SEED, SEED+1, ... (OUT/seed-N each), their rates pooled",
    )
    copies.add_argument("--bf16", action="store_true", help=BF16_HELP)
    copies.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    if args.action == "search":
        from privacy_audit.bench import benchmark_search

        if args.repeats < 1:
            raise ValueError(f"--repeats {args.repeats}: must be at least 1")
        repeats = 0 if args.no_ncc else args.repeats
        result = benchmark_search(
            args.queries, args.train, args.size, repeats=repeats, bf16=args.bf16
        )
    else:
        from privacy_audit.bench import measure_copy_detection, measure_copy_detection_sets
        from privacy_audit.config import AuditSettings

        config = AuditSettings.from_namespace(args, "radsynth audit-bench copies").audit_config()
        if args.sets < 1:
            raise ValueError(f"--sets {args.sets}: must be at least 1")
        if args.sets == 1:
            result = measure_copy_detection(
                args.data, args.out, config, args.copies, args.fresh_split, args.seed
            )
        else:
            seeds = tuple(range(args.seed, args.seed + args.sets))
            result = measure_copy_detection_sets(
                args.data, args.out, config, args.copies, args.fresh_split, seeds
            )
        from conditioning.dataset import write_json_atomic

        write_json_atomic(Path(args.out) / "copy-detection.json", result)
    print(json.dumps(result, indent=2))
    return 0
