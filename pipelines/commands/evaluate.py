"""`radsynth evaluate`: judge a synthetic set against the real data it imitates.

Trains the domain models on the dataset's train split the first time (cached by data hash),
then writes OUT/metrics.json (for `dvc metrics show`), OUT/evaluation.json (what was compared),
OUT/plots/*.csv (for `dvc plots`), PNG figures and OUT/evaluate.log. OUT is assembled in a
hidden sibling and renamed into place, so a failed run leaves an earlier OUT intact.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("radsynth.evaluate")


def register(sub) -> None:
    from generation.evaluation.config import REAL_SPLITS, EvaluateSettings

    d = EvaluateSettings()  # the defaults' home: a profile's `evaluate:` sets the same fields
    parser = sub.add_parser(
        "evaluate",
        help="metrics of a synthetic set: Frechet distance, precision/recall, diversity, adherence",
        description=__doc__,
    )
    parser.add_argument("--synthetic", required=True, help="synthetic set (images/ + manifest.csv)")
    parser.add_argument("--data", required=True, help="the real dataset (RadSynth format)")
    parser.add_argument(
        "--baseline",
        help="another synthetic set of the same data (e.g. the model before adaptation): adds the "
        "FD difference, overall and per subgroup, with a paired bootstrap interval",
    )
    parser.add_argument("--out", required=True, help="output directory (replaced when done)")
    parser.add_argument(
        "--real-split",
        default=d.real_split,
        choices=REAL_SPLITS,
        help="real images to compare with",
    )
    parser.add_argument(
        "--domain-models",
        default=d.domain_models,
        help="domain-model directory (default runs/domain-models/<dataset>-<hash>); trained "
        "there when missing or trained on other data",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs, help="domain-model training epochs")
    parser.add_argument(
        "--retrain", action="store_true", default=d.retrain, help="train the domain models again"
    )
    parser.add_argument(
        "--detect-epochs",
        type=int,
        default=d.detect_epochs,
        help="epochs of the real-vs-synthetic classifier (detectability AUROC); 0 skips it",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        default=d.bf16,
        help="bf16 autocast for domain-model training (faster where the CPU has native bf16; ignored elsewhere)",
    )
    parser.add_argument("--k", type=int, default=d.k, help="neighbours for precision/recall radii")
    parser.add_argument("--pairs", type=int, default=d.pairs, help="random pairs per MS-SSIM group")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads (default: torch's choice, OMP_NUM_THREADS)",
    )
    parser.set_defaults(func=run)


def default_domain_dir(dataset) -> Path:
    return Path("runs") / "domain-models" / f"{dataset.name}-{dataset.content_hash()[:12]}"


def run(args) -> int:
    """Load the sets, evaluate them into a hidden stage directory, then swap it in as OUT."""
    import torch

    from conditioning.dataset import load_dataset, replace_directory
    from conditioning.logfile import attach_log_file
    from generation.evaluation import load_synthetic_set

    if args.k < 1 or args.pairs < 1 or args.epochs < 1:
        raise ValueError("--k, --pairs and --epochs must be positive")
    if args.detect_epochs < 0:
        raise ValueError("--detect-epochs must be 0 (skip) or positive")
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    dataset = load_dataset(args.data)
    synthetic = load_synthetic_set(args.synthetic, dataset.schema)  # fail fast on a bad set
    baseline = load_synthetic_set(args.baseline, dataset.schema) if args.baseline else None
    size = resolution_of(synthetic, dataset)
    synthetic = to_dataset_size(synthetic, dataset)
    baseline = to_dataset_size(baseline, dataset) if baseline is not None else None
    out = Path(args.out).resolve()
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    handler = attach_log_file(stage / "evaluate.log")
    ok = False
    try:
        evaluation = _evaluate(args, dataset, synthetic, baseline, size, stage)
        ok = True
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        if not ok:
            _drop_stage(stage, out)
    replace_directory(stage, out)
    _summary(evaluation.metrics, out)
    return 0


def _evaluate(args, dataset, synthetic, baseline, size: dict, stage: Path):
    """Train (or reuse) the domain models, compute every metric and write them into `stage`."""
    from generation.evaluation import (
        DetectabilityConfig,
        FitConfig,
        compare_with_baseline,
        detect_synthetic_set,
        evaluate_synthetic_set,
        train_domain_models,
        write_evaluation,
    )

    log.info(
        "evaluating %d synthetic images from %s against %s/%s",
        len(synthetic),
        args.synthetic,
        dataset.name,
        args.real_split,
    )
    domain_dir = Path(args.domain_models) if args.domain_models else default_domain_dir(dataset)
    domain = train_domain_models(
        dataset,
        domain_dir,
        FitConfig(epochs=args.epochs, seed=args.seed, bf16=args.bf16),
        force=args.retrain,
    )
    evaluation = evaluate_synthetic_set(
        synthetic,
        dataset,
        domain,
        real_split=args.real_split,
        k=args.k,
        n_pairs=args.pairs,
        seed=args.seed,
    )
    evaluation.info["synthetic"] = str(Path(args.synthetic).resolve())
    evaluation.metrics["resolution"] = size
    if args.detect_epochs:
        evaluation.metrics["detectability"] = detect_synthetic_set(
            synthetic, dataset, DetectabilityConfig(epochs=args.detect_epochs, seed=args.seed)
        )
    if baseline is not None:
        log.info("FD difference against the baseline set %s", args.baseline)
        evaluation.metrics["baseline"] = compare_with_baseline(
            evaluation, baseline, domain, seed=args.seed
        )
        evaluation.info["baseline"] = str(Path(args.baseline).resolve())
        evaluation.baseline = baseline
    written = write_evaluation(evaluation, stage, domain, seed=args.seed)
    log.info("wrote %s", ", ".join(str(p.relative_to(stage)) for p in written))
    return evaluation


def _drop_stage(stage: Path, out: Path) -> None:
    """A failed run: keep its log beside OUT, drop the rest so an earlier OUT stays intact."""
    failed_log = out.with_name(f"{out.name}.failed.log")
    if (stage / "evaluate.log").exists():
        os.replace(stage / "evaluate.log", failed_log)
        print(f"radsynth evaluate: log of the failed run: {failed_log}")
    shutil.rmtree(stage, ignore_errors=True)


def resolution_of(synthetic, dataset) -> dict:
    """The sizes compared and the one every metric is computed at (the dataset's: a set of
    another size is resized to it, antialiased bilinear), for metrics.json."""
    return {
        "synthetic": [int(s) for s in synthetic.images.shape[1:]],
        "real": [int(s) for s in dataset.image_size],
        "scored_at": [int(s) for s in dataset.image_size],
        "synthetic_resized": list(synthetic.images.shape[1:]) != list(dataset.image_size),
    }


def to_dataset_size(images, dataset):
    """`images` (an ImageSet) at the dataset's square image size."""
    from generation.evaluation.images import ImageSet, to_tensor

    height, width = dataset.image_size[-2:]
    if list(images.images.shape[1:]) == [height, width]:
        return images
    if height != width:
        raise ValueError(f"{dataset.root}: cannot resize a set to a non-square {height}x{width}")
    resized = to_tensor(images.images, height)[:, 0].numpy()
    return ImageSet(resized, images.conditions, images.ids)


def _summary(metrics: dict, out: Path) -> None:
    def f(value) -> str:
        return "n/a" if value is None or value != value else f"{value:.3f}"

    fd = metrics["fd"]
    pr = metrics["precision_recall"]
    print(f"{out}: {metrics['n_synthetic']} synthetic vs {metrics['n_real']} real images")
    low, high = fd.get("synthetic_vs_real_interval", [None, None])
    print(
        f"  Frechet distance {f(fd['synthetic_vs_real'])} [95% bootstrap {f(low)}-{f(high)}] "
        f"(real vs real {f(fd.get('real_vs_real'))})"
    )
    for group, row in metrics.get("subgroups", {}).items():
        if row.get("n_synthetic") and row.get("fd") == row.get("fd"):
            print(
                f"    {group}: FD {f(row['fd'])} [{f(row.get('fd_low'))}-{f(row.get('fd_high'))}]"
                f" ({row['n_synthetic']} synthetic vs {row['n_real']} real)"
            )
    if "baseline" in metrics:
        b = metrics["baseline"]
        print(
            f"  against the baseline set ({b['n_baseline']} images), FD change, paired 95% interval:"
        )
        for name, row in {"all": b["all"], **b["subgroups"]}.items():
            print(
                f"    {name}: {f(row['fd_baseline'])} -> {f(row['fd'])}, change {f(row['difference'])}"
                f" [{f(row['low'])} to {f(row['high'])}], closer in {row['share_of_draws_lower']:.0%}"
                " of draws"
            )
    if "detectability" in metrics:
        d = metrics["detectability"]
        low, high = d["interval"]
        print(
            f"  detectability (real-vs-synthetic classifier AUROC, 0.5 = indistinguishable): "
            f"{f(d['auroc'])} [{f(low)}-{f(high)}] against {d['n_real']} real {d['real_split']} images"
        )
        for value, row in d["per_class"].items():
            print(
                f"    {value}: {f(row['auroc'])} [{f(row['interval'][0])}-{f(row['interval'][1])}]"
            )
    print(f"  precision {f(pr['precision'])}, recall {f(pr['recall'])} (k={pr['k']})")
    print(
        f"  MS-SSIM synthetic {f(metrics['ms_ssim']['synthetic'])}, real {f(metrics['ms_ssim']['real'])}"
    )
    for name, a in metrics["adherence"].items():
        if "accuracy" in a:
            print(
                f"  {name}: accuracy {f(a['accuracy'])} (real {f(a['real_accuracy'])}), "
                f"macro-AUROC {f(a['macro_auroc'])} (real {f(a['real_macro_auroc'])})"
            )
        else:
            print(f"  {name}: MAE {f(a['mae'])} (real {f(a['real_mae'])})")
