"""Downstream utility benchmark: does synthetic data help a classifier trained for the real task?

The same small CNN and training settings (`ConditionNet` with one head, `fit`, fixed epochs, last
epoch kept) are trained on (a) real, (b) synthetic only, (c) real + synthetic training images
combined by each named recipe (`recipes.py`), in the full regime and in scarce regimes that keep
only a fraction of one class's real training images, for several seeds; every model is scored on
the real test split (macro-AUROC, balanced accuracy, per-class recall) and summarised as mean and
95% t-interval over seeds, each recipe's gain over the real arm with a paired interval.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from conditioning.bootstrap import resample
from conditioning.dataset import CATEGORICAL, ConditionSchema, Dataset, DatasetError, choose_kept

from .config import UtilitySettings
from .fit import FitConfig
from .images import ImageSet, load_split
from .metrics import classification_metrics, label_indices
from .recipes import RECIPES, predict, train_classifier, train_with_recipe

log = logging.getLogger(__name__)
ARMS = ("real", "synthetic", *RECIPES)


_SETTINGS = UtilitySettings()  # the protocol's defaults (config.py)


@dataclass
class UtilityConfig:
    """What the benchmark runs; the defaults are the issue's protocol (Kermany's classes, every
    arm; `UtilitySettings.utility_config` gives the command's)."""

    attribute: str = "pathology"
    scarce_class: str = "viral"
    keep_fractions: tuple[float, ...] = _SETTINGS.fractions
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = _SETTINGS.seeds
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=_SETTINGS.epochs))
    # None: each seed draws its own scarce subset; an int: one subset for every seed, the same
    # one `radsynth subset --seed N` writes, so a generator can be trained on exactly those images
    subset_seed: int | None = None
    # at most this many synthetic images per real training image (drawn per seed); None: all
    synthetic_ratio: float | None = None

    def regime_name(self, fraction: float) -> str:
        if fraction >= 1.0:
            return "full"
        return f"{self.scarce_class} {fraction * 100:g}%"


def scarce_subset(
    images: ImageSet, attribute: str, value: str, fraction: float, seed: int
) -> ImageSet:
    """All images except that only `fraction` (at least one) of those with attribute == value
    are kept, chosen with `seed` by the same rule as `radsynth subset` (`choose_kept`)."""
    if fraction >= 1.0:
        return images
    labels = images.values(attribute)
    if value not in labels:
        raise ValueError(f"no training image has {attribute}={value}")
    kept = choose_kept(images.ids, labels, value, fraction, seed)
    return images.subset(
        [
            i
            for i, (v, k) in enumerate(zip(labels, images.ids, strict=True))
            if v != value or k in kept
        ]
    )


def score(model, test: ImageSet, schema: ConditionSchema, attribute: str, size: int) -> dict:
    """Classification metrics of `model` on `test`, balanced accuracy and the test-set
    probabilities (for paired comparisons) included."""
    classes = schema[attribute].values
    probabilities = predict(model, test, attribute, size)
    scores = classification_metrics(
        probabilities, label_indices(test.values(attribute), classes), classes
    )
    scores["balanced_accuracy"] = balanced_accuracy(scores)
    scores["probabilities"] = probabilities
    return scores


def balanced_accuracy(scores: dict) -> float:
    """Mean recall over the classes present in the test labels (`classification_metrics`)."""
    recalls = [e["recall"] for e in scores["per_class"].values() if e["n"]]
    return float(np.mean(recalls)) if recalls else math.nan


def limit_synthetic(syn: ImageSet, n_real: int, ratio: float | None, seed: int) -> ImageSet:
    """At most `ratio` synthetic images per real one, drawn with `seed` (all when None)."""
    if ratio is None or len(syn) <= ratio * n_real:
        return syn
    pick = np.random.default_rng(seed).choice(len(syn), int(ratio * n_real), replace=False)
    return syn.subset(np.sort(pick))


def interval95(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (the interval collapses to the mean for one seed)."""
    clean = [v for v in values if v == v]
    if not clean:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(clean))
    if len(clean) < 2:
        return mean, mean, mean
    from scipy.stats import t

    half = float(t.ppf(0.975, len(clean) - 1) * np.std(clean, ddof=1) / math.sqrt(len(clean)))
    return mean, mean - half, mean + half


def run_utility_benchmark(
    dataset: Dataset,
    synthetic: ImageSet | dict[str, ImageSet] | None,
    config: UtilityConfig | None = None,
    *,
    on_result: Callable[[dict], None] | None = None,
    reuse: list[dict] | None = None,
    signature: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Run every (regime, arm, seed) and return {"config", "rows", "summary", "notes"}.

    `synthetic` is one set for all regimes, or one per regime name ("full", "viral 10%", ...):
    a set generated by a model trained on the full data lets the scarce regimes see the
    held-back images through the generator, and the notes say so. Without a synthetic set only
    the real arm runs. Rows in `reuse` (from an interrupted run of the same config) are kept
    instead of being trained again. `signature` (real images to their reconstructions by the
    generator's autoencoder) enables the `signature` recipe."""
    config = config or UtilityConfig()
    _check_config(dataset, config)
    arms = _ArmTrainer(dataset, config, signature)
    notes = []
    if isinstance(synthetic, ImageSet):
        notes.append(
            "one synthetic set serves every regime: its generator saw the full training data, "
            "so scarce-regime gains are an upper bound"
        )
    rows: list[dict] = []
    for fraction in config.keep_fractions:
        regime = config.regime_name(fraction)
        syn_full = synthetic.get(regime) if isinstance(synthetic, dict) else synthetic
        for arm in config.arms:
            if _skipped(arm, regime, syn_full, signature):
                continue
            for seed in config.seeds:
                earlier = _earlier_row(reuse, regime, arm, seed)
                if earlier is not None:
                    rows.append(earlier)
                    continue
                row = arms.row(fraction, arm, seed, syn_full)
                rows.append(row)
                log.info(
                    "utility %s / %s / seed %d: macro-AUROC %.3f, recall %s %.3f",
                    regime,
                    arm,
                    seed,
                    row["macro_auroc"],
                    config.scarce_class,
                    row[f"recall.{config.scarce_class}"],
                )
                if on_result is not None:
                    on_result(row)
    return _utility_result(dataset, config, arms.test, rows, notes)


def _check_config(dataset: Dataset, config: UtilityConfig) -> None:
    """Refuse an attribute, scarce class or arm the benchmark cannot run, before any training."""
    if (
        config.attribute not in dataset.schema
        or dataset.schema[config.attribute].kind != CATEGORICAL
    ):
        raise DatasetError(
            dataset.root, f"no categorical attribute {config.attribute!r} to classify"
        )
    classes = dataset.schema[config.attribute].values
    if config.scarce_class not in classes:
        raise ValueError(f"scarce class {config.scarce_class!r} is not one of {', '.join(classes)}")
    unknown_arms = sorted(set(config.arms) - set(ARMS))
    if unknown_arms:
        raise ValueError(f"unknown arm(s) {', '.join(unknown_arms)}; arms are {', '.join(ARMS)}")


def _skipped(arm: str, regime: str, syn_full: ImageSet | None, signature) -> bool:
    """An arm that cannot run in this regime (no synthetic set, or no autoencoder), logged."""
    if arm != "real" and syn_full is None:
        log.info("no synthetic set for regime %s: arm %s skipped", regime, arm)
        return True
    if arm in RECIPES and RECIPES[arm].signature and signature is None:
        log.info("no autoencoder given: arm %s skipped", arm)
        return True
    return False


def _earlier_row(reuse: list[dict] | None, regime: str, arm: str, seed: int) -> dict | None:
    """The first reused row of this (regime, arm, seed), if any."""
    return next(
        (
            r
            for r in reuse or []
            if (r.get("regime"), r.get("arm"), r.get("seed")) == (regime, arm, seed)
        ),
        None,
    )


class _ArmTrainer:
    """Trains and scores one (regime, arm, seed) at a time; real subsets, synthetic draws, models
    and reconstructions are shared between arms and seeds."""

    def __init__(self, dataset: Dataset, config: UtilityConfig, signature) -> None:
        self.dataset = dataset
        self.config = config
        self.signature = signature
        self.classes = dataset.schema[config.attribute].values
        self.train = load_split(dataset, "train")
        self.test = load_split(dataset, "test")
        self.size = self.train.images.shape[-1]
        self.real_parts: dict[tuple, ImageSet] = {}
        self.synthetic_parts: dict[tuple, ImageSet] = {}
        self.cache: dict[tuple, object] = {}

    def row(self, fraction: float, arm: str, seed: int, syn_full: ImageSet | None) -> dict:
        """Train one arm on its seed's real part (and synthetic draw) and score it on test."""
        config = self.config
        regime = config.regime_name(fraction)
        fit_config = replace(config.fit, seed=seed)
        real_part = self.real_parts.setdefault(
            (fraction, seed),
            scarce_subset(
                self.train,
                config.attribute,
                config.scarce_class,
                fraction,
                seed if config.subset_seed is None else config.subset_seed,
            ),
        )
        syn = None
        if syn_full is not None:
            syn = self.synthetic_parts.setdefault(
                (regime, seed),
                limit_synthetic(syn_full, len(real_part), config.synthetic_ratio, seed),
            )
        started = time.perf_counter()
        model, info = self.model_for(arm, real_part, syn, fit_config)
        scores = score(model, self.test, self.dataset.schema, config.attribute, self.size)
        return {
            "regime": regime,
            "arm": arm,
            "seed": seed,
            "n_real": 0 if arm == "synthetic" else len(real_part),
            "n_synthetic": 0 if arm == "real" else info.get("n_synthetic_used", len(syn)),
            "macro_auroc": scores["macro_auroc"],
            "accuracy": scores["accuracy"],
            "balanced_accuracy": scores["balanced_accuracy"],
            **{f"recall.{c}": scores["per_class"][c]["recall"] for c in self.classes},
            **({"filtered_share": info["filtered_share"]} if "filtered_share" in info else {}),
            **{f"filter.{rule}": n for rule, n in info.get("filter", {}).items()},
            "seconds": round(time.perf_counter() - started, 1),
            "test_probabilities": np.round(scores["probabilities"], 5).tolist(),
        }

    def model_for(self, arm: str, real_part: ImageSet, syn: ImageSet | None, fit_config: FitConfig):
        """The trained model of one arm and what its recipe did."""
        attribute = self.config.attribute
        schema = self.dataset.schema
        if arm in ("real", "synthetic"):
            images = real_part if arm == "real" else syn
            model = self.cached(
                (arm, id(images), fit_config.seed),
                lambda: train_classifier(
                    images, schema, attribute, fit_config, desc=f"{arm} {fit_config.seed}"
                ),
            )
            return model, {}
        recipe = RECIPES[arm]
        judge = self.model_for("real", real_part, syn, fit_config)[0] if recipe.filter else None
        signature = self.signature
        trained = train_with_recipe(
            recipe,
            real_part,
            syn,
            schema,
            attribute,
            fit_config,
            judge=judge,
            # reconstructions of one real part serve every seed that trains on it
            signature=(lambda x: self.cached(("signature", id(real_part)), lambda: signature(x)))
            if recipe.signature
            else None,
        )
        return trained.model, trained.info

    def cached(self, key: tuple, make: Callable[[], object]):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def _utility_result(
    dataset: Dataset, config: UtilityConfig, test: ImageSet, rows: list[dict], notes: list[str]
) -> dict:
    """The rows with the config they ran, their summary, the paired gains and the advice."""
    classes = dataset.schema[config.attribute].values
    result = {
        "config": {
            "attribute": config.attribute,
            "scarce_class": config.scarce_class,
            "keep_fractions": list(config.keep_fractions),
            "arms": list(config.arms),
            "seeds": list(config.seeds),
            "fit": config.fit.to_json(),
            "subset_seed": config.subset_seed,
            "synthetic_ratio": config.synthetic_ratio,
            "recipes": {name: RECIPES[name].to_json() for name in config.arms if name in RECIPES},
            "dataset_name": dataset.name,
            "dataset_hash": dataset.content_hash(),
            "n_test": len(test),
        },
        "rows": rows,
        "summary": summarise(rows, classes),
        "gains": paired_gains(rows, label_indices(test.values(config.attribute), classes), classes),
        "notes": notes,
    }
    result["recommendation"] = recommend(result)
    return result


def summarise(rows: list[dict], classes: tuple[str, ...] | list[str]) -> list[dict]:
    """Mean and 95% interval over seeds for each (regime, arm)."""
    out = []
    keys = list(dict.fromkeys((r["regime"], r["arm"]) for r in rows))
    for regime, arm in keys:
        mine = [r for r in rows if r["regime"] == regime and r["arm"] == arm]
        entry = {"regime": regime, "arm": arm, "seeds": len(mine)}
        metrics = (
            "macro_auroc",
            "balanced_accuracy",
            "accuracy",
            *[f"recall.{c}" for c in classes],
        )
        for metric in metrics:
            mean, low, high = interval95([r[metric] for r in mine])
            entry[metric] = mean
            entry[f"{metric}.ci95"] = [max(low, 0.0), min(high, 1.0)]  # scores live in [0, 1]
        out.append(entry)
    return out


def _scores_of(probabilities: np.ndarray, labels: np.ndarray, classes) -> dict[str, float]:
    scores = classification_metrics(probabilities, labels, classes)
    return {
        "macro_auroc": scores["macro_auroc"],
        "balanced_accuracy": balanced_accuracy(scores),
        **{f"recall.{c}": e["recall"] for c, e in scores["per_class"].items()},
    }


CEILING_ARM = "all real"  # the scarce regime with its held-back real images restored


def _mean_gain(arm: dict, ref: dict, seeds, images, labels, classes) -> dict[str, float]:
    """Mean over `seeds` of arm-minus-reference scores on the test images `images`; `arm` and
    `ref` map a seed to its test-set probabilities."""
    diffs = []
    for s in seeds:
        mine = _scores_of(arm[s][images], labels[images], classes)
        base = _scores_of(ref[s][images], labels[images], classes)
        diffs.append({k: mine[k] - base[k] for k in mine})
    return {k: float(np.nanmean([d[k] for d in diffs])) for k in diffs[0]}


def _paired_entry(arm: dict, ref: dict, labels, classes, n_boot: int, seed: int) -> dict:
    """Gain of `arm` over `ref` (seed -> probabilities) with a paired 95% percentile bootstrap
    interval (scipy.stats.bootstrap): seeds and test images are resampled independently of
    each other, and each draw scores both arms on the same seeds and images. Draws where a
    metric is undefined (a class absent from the resampled images) are left out of its
    percentiles."""
    seeds = sorted(set(arm) & set(ref))
    point = _mean_gain(arm, ref, seeds, np.arange(len(labels)), labels, classes)

    def gains(drawn_seeds, images):
        drawn = _mean_gain(arm, ref, drawn_seeds.tolist(), images, labels, classes)
        return np.array([drawn[metric] for metric in point])

    samples = (np.array(seeds), np.arange(len(labels)))
    draws = resample(gains, samples, n_boot, seed, omit_nan=True)
    entry: dict = {"seeds": len(seeds)}
    for k, (metric, value) in enumerate(point.items()):
        entry[metric] = value
        entry[f"{metric}.ci95"] = [float(draws.low[k]), float(draws.high[k])]
    return entry


def paired_gains(
    rows: list[dict], labels: np.ndarray, classes, n_boot: int = 200, seed: int = 0
) -> list[dict]:
    """Each arm's gain over the real arm of the same regime: mean over the seeds both ran, with
    a paired 95% bootstrap interval that resamples seeds and test images together (the same
    draw for both arms), so it covers training noise and the test set's sampling noise.

    Where the full regime's real arm ran with the same seeds, each scarce regime also gets the
    `all real` entry: the gain of restoring every held-back real image. It is the reference a
    synthetic set is measured against (what the missing real data would have given), not a
    recipe."""
    probs: dict[tuple, dict] = {}
    for r in rows:
        if "test_probabilities" in r:
            probs.setdefault((r["regime"], r["arm"]), {})[r["seed"]] = np.asarray(
                r["test_probabilities"]
            )
    out = []
    for regime, arm in probs:
        ref = probs.get((regime, "real"), {})
        if arm == "real" or not set(probs[(regime, arm)]) & set(ref):
            continue
        entry = _paired_entry(probs[(regime, arm)], ref, labels, classes, n_boot, seed)
        out.append({"regime": regime, "arm": arm, **entry})
    full = probs.get(("full", "real"), {})
    for regime, arm in list(probs):
        if arm != "real" or regime == "full" or not set(full) & set(probs[(regime, arm)]):
            continue
        entry = _paired_entry(full, probs[(regime, arm)], labels, classes, n_boot, seed)
        out.append({"regime": regime, "arm": CEILING_ARM, "reference": True, **entry})
    return out


def gains_markdown(result: dict, scarce_class: str) -> str:
    """Gains over the real arm as a markdown table (mean [paired 95% bootstrap interval])."""
    metrics = ("macro_auroc", "balanced_accuracy", f"recall.{scarce_class}")
    header = ["regime", "arm", "seeds", "macro-AUROC gain", "balanced-accuracy gain"]
    header.append(f"recall {scarce_class} gain")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in result.get("gains", []):
        cells = [
            f"{entry[m]:+.3f} [{entry[m + '.ci95'][0]:+.3f}, {entry[m + '.ci95'][1]:+.3f}]"
            for m in metrics
        ]
        arm = f"{entry['arm']} (reference)" if entry.get("reference") else entry["arm"]
        lines.append(
            f"| {entry['regime']} | {arm} | {entry['seeds']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def utility_markdown(result: dict) -> str:
    """The summary as a markdown table (mean [95% interval] over seeds)."""
    classes_cols = (
        [k for k in result["summary"][0] if k.startswith("recall.") and not k.endswith("ci95")]
        if result["summary"]
        else []
    )

    def cell(entry, metric):
        value = entry[metric]
        low, high = entry[f"{metric}.ci95"]
        if value != value:
            return "n/a"
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"

    header = [
        "regime",
        "arm",
        "seeds",
        "macro-AUROC",
        "balanced accuracy",
        *[c.replace("recall.", "recall ") for c in classes_cols],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in result["summary"]:
        lines.append(
            "| "
            + " | ".join(
                [entry["regime"], entry["arm"], str(entry["seeds"]), cell(entry, "macro_auroc")]
                + [cell(entry, "balanced_accuracy")]
                + [cell(entry, c) for c in classes_cols]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def recommend(result: dict) -> dict:
    """The recipe measured to help: the largest macro-AUROC gain over the real arm whose paired
    interval lies above 0, per regime; `recipe` is None where no recipe cleared that bar (the
    best one is still named, so a reader sees how far it was)."""
    out: dict = {"regimes": {}}
    scarce = result["config"]["scarce_class"]
    for regime in dict.fromkeys(g["regime"] for g in result.get("gains", [])):
        recipes = [g for g in result["gains"] if g["regime"] == regime and g["arm"] in RECIPES]
        if not recipes:
            continue
        best = max(recipes, key=lambda g: g["macro_auroc"])
        helping = [g for g in recipes if g["macro_auroc.ci95"][0] > 0]
        chosen = max(helping, key=lambda g: g["macro_auroc"]) if helping else None
        out["regimes"][regime] = {
            "recipe": chosen["arm"] if chosen else None,
            "best": {
                "arm": best["arm"],
                "seeds": best["seeds"],
                "macro_auroc_gain": best["macro_auroc"],
                "macro_auroc_gain_ci95": best["macro_auroc.ci95"],
                f"recall_{scarce}_gain": best[f"recall.{scarce}"],
                f"recall_{scarce}_gain_ci95": best[f"recall.{scarce}.ci95"],
                "description": RECIPES[best["arm"]].description,
            },
        }
    return out
