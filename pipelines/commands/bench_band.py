"""`radsynth bench band`: does a synthetic set aimed at a scarce band of a continuous condition
(e.g. hands of children under 3 years, `radsynth generate --condition age_months=0:36`) make a
regressor of that condition better inside the band, and what does it cost elsewhere? Written to
OUT/band.json and to its section of docs/BENCHMARKS.md with machine, date and the exact command.

Finished (arm, seed) rows are kept in OUT/rows.jsonl; a re-run of the same command continues.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipelines.commands.bench_record import (
    DOC,
    exact_command,
    machine_description,
    publish,
    read_rows,
    synthetic_id,
)

log = logging.getLogger("radsynth.bench")


def band_options(parser) -> None:
    parser.add_argument("--data", required=True, help="the real dataset (RadSynth format)")
    parser.add_argument(
        "--synthetic", help="synthetic set aimed at the band; without it only the real arm runs"
    )
    parser.add_argument("--attribute", default="age_months", help="continuous attribute")
    parser.add_argument(
        "--band",
        type=float,
        nargs=2,
        default=[0.0, 36.0],
        metavar=("LOW", "HIGH"),
        help="the scarce band [LOW, HIGH) in the attribute's unit (default 0 36)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["test"],
        help="held-out real splits scored (default test; `test val` doubles a thin band)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the regressor")
    parser.add_argument("--out", default="runs/bench/band", help="results directory")
    parser.add_argument("--doc", default=str(DOC), help="markdown file whose section is replaced")
    parser.add_argument("--section", default="band", help="name of the --doc section")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run_band(args) -> int:
    import torch

    from conditioning.dataset import load_dataset, write_json_atomic
    from conditioning.logfile import attach_log_file
    from generation.evaluation import FitConfig, load_synthetic_set
    from generation.evaluation.band_utility import BandConfig, band_markdown, run_band_benchmark

    if args.epochs < 1 or not args.seeds:
        raise ValueError("--epochs must be positive and --seeds non-empty")
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    dataset = load_dataset(args.data)
    config = BandConfig(
        attribute=args.attribute,
        band=(args.band[0], args.band[1]),
        arms=("real", "mix") if args.synthetic else ("real",),
        seeds=tuple(args.seeds),
        fit=FitConfig(epochs=args.epochs),
        splits=tuple(args.splits),
    )
    synthetic = load_synthetic_set(args.synthetic, dataset.schema) if args.synthetic else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {
        "dataset_hash": dataset.content_hash(),
        **{k: v for k, v in config.to_json().items() if k not in ("arms", "seeds")},
    }
    syn_id = synthetic_id(args.synthetic)

    def fingerprint(row: dict) -> dict:
        return {**base, "synthetic": None if row.get("arm") == "real" else syn_id}

    progress = out / "rows.jsonl"
    reuse = [e["row"] for e in read_rows(progress) if e.get("fingerprint") == fingerprint(e["row"])]

    def keep(row: dict) -> None:
        with progress.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"fingerprint": fingerprint(row), "row": row}) + "\n")

    handler = attach_log_file(out / "bench.log")
    started = time.perf_counter()
    try:
        result = run_band_benchmark(dataset, synthetic, config, on_result=keep, reuse=reuse)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    result.update(
        machine=machine_description(args.threads),
        date=time.strftime("%Y-%m-%d %H:%M %Z"),
        command=exact_command(args),
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json_atomic(out / "band.json", result)
    unit = dataset.schema[args.attribute].unit
    c, (low, high) = result["counts"], config.band
    intro = (
        f"Regressor of `{args.attribute}` (RadSynth's small CNN, one regression head, "
        f"{args.epochs} epochs, last epoch kept) trained on the real training split of "
        f"`{dataset.name}` ({c['train']} images, {c['train_in_band']} in the band "
        f"[{low:g}, {high:g}) {unit}) alone (`real`) or with the synthetic set "
        f"({c['synthetic']} images, {c['synthetic_in_band']} in the band) added (`mix`). Scored "
        f"on the held-out real split(s) {', '.join(config.splits)} ({c['held_out']} images, "
        f"{c['held_out_in_band']} in the band); mean [95% t-interval] over seeds, then each "
        "arm's gain over `real` with a paired 95% bootstrap interval (seeds and held-out images "
        "resampled together). A positive reduction means the arm errs less."
    )
    publish(args.doc, args.section,
             f"## Synthetic data in a scarce band of `{args.attribute}` ({args.section})", intro,
             result, band_markdown(result, unit), [out / "band.json"], shared=True)  # fmt: skip
    return 0
