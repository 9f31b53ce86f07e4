"""Downstream utility in a scarce band of a continuous condition: do synthetic images conditioned
on, say, ages under 3 years make an age regressor better there?

The same small CNN (`ConditionNet` with one regression head, `fit`, fixed epochs, last epoch
kept) is trained on the real training split (`real`) and on the real split plus the synthetic
set (`mix`), for several seeds, and scored on held-out real images: mean absolute error inside
the band (where the synthetic images are meant to help), over every held-out image (what they
may cost elsewhere), and the mean signed error inside the band (a set that only pulls every
prediction towards the band would show there). Each arm's gain over `real` comes with a paired
bootstrap interval that resamples seeds and held-out images together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from conditioning.bootstrap import resample
from conditioning.dataset import CATEGORICAL, ConditionSchema, Dataset, DatasetError

from .fit import FitConfig, encode_targets, fit, run_inference, seed_everything
from .images import ImageSet, load_split, to_tensor
from .networks import ConditionNet
from .recipes import concat
from .utility import interval95

log = logging.getLogger(__name__)
BAND_ARMS = ("real", "mix")
METRICS = ("mae_band", "mae_all", "bias_band")


@dataclass
class BandConfig:
    """What the benchmark runs: the band is [low, high) in the attribute's unit."""

    attribute: str = "age_months"
    band: tuple[float, float] = (0.0, 36.0)
    arms: tuple[str, ...] = BAND_ARMS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=8))
    # held-out real splits scored; none of them trains or selects a model
    splits: tuple[str, ...] = ("test",)

    def to_json(self) -> dict:
        return {
            "attribute": self.attribute,
            "band": list(self.band),
            "arms": list(self.arms),
            "seeds": list(self.seeds),
            "fit": self.fit.to_json(),
            "splits": list(self.splits),
        }


def train_regressor(
    images: ImageSet, schema: ConditionSchema, attribute: str, config: FitConfig, desc: str
) -> ConditionNet:
    """A one-head regressor fitted on the rows whose value is known."""
    known = [i for i, v in enumerate(images.values(attribute)) if v is not None]
    images = images.subset(known)
    seed_everything(config.seed)
    model = ConditionNet({}, continuous=[attribute], channels=config.channels)
    targets = encode_targets(images.conditions, schema, [attribute])
    fit(model, to_tensor(images.images), targets, config, desc=desc)
    return model


def predict_values(
    model: ConditionNet, images: ImageSet, schema: ConditionSchema, attribute: str
) -> np.ndarray:
    """Predictions in the attribute's unit (the head predicts its range scaled to [0, 1])."""
    outputs, _ = run_inference(model, to_tensor(images.images))
    a = schema[attribute]
    return outputs[attribute].numpy() * (a.maximum - a.minimum) + a.minimum


def band_scores(predicted: np.ndarray, target: np.ndarray, inside: np.ndarray) -> dict:
    """MAE inside the band and over all images, and the mean signed error inside the band."""
    error = predicted - target
    return {
        "mae_band": float(np.abs(error[inside]).mean()) if inside.any() else float("nan"),
        "mae_all": float(np.abs(error).mean()),
        "bias_band": float(error[inside].mean()) if inside.any() else float("nan"),
    }


def run_band_benchmark(
    dataset: Dataset,
    synthetic: ImageSet | None,
    config: BandConfig | None = None,
    *,
    on_result: Callable[[dict], None] | None = None,
    reuse: list[dict] | None = None,
) -> dict:
    """Run every (arm, seed) and return {"config", "rows", "summary", "gains", "counts"}.
    Rows in `reuse` (from an interrupted run of the same config) are kept, not trained again."""
    config = config or BandConfig()
    attribute, (low, high) = config.attribute, config.band
    if attribute not in dataset.schema or dataset.schema[attribute].kind == CATEGORICAL:
        raise DatasetError(dataset.root, f"no continuous attribute {attribute!r} to regress")
    if not low < high:
        raise ValueError(f"band [{low:g}, {high:g}) is empty: LOW must be below HIGH")
    unknown = sorted(set(config.arms) - set(BAND_ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; arms are {', '.join(BAND_ARMS)}")
    if synthetic is None and set(config.arms) - {"real"}:
        raise ValueError("arm mix needs a synthetic set")
    train = load_split(dataset, "train")
    held = load_split(dataset, config.splits[0])
    for split in config.splits[1:]:
        held = concat(held, load_split(dataset, split))
    held = held.subset([i for i, v in enumerate(held.values(attribute)) if v is not None])
    target = np.asarray(held.values(attribute), dtype=float)
    inside = (target >= low) & (target < high)
    if not inside.any():
        raise ValueError(
            f"no held-out image ({', '.join(config.splits)}) of {dataset.name} has "
            f"{attribute} in [{low:g}, {high:g})"
        )
    rows: list[dict] = []
    for arm in config.arms:
        images = None  # the arm's training images, built once for all its seeds
        for seed in config.seeds:
            earlier = [r for r in reuse or [] if (r.get("arm"), r.get("seed")) == (arm, seed)]
            if earlier:
                rows.append(earlier[0])
                continue
            started = time.perf_counter()
            if images is None:
                images = train if arm == "real" else concat(train, synthetic)
            model = train_regressor(
                images, dataset.schema, attribute, replace(config.fit, seed=seed), f"{arm} {seed}"
            )
            predicted = predict_values(model, held, dataset.schema, attribute)
            row = {
                "arm": arm,
                "seed": seed,
                "n_real": len(train),
                "n_synthetic": 0 if arm == "real" else len(synthetic),
                **band_scores(predicted, target, inside),
                "seconds": round(time.perf_counter() - started, 1),
                "predictions": np.round(predicted, 2).tolist(),
            }
            rows.append(row)
            log.info(
                "band utility %s / seed %d: MAE in band %.2f, overall %.2f",
                arm,
                seed,
                row["mae_band"],
                row["mae_all"],
            )
            if on_result is not None:
                on_result(row)
    return {
        "config": {**config.to_json(), "dataset_name": dataset.name},
        "counts": _counts(train, held, synthetic, attribute, (low, high), inside),
        "rows": rows,
        "summary": summarise_band(rows),
        "gains": band_gains(rows, target, inside),
    }


def _counts(train, held, synthetic, attribute, band, inside) -> dict:
    def in_band(images: ImageSet) -> int:
        values = [v for v in images.values(attribute) if v is not None]
        return int(sum(band[0] <= float(v) < band[1] for v in values))

    return {
        "train": len(train),
        "train_in_band": in_band(train),
        "held_out": len(held),
        "held_out_in_band": int(inside.sum()),
        "synthetic": len(synthetic) if synthetic is not None else 0,
        "synthetic_in_band": in_band(synthetic) if synthetic is not None else 0,
    }


def summarise_band(rows: list[dict]) -> list[dict]:
    """Mean and 95% t-interval over seeds of each metric, per arm."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        entry: dict = {"arm": arm, "seeds": len(mine)}
        for metric in METRICS:
            mean, lo, hi = interval95([r[metric] for r in mine])
            entry[metric], entry[f"{metric}.ci95"] = mean, [lo, hi]
        out.append(entry)
    return out


def band_gains(
    rows: list[dict], target: np.ndarray, inside: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> list[dict]:
    """Each arm's MAE reduction against `real` (positive: the arm errs less), inside the band and
    overall, and its change of the in-band signed error; mean over the seeds both ran, with a
    paired 95% percentile bootstrap interval (scipy.stats.bootstrap): seeds, held-out images
    inside the band and those outside it are three samples resampled independently, so every
    draw keeps the band's count (a thin band would otherwise be empty in some draws), and each
    draw scores both arms on the same seeds and images."""
    by_arm: dict[str, dict[int, np.ndarray]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = np.asarray(r["predictions"], dtype=float)
    ref = by_arm.get("real", {})
    out = []
    for arm, mine in by_arm.items():
        seeds = sorted(set(mine) & set(ref))
        if arm == "real" or not seeds:
            continue

        def gains(drawn_seeds, band, rest, mine=mine):
            images = np.concatenate([band, rest])
            drawn = _mean_gain(mine, ref, drawn_seeds.tolist(), images, target, inside)
            return np.array([drawn[metric] for metric in METRICS])

        point = _mean_gain(mine, ref, seeds, np.arange(len(target)), target, inside)
        samples = (np.array(seeds), np.flatnonzero(inside), np.flatnonzero(~inside))
        draws = resample(gains, samples, n_boot, seed, omit_nan=True)
        entry: dict = {"arm": arm, "seeds": len(seeds)}
        for k, metric in enumerate(METRICS):
            entry[metric] = point[metric]
            entry[f"{metric}.ci95"] = [float(draws.low[k]), float(draws.high[k])]
        out.append(entry)
    return out


def _mean_gain(arm: dict, ref: dict, seeds: list[int], images, target, inside) -> dict:
    """Mean over `seeds` of the arm's gains over `ref` (seed -> predictions) on `images`."""
    diffs = []
    for s in seeds:
        a = band_scores(arm[s][images], target[images], inside[images])
        b = band_scores(ref[s][images], target[images], inside[images])
        diffs.append(
            {
                "mae_band": b["mae_band"] - a["mae_band"],
                "mae_all": b["mae_all"] - a["mae_all"],
                "bias_band": a["bias_band"] - b["bias_band"],
            }
        )
    return {k: float(np.nanmean([d[k] for d in diffs])) for k in METRICS}


def band_markdown(result: dict, unit: str = "") -> str:
    """The summary and the gains as markdown tables."""

    def cell(entry: dict, metric: str, sign: str = "") -> str:
        low, high = entry[f"{metric}.ci95"]
        return f"{entry[metric]:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"

    unit = f" ({unit})" if unit else ""
    lines = [
        f"| arm | seeds | MAE in band{unit} | MAE overall{unit} | mean signed error in band{unit} |",
        "|---|---|---|---|---|",
    ]
    for e in result["summary"]:
        cells = " | ".join(cell(e, m) for m in METRICS)
        lines.append(f"| {e['arm']} | {e['seeds']} | {cells} |")
    if result["gains"]:
        lines += [
            "",
            "| arm | seeds | MAE reduction in band [paired 95%] | MAE reduction overall | "
            "change of the signed error in band |",
            "|---|---|---|---|---|",
        ]
        for e in result["gains"]:
            cells = " | ".join(cell(e, m, "+") for m in METRICS)
            lines.append(f"| {e['arm']} | {e['seeds']} | {cells} |")
    return "\n".join(lines) + "\n"
