"""`radsynth augment`: a training-ready dataset mixing a release into a real training split."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser(
        "augment", help="merge a synthetic release into a real dataset's training split"
    )
    parser.add_argument("--release", required=True, help="release (or generated set) directory")
    parser.add_argument("--data", required=True, help="real dataset directory")
    parser.add_argument("--out", required=True, help="output dataset directory")
    parser.add_argument(
        "--synthetic-fraction",
        type=float,
        help="share of the final training split that is synthetic (0..1)",
    )
    parser.add_argument(
        "--balance",
        choices=("none", "equal"),
        default="none",
        help="equal: add synthetic images to the smaller classes until they match the largest",
    )
    parser.add_argument(
        "--attribute", help="categorical condition to balance (default: the first one)"
    )
    parser.add_argument(
        "--recipe",
        choices=("mix", "balanced", "pretrain-finetune", "filter"),
        default="balanced",
        help="how the set is meant to be trained on, recorded in dataset.json (docs/utility.md; "
        "default balanced, the recipe measured to keep the rare class): "
        "balanced weights every class the same within each origin and each origin by its size "
        "(`pipelines.augment.training_weights`); filter also drops synthetic images a real-trained classifier puts "
        "in another class",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..augment import AugmentOptions, augment

    options = AugmentOptions(
        synthetic_fraction=args.synthetic_fraction,
        balance=args.balance,
        attribute=args.attribute,
        seed=args.seed,
        recipe=args.recipe,
    )
    out = augment(args.release, args.data, args.out, options, overwrite=args.overwrite)
    from conditioning.dataset import load_dataset

    counts = load_dataset(out).info["counts"]["train"]
    print(f"{out}: train split {counts['images']} images ({counts['origin']})")
    return 0
