"""`radsynth subset`: a scarce-class copy of a dataset, e.g. the Kermany train split with only 10%
of its viral-pneumonia images, to train a generator that saw only those (rare-class studies)."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser(
        "subset", help="copy a dataset keeping only a share of one class in one split"
    )
    parser.add_argument("--data", required=True, help="parent dataset directory")
    parser.add_argument("--out", required=True, help="dataset directory to create")
    parser.add_argument(
        "--where",
        required=True,
        metavar="KEY=VALUE",
        help="the class to thin, e.g. pathology=viral",
    )
    parser.add_argument(
        "--fraction", type=float, required=True, help="share of its images kept (0 < f <= 1)"
    )
    parser.add_argument("--split", default="train", help="split thinned (others are copied whole)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the choice; `radsynth bench utility --subset-seed` draws the same one",
    )
    parser.add_argument("--name", help="dataset name (default: parent-VALUEpct)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=run)


def run(args) -> int:
    from conditioning.dataset import SubsetRule, load_dataset, write_subset

    key, sep, value = args.where.partition("=")
    if not sep or not key or not value:
        raise ValueError(f"--where must be KEY=VALUE, got {args.where!r}")
    subset = write_subset(
        load_dataset(args.data),
        args.out,
        SubsetRule(key, value, args.fraction, args.split, args.seed),
        name=args.name,
        overwrite=args.overwrite,
    )
    rule = subset.info["ingest_report"]["subset"]
    print(
        f"{args.out}: {rule['kept']} of {rule['kept'] + rule['dropped']} {key}={value} images "
        f"kept in {args.split}; {len(subset.records)} images in all"
    )
    return 0
