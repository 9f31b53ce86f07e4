"""`radsynth validate DATASET`: check a dataset directory against the format."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser(
        "validate", help="validate a dataset directory (format, splits, hashes)"
    )
    parser.add_argument("dataset", help="dataset directory")
    parser.add_argument("--pixels", action="store_true", help="also re-hash every stored image")
    parser.set_defaults(func=run)


def run(args) -> int:
    from conditioning.dataset import load_dataset

    dataset = load_dataset(args.dataset, verify_pixels=args.pixels)
    counts = dataset.info["counts"]
    summary = ", ".join(f"{s} {counts[s]['images']}" for s in counts)
    print(f"{dataset.root}: valid {dataset.dimensionality} dataset {dataset.name!r}: {summary}")
    return 0
