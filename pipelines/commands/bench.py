"""`radsynth bench utility`: the downstream utility benchmark (real / synthetic / real + synthetic
training data, full and scarce regimes, several seeds), written to OUT/utility.json and .csv and
to its section of docs/BENCHMARKS.md with machine, date and the exact command.

An interrupted run keeps the finished (regime, arm, seed) rows in OUT/rows.jsonl and a re-run of
the same command continues from there. Other benchmarks get their own `radsynth bench` action
and their own marked section of the same document.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import time
from pathlib import Path

log = logging.getLogger("radsynth.bench")
DOC = Path("docs") / "BENCHMARKS.md"


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks written to docs/BENCHMARKS.md")
    actions = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    utility = actions.add_parser(
        "utility", help="does synthetic data help a downstream classifier?", description=__doc__
    )
    utility.add_argument("--data", required=True, help="the real dataset (RadSynth format)")
    utility.add_argument(
        "--synthetic",
        help="synthetic set (images/ + manifest.csv); without it only the real arm runs",
    )
    utility.add_argument("--out", default="runs/bench/utility", help="results directory")
    utility.add_argument(
        "--doc", default=str(DOC), help="markdown file whose utility section is replaced"
    )
    utility.add_argument(
        "--attribute", default="pathology", help="categorical attribute to classify"
    )
    utility.add_argument(
        "--scarce-class", default="viral", help="class kept only in part in scarce regimes"
    )
    utility.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[1.0, 0.10, 0.05],
        help="share of the scarce class's training images kept (1 = full regime)",
    )
    utility.add_argument(
        "--scarce-synthetic",
        action="append",
        default=[],
        metavar="FRACTION=DIR",
        help="synthetic set for one scarce regime, from a generator trained on that regime's "
        "real images (`radsynth subset --fraction FRACTION --seed S` with --subset-seed S)",
    )
    utility.add_argument(
        "--subset-seed",
        type=int,
        help="one scarce subset for every seed, drawn like `radsynth subset --seed N` "
        "(default: each seed draws its own)",
    )
    utility.add_argument("--arms", nargs="+", default=["real", "synthetic", "real+synthetic"])
    utility.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    utility.add_argument("--epochs", type=int, default=8, help="epochs of the downstream CNN")
    utility.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    utility.set_defaults(func=run_utility)


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def replace_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the part of `doc` between `<!-- name:start -->` and `<!-- name:end -->`."""
    from generation.evaluation.report import write_text_atomic

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(doc, text)


def run_utility(args) -> int:
    import torch

    from conditioning.dataset import load_dataset
    from conditioning.logfile import attach_log_file
    from generation.evaluation import FitConfig, load_synthetic_set
    from generation.evaluation.report import write_csv, write_metrics_json
    from generation.evaluation.utility import UtilityConfig, run_utility_benchmark, utility_markdown

    if args.epochs < 1 or not args.seeds or not args.fractions:
        raise ValueError("--epochs must be positive and --seeds / --fractions non-empty")
    if any(not 0 < f <= 1 for f in args.fractions):
        raise ValueError("--fractions must lie in (0, 1]")
    torch.set_num_threads(max(1, args.threads))
    dataset = load_dataset(args.data)
    synthetic = load_synthetic_set(args.synthetic, dataset.schema) if args.synthetic else None
    scarce = _scarce_sets(args.scarce_synthetic, args.fractions)
    if scarce:
        regimes = {
            UtilityConfig(scarce_class=args.scarce_class).regime_name(f): load_synthetic_set(
                d, dataset.schema
            )
            for f, d in scarce.items()
        }
        synthetic = {**({"full": synthetic} if synthetic is not None else {}), **regimes}
    config = UtilityConfig(
        attribute=args.attribute,
        scarce_class=args.scarce_class,
        keep_fractions=tuple(args.fractions),
        arms=tuple(args.arms),
        seeds=tuple(args.seeds),
        fit=FitConfig(epochs=args.epochs),
        subset_seed=args.subset_seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "bench.log")
    base = {
        "dataset_hash": dataset.content_hash(),
        "attribute": args.attribute,
        "scarce_class": args.scarce_class,
        "fit": config.fit.to_json(),
    }
    base["subset_seed"] = args.subset_seed
    synthetic_id = {
        "full": _synthetic_id(args.synthetic),
        **{f"{f:g}": _synthetic_id(d) for f, d in scarce.items()},
    }

    def fingerprint(arm: str) -> dict:
        """What a row depends on: the real arm does not depend on the synthetic sets."""
        return {**base, "synthetic": None if arm == "real" else synthetic_id}

    progress = out / "rows.jsonl"
    reuse = [
        entry["row"]
        for entry in _read_rows(progress)
        if entry.get("fingerprint") == fingerprint(entry.get("row", {}).get("arm", ""))
    ]
    if reuse:
        log.info("reusing %d finished row(s) from %s", len(reuse), progress)
    command = utility_command(args)
    started = time.perf_counter()
    try:

        def keep(row: dict) -> None:
            with progress.open("a", encoding="utf-8") as handle:
                entry = {"fingerprint": fingerprint(row["arm"]), "row": row}
                handle.write(json.dumps(entry) + "\n")

        result = run_utility_benchmark(dataset, synthetic, config, on_result=keep, reuse=reuse)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    result["machine"] = machine_description()
    result["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    result["command"] = command
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_metrics_json(out / "utility.json", result)
    write_csv(out / "utility.csv", result["rows"])
    body = "\n".join(
        [
            "## Downstream utility of synthetic data",
            "",
            f"Classifier for `{args.attribute}` (RadSynth's small CNN, the same recipe for every arm: "
            f"{args.epochs} epochs, last epoch kept) trained on real, synthetic, or real + synthetic "
            f"images; scarce regimes keep only a share of the `{args.scarce_class}` training images. "
            f"Scored on the real test split ({result['config']['n_test']} images) of "
            f"`{dataset.name}`; mean [95% t-interval] over seeds.",
            "",
            f"- machine: {result['machine']}",
            f"- date: {result['date']}; wall time {result['seconds']:.0f} s "
            "(shared machine: other jobs ran at the same time)",
            f"- command: `{command}`",
            *[f"- note: {n}" for n in result["notes"]],
            "",
            utility_markdown(result) if result["rows"] else "(no row)",
        ]
    )
    replace_section(Path(args.doc), "utility", body)
    print(utility_markdown(result))
    print(f"written: {out / 'utility.json'}, {out / 'utility.csv'}, {args.doc}")
    return 0


def _scarce_sets(pairs: list[str], fractions: list[float]) -> dict[float, str]:
    """--scarce-synthetic FRACTION=DIR pairs, checked against --fractions."""
    sets = {}
    for pair in pairs:
        fraction, sep, directory = pair.partition("=")
        try:
            value = float(fraction)
        except ValueError:
            value = None
        if not sep or not directory or value is None:
            raise ValueError(f"--scarce-synthetic must be FRACTION=DIR, got {pair!r}")
        if not any(abs(value - f) < 1e-9 for f in fractions) or value >= 1:
            raise ValueError(
                f"--scarce-synthetic {pair}: {value:g} is not one of the scarce --fractions "
                f"{' '.join(f'{f:g}' for f in fractions if f < 1)}"
            )
        sets[value] = directory
    return sets


def utility_command(args) -> str:
    """The command line that reproduces this run, every option spelled out."""
    parts = ["radsynth", "bench", "utility", "--data", args.data]
    if args.synthetic:
        parts += ["--synthetic", args.synthetic]
    for pair in args.scarce_synthetic:
        parts += ["--scarce-synthetic", pair]
    if args.subset_seed is not None:
        parts += ["--subset-seed", str(args.subset_seed)]
    parts += ["--out", args.out, "--attribute", args.attribute, "--scarce-class", args.scarce_class]
    parts += ["--fractions", *[f"{f:g}" for f in args.fractions], "--arms", *args.arms]
    parts += ["--seeds", *map(str, args.seeds), "--epochs", str(args.epochs)]
    parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def _synthetic_id(directory: str | None) -> str | None:
    """A synthetic set is identified by the hash of its manifest (ids, files, conditions, seeds,
    model hash)."""
    if not directory:
        return None
    import hashlib

    return hashlib.sha256((Path(directory) / "manifest.csv").read_bytes()).hexdigest()


def _read_rows(path: Path) -> list[dict]:
    """Finished rows of earlier runs (a torn last line from an interruption is skipped)."""
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("row"), dict)]
