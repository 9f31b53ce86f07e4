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
import time
from pathlib import Path

from pipelines.commands import bench_band
from pipelines.commands.bench_record import (
    DOC,
    exact_command,
    machine_description,
    provenance,
)
from pipelines.commands.bench_record import publish as _publish
from pipelines.commands.bench_record import read_rows as _read_rows
from pipelines.commands.bench_record import synthetic_id as _synthetic_id
from pipelines.commands.bench_record import write_section as _write_section

log = logging.getLogger("radsynth.bench")


def register(sub) -> None:
    parser = sub.add_parser("bench", help="benchmarks written to docs/BENCHMARKS.md")
    actions = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, help_text, description, add_options, func in (
        ("utility", "does synthetic data help a downstream classifier?", __doc__,
         utility_options, run_utility),
        ("speed", "sampling, UNet FLOP/s, training and audit speed with peak memory",
         speed_doc(), speed_options, run_speed),
        ("memorization", "the audit's positive control: a model that memorises vs one that "
         "does not", memorization_doc(), memorization_options, run_memorization),
        ("band", "does synthetic data aimed at a scarce band (e.g. ages under 3) help a "
         "regressor?", bench_band.__doc__, bench_band.band_options, bench_band.run_band),
    ):  # fmt: skip
        action = actions.add_parser(name, help=help_text, description=description)
        add_options(action)
        action.set_defaults(func=func)
    both = actions.add_parser(
        "all", help="speed, then utility: the whole of docs/BENCHMARKS.md", description=__doc__
    )
    utility_options(both)
    speed_options(both, standalone=False)
    both.set_defaults(func=run_all)


def speed_doc() -> str:
    from pipelines import speed_bench

    return speed_bench.__doc__


def memorization_doc() -> str:
    from pipelines import memorization

    return memorization.__doc__


def memorization_options(parser) -> None:
    from pipelines.memorization import ARMS, MemorizationConfig

    d = MemorizationConfig()
    parser.add_argument("--data", required=True, help="the real dataset (RadSynth format)")
    parser.add_argument("--out", default="runs/bench/memorization", help="working directory")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument(
        "--train-images", type=int, default=d.train_images, help="the tiny arm's training images"
    )
    parser.add_argument("--steps", type=int, default=d.steps, help="the tiny arm's UNet steps")
    parser.add_argument("--max-minutes", type=float, default=d.max_minutes)
    parser.add_argument(
        "--batch", type=int, help="the tiny arm's diffusion batch (default: the profile's)"
    )
    parser.add_argument("--samples", type=int, default=d.samples, help="images audited per arm")
    parser.add_argument(
        "--full-model", metavar="RUN", help="an existing model trained on the full split"
    )
    parser.add_argument(
        "--autoencoder",
        metavar="RUN",
        help="an autoencoder run (trained on the full split) the trained arms share, instead of "
        "training one per arm",
    )
    parser.add_argument("--profile", default=d.profile)
    parser.add_argument("--params", help="params file (default: ./params.yaml, else the repo's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--doc", default=str(DOC), help="markdown file whose memorization section is replaced"
    )


def run_memorization(args) -> int:
    import torch

    from conditioning.dataset import write_json_atomic
    from conditioning.logfile import attach_log_file
    from pipelines.memorization import MemorizationConfig, memorization_markdown, run_arm

    if args.train_images < 8 or args.steps < 1 or args.samples < 1:
        raise ValueError("--train-images must be at least 8, --steps and --samples positive")
    torch.set_num_threads(max(1, args.threads))
    config = MemorizationConfig(
        train_images=args.train_images,
        steps=args.steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch,
        samples=args.samples,
        profile=args.profile,
        params=args.params,
        seed=args.seed,
        autoencoder=args.autoencoder,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "bench.log")
    started = time.perf_counter()
    try:
        arms = []
        for arm in args.arms:
            model = args.full_model if arm == "full" else None
            arms.append(run_arm(arm, args.data, out, config, model))
            log.info("memorization arm %s: %s", arm, arms[-1])
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    result = {
        "arms": arms,
        "machine": machine_description(args.threads),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": exact_command(args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / "memorization.json", result)
    _publish(args.doc, "memorization", "## Memorization control of the privacy audit",
             memorization_intro(args), result, memorization_markdown(result),
             [out / "memorization.json"], shared=True)  # fmt: skip
    return 0


def memorization_intro(args) -> str:
    """What the section's table measured: only the arms this command ran (a re-run of one arm
    replaces the section, so it must not describe the other arm's settings)."""
    ran = {
        "tiny": f"trained on {args.train_images} training images (one per patient) for up to "
        f"{args.steps} steps{f' at batch {args.batch}' if args.batch else ''} or "
        f"{args.max_minutes:g} minutes (tiny arm: it memorises)",
        "full": "trained on the full training split (full arm"
        f"{', an existing run' if args.full_model else ''})",
    }
    arms = [ran[arm] for arm in ("tiny", "full") if arm in args.arms]
    skipped = [arm for arm in ("tiny", "full") if arm not in args.arms]
    shared = ", on a given autoencoder trained on the full split" if args.autoencoder else ""
    return (
        f"The `{args.profile}` model's diffusion UNet {', and '.join(arms)}{shared}. "
        + (f"The {skipped[0]} arm was not run by this command. " if skipped else "")
        + "Each arm generates images that `radsynth audit` checks, with the profile's `audit` "
        "settings, against the split its model was trained on (held-out calibration: the "
        "`val` split). Earlier stages are reused on a re-run, the audit is redone."
    )


def utility_options(utility) -> None:
    """The benchmark's inputs and outputs, then its protocol (`_protocol_options`)."""
    utility.add_argument("--data", required=True, help="the real dataset (RadSynth format)")
    utility.add_argument(
        "--synthetic",
        help="synthetic set (images/ + manifest.csv); without it only the real arm runs",
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
        "--autoencoder",
        help="autoencoder run (or diffusion run) of the generator of the evaluated synthetic set: "
        "enables the `signature` recipe",
    )
    utility.add_argument("--out", default="runs/bench/utility", help="results directory")
    utility.add_argument(
        "--doc", default=str(DOC), help="markdown file whose utility section is replaced"
    )
    utility.add_argument(
        "--section",
        default="utility",
        help="name of the --doc section to replace (default utility; another name keeps "
        "several protocols side by side, e.g. one per scarce generator)",
    )
    _protocol_options(utility)


def _protocol_options(utility) -> None:
    """The flags of the protocol: the fields of a profile's `utility:` section, defaults and
    all (generation/evaluation/config.py's UtilitySettings)."""
    from generation.evaluation.config import UtilitySettings

    d = UtilitySettings()
    utility.add_argument(
        "--attribute",
        default=d.attribute,
        help="categorical attribute to classify (default: the dataset's first)",
    )
    utility.add_argument(
        "--scarce-class",
        default=d.scarce_class,
        help="class kept only in part in scarce regimes (default: the rarest in the train split; "
        "required with --scarce-synthetic)",
    )
    utility.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        action="extend",
        help="share of the scarce class's training images kept (1 = full regime; default "
        f"{' '.join(f'{f:g}' for f in d.fractions)})",
    )
    utility.add_argument(
        "--subset-seed",
        type=int,
        default=d.subset_seed,
        help="one scarce subset for every seed, drawn like `radsynth subset --seed N` "
        "(default: each seed draws its own)",
    )
    utility.add_argument(
        "--arms",
        nargs="+",
        action="extend",
        help="real, synthetic, and the recipes of real + synthetic (generation/evaluation/"
        "recipes.py): mix, balanced, pretrain-finetune, filter, filter-manifold, signature (needs "
        f"--autoencoder), adversarial; default {' '.join(d.arms)}",
    )
    utility.add_argument(
        "--synthetic-ratio",
        type=float,
        default=d.synthetic_ratio,
        help="at most this many synthetic images per real training image (default: all)",
    )
    utility.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        action="extend",
        help=f"default {' '.join(map(str, d.seeds))}",
    )
    utility.add_argument(
        "--detect-epochs",
        type=int,
        default=d.detect_epochs,
        help="epochs of the real-vs-synthetic classifier scoring each set's detectability (0 skips)",
    )
    utility.add_argument(
        "--epochs", type=int, default=d.epochs, help="epochs of the downstream CNN"
    )
    utility.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads (default: torch's choice, OMP_NUM_THREADS)",
    )


def speed_options(parser, standalone: bool = True) -> None:
    parser.add_argument("--model", required=True, help="trained model run directory (speed)")
    if standalone:
        parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
        parser.add_argument(
            "--doc", default=str(DOC), help="markdown file whose speed section is replaced"
        )
    parser.add_argument("--n", type=int, default=16, help="images per sampling measurement")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument(
        "--samplers", nargs="+", help="samplers timed (default: every one: dpm++ ddim euler ddpm)"
    )
    parser.add_argument("--ddpm-1000-n", type=int, default=2, help="images for 1000-step DDPM")
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--ae-batch", type=int, default=16)
    parser.add_argument(
        "--audit-size",
        type=int,
        nargs=2,
        default=[10_000, 5_000],
        metavar=("SYNTHETIC", "TRAINING"),
        help="image counts of the audit timing (0 0 skips it)",
    )
    parser.add_argument("--speed-out", default="runs/bench/speed", help="speed results directory")


def run_speed(args) -> int:
    from conditioning.dataset import write_json_atomic
    from conditioning.logfile import attach_log_file
    from pipelines.speed_bench import SpeedConfig, speed_markdown
    from pipelines.speed_bench import run_speed as measure

    if args.threads < 1 or args.n < 1 or any(k < 1 for k in args.steps):
        raise ValueError("--threads, --n and --steps must be positive")
    if not (Path(args.model) / "config.json").is_file():
        raise FileNotFoundError(f"{args.model}: not a model run (no config.json)")
    out = Path(args.speed_out)
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "bench.log")
    started = time.perf_counter()
    try:
        config = SpeedConfig(
            threads=args.threads,
            n=args.n,
            steps=tuple(args.steps),
            samplers=tuple(args.samplers) if args.samplers else None,
            ddpm_1000_n=args.ddpm_1000_n,
            unet_batch=args.unet_batch,
            ae_batch=args.ae_batch,
            audit=tuple(args.audit_size) if all(args.audit_size) else None,
        )
        result = measure(args.model, config)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    result["machine"] = machine_description(args.threads)
    result["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    result["command"] = exact_command(args)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / "speed.json", result)
    intro = f"Model `{Path(args.model).name}` (its config.json gives the networks)."
    _publish(args.doc, "speed", "## Speed and memory", intro, result, speed_markdown(result),
             [out / "speed.json"])  # fmt: skip
    return 0


def run_all(args) -> int:
    """Speed first (minutes), then utility (the long part), both into the same document."""
    run_speed(args)
    return run_utility(args)


def run_utility(args) -> int:
    """Check the flags, load the sets, run (or resume) the rows, then write the results."""
    import torch

    from conditioning.dataset import load_dataset
    from conditioning.logfile import attach_log_file

    _utility_flags(args)
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    dataset = load_dataset(args.data)
    args.attribute, args.scarce_class = _target(dataset, args.attribute, args.scarce_class)
    if args.attribute is None:  # e.g. bone age: a regression task this benchmark does not run
        return _no_classifier(dataset, Path(args.out))
    config = _utility_config(args)
    synthetic, scarce = _synthetic_sets(args, dataset, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = attach_log_file(out / "bench.log")
    try:
        signature, ae_hash = _signature(args.autoencoder)
        fingerprint = _fingerprints(args, dataset, config, scarce, ae_hash)
        command = exact_command(args)
        started = time.perf_counter()
        result = _utility_rows(
            out / "rows.jsonl", dataset, synthetic, config, fingerprint, signature
        )
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    result["detectability"] = _detectability(synthetic, dataset, args.detect_epochs)
    if signature is not None and args.detect_epochs:
        result["autoencoder"] = _autoencoder_check(dataset, signature, args.detect_epochs)
    result["machine"] = machine_description()
    result["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    result["command"] = command
    result["seconds"] = round(time.perf_counter() - started, 1)
    _write_utility(args, dataset, result, out)
    return 0


def _utility_flags(args) -> None:
    """Fill the protocol's defaults and refuse flags that would make the gains meaningless."""
    from generation.evaluation.config import UtilitySettings

    # lists extend (a params file's list becomes repeated flags); unset means the protocol's
    d = UtilitySettings()
    args.fractions = args.fractions or list(d.fractions)
    args.arms = args.arms or list(d.arms)
    args.seeds = args.seeds or list(d.seeds)
    if args.epochs < 1 or not args.seeds or not args.fractions:
        raise ValueError("--epochs must be positive and --seeds / --fractions non-empty")
    if any(not 0 < f <= 1 for f in args.fractions):
        raise ValueError("--fractions must lie in (0, 1]")
    if args.scarce_synthetic and args.scarce_class is None:
        # the sets were made by a generator that saw one class made scarce: a guessed class
        # would pair them with the wrong regime and every gain would be meaningless
        raise ValueError(
            "--scarce-synthetic: name the class the generator's subset made scarce with "
            "--scarce-class (the `--where` value given to `radsynth subset`)"
        )


def _no_classifier(dataset, out: Path) -> int:
    """A dataset without a categorical condition: an empty result that says why."""
    from generation.evaluation.report import write_metrics_json

    note = f"{dataset.name} has no categorical condition: no classifier utility to measure"
    out.mkdir(parents=True, exist_ok=True)
    empty = {"config": {}, "rows": [], "gains": [], "notes": [note]}
    write_metrics_json(out / "utility.json", {**empty, "recommendation": {"regimes": {}}})
    print(f"radsynth bench utility: {note}")
    return 0


def _utility_config(args):
    """The benchmark's configuration from the flags, checked (attribute and class resolved)."""
    from generation.evaluation.config import UtilitySettings

    return UtilitySettings.from_namespace(args, "radsynth bench utility").utility_config()


def _synthetic_sets(args, dataset, config) -> tuple:
    """The synthetic set(s) (one, or one per regime keyed by regime name) and the regime name ->
    directory of the generator trained on that regime's images."""
    from generation.evaluation import load_synthetic_set

    synthetic = load_synthetic_set(args.synthetic, dataset.schema) if args.synthetic else None
    scarce = {
        config.regime_name(f): d
        for f, d in _scarce_sets(args.scarce_synthetic, args.fractions).items()
    }
    if scarce:
        regimes = {name: load_synthetic_set(d, dataset.schema) for name, d in scarce.items()}
        synthetic = {**({"full": synthetic} if synthetic is not None else {}), **regimes}
    return synthetic, scarce


def _fingerprints(args, dataset, config, scarce: dict, ae_hash):
    """The function giving what a row depends on: a kept row is reused only when it matches."""
    from generation.evaluation.recipes import RECIPES

    base = {
        "dataset_hash": dataset.content_hash(),
        "attribute": args.attribute,
        "scarce_class": args.scarce_class,
        "fit": config.fit.to_json(),
        "subset_seed": args.subset_seed,
    }
    full_id = _synthetic_id(args.synthetic)
    scarce_ids = {name: _synthetic_id(d) for name, d in scarce.items()}

    def fingerprint(row: dict) -> dict:
        """What a row depends on: the real arm on no synthetic set, the others on their regime's."""
        if row.get("arm") == "real":
            return {**base, "synthetic": None}
        recipe = RECIPES.get(row.get("arm"))
        return {
            **base,
            "synthetic": scarce_ids.get(row.get("regime"), full_id),
            "synthetic_ratio": args.synthetic_ratio,
            "recipe": recipe.to_json() if recipe else None,
            **({"autoencoder": ae_hash} if recipe and recipe.signature else {}),
        }

    return fingerprint


def _utility_rows(progress: Path, dataset, synthetic, config, fingerprint, signature) -> dict:
    """Run the benchmark, reusing the matching rows kept in `progress` and appending each new one."""
    from generation.evaluation.utility import run_utility_benchmark

    reuse = [
        entry["row"]
        for entry in _read_rows(progress)
        if entry.get("fingerprint") == fingerprint(entry.get("row", {}))
    ]
    if reuse:
        log.info("reusing %d finished row(s) from %s", len(reuse), progress)

    def keep(row: dict) -> None:
        with progress.open("a", encoding="utf-8") as handle:
            entry = {"fingerprint": fingerprint(row), "row": row}
            handle.write(json.dumps(entry) + "\n")

    return run_utility_benchmark(
        dataset, synthetic, config, on_result=keep, reuse=reuse, signature=signature
    )


def _autoencoder_check(dataset, signature, epochs: int) -> dict:
    """The generator's autoencoder on held-out real images: what its reconstructions lose."""
    from generation.evaluation import DetectabilityConfig
    from generation.evaluation.detectability import detection_split
    from generation.evaluation.images import load_split
    from generation.evaluation.sharpness import reconstruction_check

    held_out = load_split(dataset, detection_split(dataset))
    return reconstruction_check(
        held_out, signature, dataset.schema, DetectabilityConfig(epochs=epochs)
    )


def _write_utility(args, dataset, result: dict, out: Path) -> None:
    """OUT/utility.json and .csv, the --doc section, and the tables on stdout."""
    from generation.evaluation.report import write_csv, write_metrics_json
    from generation.evaluation.utility import gains_markdown, utility_markdown

    write_metrics_json(out / "utility.json", result)
    write_csv(
        out / "utility.csv",
        [{k: v for k, v in r.items() if k != "test_probabilities"} for r in result["rows"]],
    )
    body = "\n".join(
        [
            "## Downstream utility of synthetic data"
            + ("" if args.section == "utility" else f" ({args.section})"),
            "",
            _utility_intro(args, dataset, result),
            "",
            *provenance(result, shared=True),
            *[f"- note: {n}" for n in result["notes"]],
            *_detectability_lines(result),
            "",
            utility_markdown(result) if result["rows"] else "(no row)",
            "",
            gains_markdown(result, args.scarce_class) if result["gains"] else "",
        ]
    )
    _write_section(Path(args.doc), args.section, body)
    print(utility_markdown(result))
    print(gains_markdown(result, args.scarce_class))
    print(f"written: {out / 'utility.json'}, {out / 'utility.csv'}, {args.doc}")


def _utility_intro(args, dataset, result: dict) -> str:
    from generation.evaluation.recipes import RECIPES

    return (
        f"Classifier for `{args.attribute}` (RadSynth's small CNN, the same training for every "
        f"arm: {args.epochs} epochs, last epoch kept, light affine and intensity augmentation) "
        f"trained on real, synthetic, or real + synthetic images combined by a recipe "
        f"({', '.join(f'`{name}`' for name in RECIPES)}: docs/utility.md); scarce regimes "
        f"keep only a share of the `{args.scarce_class}` training images. Scored on the real "
        f"test split ({result['config']['n_test']} images) of `{dataset.name}`; mean [95% "
        "t-interval] over seeds, then each arm's gain over the real arm of its regime with a "
        "paired 95% bootstrap interval (seeds and test images resampled together). A scarce "
        "regime's `all real (reference)` row is the full regime's real arm against it: what "
        "the held-back real images themselves give, the yardstick for a set that stands in "
        "for them."
    )


def _detectability_lines(result: dict) -> list[str]:
    """The section's bullets on each set's detectability and on the generator's autoencoder."""
    lines = [
        f"- detectability of the `{regime}` set (real-vs-synthetic classifier AUROC, 0.5 = "
        f"indistinguishable): {d['auroc']:.3f} [{d['interval'][0]:.3f}, "
        f"{d['interval'][1]:.3f}]; per class "
        + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in d["per_class"].items())
        for regime, d in result["detectability"].items()
    ]
    if ae := result.get("autoencoder"):
        lines.append(
            "- the generator's autoencoder on held-out real images: keeps "
            f"{ae['high_frequency_power_kept']:.0%} of the high-frequency power (above a "
            f"quarter of the sampling rate), mean absolute error {ae['l1']:.4f}; its "
            "reconstructions vs originals, detectability "
            f"{ae['detectability']['auroc']:.3f} [{ae['detectability']['interval'][0]:.3f}, "
            f"{ae['detectability']['interval'][1]:.3f}]"
        )
    return lines


def _target(dataset, attribute: str | None, scarce: str | None) -> tuple[str, str]:
    """The attribute to classify (default: the first categorical one; None when there is none)
    and the scarce class (default: the rarest in the train split)."""
    from collections import Counter

    from conditioning.dataset import CATEGORICAL

    if attribute is None:
        attribute = next((a.name for a in dataset.schema.attributes if a.kind == CATEGORICAL), None)
    if attribute is not None and scarce is None and attribute in dataset.schema:
        counts = Counter(r.conditions.get(attribute) for r in dataset.split("train"))
        scarce = min(dataset.schema[attribute].values, key=lambda v: counts.get(v, 0))
    return attribute, scarce


def _detectability(synthetic, dataset, epochs: int) -> dict:
    """Detectability of each regime's synthetic set against the held-out real images."""
    from generation.evaluation import DetectabilityConfig, detect_synthetic_set

    if not epochs or synthetic is None:
        return {}
    sets = synthetic if isinstance(synthetic, dict) else {"all regimes": synthetic}
    config = DetectabilityConfig(epochs=epochs)
    return {regime: detect_synthetic_set(s, dataset, config) for regime, s in sets.items()}


def _signature(run: str | None):
    """The reconstruction function of an autoencoder run (or a diffusion run's autoencoder) and
    the hash of its weights; (None, None) without one. A pixel-space diffusion run has none."""
    if not run:
        return None, None
    from generation.autoencoder import reconstruct
    from generation.checkpoints import file_sha256
    from generation.pipeline import read_config
    from generation.space import no_autoencoder, space_name
    from generation.train_diffusion import KIND, load_autoencoder_run

    path = Path(run)
    if (path / "autoencoder" / "config.json").is_file():  # a diffusion run keeps its AE there
        path = path / "autoencoder"
    elif (path / "config.json").is_file():
        config = read_config(path)
        if config.get("kind") == KIND and space_name(config) == "pixel":
            raise no_autoencoder(
                f"--autoencoder {run}",
                "the `signature` recipe passes real images through the generator's decoder, and "
                "its samples carry no decoder signature to match: leave --autoencoder and the "
                "signature arm out",
            )
    _, model, weights = load_autoencoder_run(path)
    return (lambda images: reconstruct(model, images)), file_sha256(weights)


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
