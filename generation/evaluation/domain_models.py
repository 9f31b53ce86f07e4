"""Domain models: a CNN the project trains on the real TRAIN split of a dataset to judge images
of that domain. Its categorical heads classify every categorical condition, its regression heads
estimate the continuous ones (age), and its pooled penultimate features are the encoder the
distribution metrics (Frechet distance, precision/recall) work in. No pretrained weights.

Saved as model.safetensors + config.json + MODEL_CARD.md; `train_domain_models` reuses a saved
directory trained on the same data (Dataset.content_hash) with the same recipe.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.dataset import (
    CATEGORICAL,
    CONTINUOUS,
    ConditionSchema,
    Dataset,
    DatasetError,
    load_dataset,
    replace_directory,
    write_json_atomic,
)
from generation.checkpoints import load_weights, save_weights

from .fit import FitConfig, encode_targets, fit, run_inference, seed_everything
from .images import ImageSet, load_split, to_tensor
from .metrics import classification_metrics, label_indices, regression_metrics
from .networks import ConditionNet

log = logging.getLogger(__name__)
CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
CARD = "MODEL_CARD.md"
KIND = "radsynth-domain-models"
MIN_CONTINUOUS_LABELS = 10


@dataclass
class Predictions:
    """Domain-model outputs: class probabilities (N, K) per categorical attribute, values in the
    attribute's unit per continuous attribute, and features (N, D) for distribution metrics."""

    probabilities: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    features: np.ndarray


@dataclass
class DomainModels:
    """A loaded domain model and what it was trained on."""

    model: ConditionNet
    schema: ConditionSchema  # the attributes it has heads for
    config: dict
    directory: Path

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def data_hash(self) -> str:
        return self.config["data_hash"]

    @property
    def encoder_name(self) -> str:
        return f"domain classifier penultimate features ({self.model.feature_dim}-d)"

    def predict(self, images: np.ndarray, batch_size: int = 256) -> Predictions:
        """Run on images (N, H, W) in [0, 1]; other sizes are resized to the model's size."""
        tensor = to_tensor(images, self.image_size)
        outputs, features = run_inference(self.model, tensor, batch_size)
        probabilities = {n: torch.softmax(outputs[n], 1).numpy() for n in self.model.categorical}
        values = {}
        for name in self.model.continuous:
            attribute = self.schema[name]
            span = attribute.maximum - attribute.minimum
            scaled = outputs[name].clamp(0.0, 1.0).numpy().astype(np.float64)
            values[name] = attribute.minimum + span * scaled
        return Predictions(probabilities, values, features.numpy().astype(np.float64))


def learnable_schema(dataset: Dataset) -> ConditionSchema:
    """The attributes a domain model can learn from the train split: categorical ones with two or
    more values present, continuous ones with enough known values."""
    train = dataset.split("train")
    keep = []
    for attribute in dataset.schema.attributes:
        known = [r.conditions.get(attribute.name) for r in train]
        known = [v for v in known if v is not None]
        if attribute.kind == CATEGORICAL and len(set(known)) >= 2:
            keep.append(attribute)
        elif attribute.kind == CONTINUOUS and len(known) >= MIN_CONTINUOUS_LABELS:
            keep.append(attribute)
    if not keep:
        raise DatasetError(
            dataset.root,
            "no condition a domain model can learn (needs a categorical attribute with 2+ values "
            f"or a continuous one with {MIN_CONTINUOUS_LABELS}+ known values in train)",
        )
    return ConditionSchema(tuple(keep))


def score_predictions(predictions: Predictions, images: ImageSet, schema: ConditionSchema) -> dict:
    """Head-by-head metrics of predictions against the conditions of `images`."""
    out = {}
    for attribute in schema.attributes:
        if attribute.kind == CATEGORICAL:
            labels = label_indices(images.values(attribute.name), attribute.values)
            out[attribute.name] = classification_metrics(
                predictions.probabilities[attribute.name], labels, attribute.values
            )
        else:
            out[attribute.name] = regression_metrics(
                predictions.values[attribute.name], images.values(attribute.name)
            )
    return out


def _build(schema: ConditionSchema, channels: tuple[int, ...]) -> ConditionNet:
    categorical = {a.name: len(a.values) for a in schema.attributes if a.kind == CATEGORICAL}
    continuous = [a.name for a in schema.attributes if a.kind == CONTINUOUS]
    return ConditionNet(categorical, continuous, channels=channels)


def _matches(directory: Path, data_hash: str, config: FitConfig) -> bool:
    path = directory / CONFIG_JSON
    if not path.is_file() or not (directory / WEIGHTS).is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return saved.get("data_hash") == data_hash and saved.get("fit") == config.to_json()


def train_domain_models(
    dataset: Dataset | str | Path,
    out_dir: str | Path,
    config: FitConfig | None = None,
    *,
    force: bool = False,
) -> DomainModels:
    """Train (or reuse, when `out_dir` holds a model of the same data and recipe) the domain
    models on the dataset's train split, selecting the epoch by validation loss.

    Writes into a hidden sibling `.NAME.partial` (per-epoch checkpoints there let an
    interrupted run resume) and renames it to `out_dir` when complete."""
    if not isinstance(dataset, Dataset):
        dataset = load_dataset(dataset)
    config = config or FitConfig()
    out = Path(out_dir).resolve()
    data_hash = dataset.content_hash()
    if not force and _matches(out, data_hash, config):
        log.info("domain models in %s match this dataset; reusing them", out)
        return load_domain_models(out)
    size = dataset.image_size
    if dataset.dimensionality != "2D" or size[0] != size[1]:
        raise DatasetError(dataset.root, f"domain models need square 2D images, got {size}")
    schema = learnable_schema(dataset)
    train = load_split(dataset, "train")
    val = load_split(dataset, "val") if dataset.split("val") else None
    stage = _stage(out, data_hash)
    seed_everything(config.seed)
    model = _build(schema, config.channels)
    started = time.perf_counter()
    result = _fit_heads(model, schema, (train, val), config, stage)
    seconds = time.perf_counter() - started
    model.eval()
    domain = DomainModels(model, schema, {"image_size": size[0]}, stage)
    metrics = {}
    for split in ("val", "test"):
        if dataset.split(split):
            images = load_split(dataset, split)
            metrics[split] = score_predictions(domain.predict(images.images), images, schema)
    info = {
        "kind": KIND,
        "dataset_name": dataset.name,
        "data_hash": data_hash,
        "image_size": size[0],
        "conditions": schema.to_json(),
        "heads": {"categorical": dict(model.categorical), "continuous": list(model.continuous)},
        "encoder": f"pooled penultimate features of this network ({model.feature_dim}-d)",
        "feature_dim": model.feature_dim,
        "fit": config.to_json(),
        "train_images": len(train),
        "val_images": 0 if val is None else len(val),
        "best_epoch": result["best_epoch"],
        "history": result["history"],
        "metrics": metrics,
        "train_seconds": round(seconds, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
        "trained_by": "RadSynth, on the train split of the dataset named here; no pretrained "
        "weights or external data",
    }
    _publish(stage, out, model, info)
    log.info("domain models written to %s (%.0f s)", out, seconds)
    return load_domain_models(out)


def _stage(out: Path, data_hash: str) -> Path:
    """The hidden sibling `.NAME.partial` a run writes into, marked with its data's hash: the
    checkpoints of another dataset found there are removed, not resumed."""
    stage = out.with_name(f".{out.name}.partial")
    marker = stage / "data_hash"
    if stage.exists() and (not marker.is_file() or marker.read_text().strip() != data_hash):
        shutil.rmtree(stage)
    stage.mkdir(parents=True, exist_ok=True)
    marker.write_text(data_hash + "\n")
    return stage


def _fit_heads(model, schema, splits, config: FitConfig, stage: Path) -> dict[str, Any]:
    """Fit the network on the train split (epoch chosen by the val split's loss, if any)."""
    train, val = splits
    names = schema.names
    log.info(
        "training domain models on %d train images (%s), %d epochs",
        len(train),
        ", ".join(a.describe() for a in schema.attributes),
        config.epochs,
    )
    return fit(
        model,
        to_tensor(train.images),
        encode_targets(train.conditions, schema, names),
        config,
        val=None
        if val is None
        else (to_tensor(val.images), encode_targets(val.conditions, schema, names)),
        work_dir=stage / "checkpoint",
        desc="domain models",
    )


def _publish(stage: Path, out: Path, model, info: dict[str, Any]) -> None:
    """Weights, config and card into the stage, which then replaces `out` whole."""
    save_weights(stage / WEIGHTS, model.state_dict())
    write_json_atomic(stage / CONFIG_JSON, info)
    _write_card(stage / CARD, info)
    shutil.rmtree(stage / "checkpoint", ignore_errors=True)
    (stage / "data_hash").unlink()
    replace_directory(stage, out)


def load_domain_models(directory: str | Path) -> DomainModels:
    """Load domain models saved by `train_domain_models`."""
    directory = Path(directory)
    path = directory / CONFIG_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; train domain models first")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise ValueError(f"{path}: not a RadSynth domain-model config")
    schema = ConditionSchema.from_json(config["conditions"], str(path))
    fit_config = FitConfig.from_json(config["fit"])
    model = _build(schema, fit_config.channels)
    try:
        model.load_state_dict(load_weights(directory / WEIGHTS))
    except RuntimeError as exc:
        raise ValueError(f"{directory / WEIGHTS}: does not fit config.json ({exc})") from None
    model.eval()
    return DomainModels(model, schema, config, directory)


def _fmt(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _write_card(path: Path, info: dict) -> None:
    lines = [
        f"# Domain models for `{info['dataset_name']}`",
        "",
        "Trained by the RadSynth project on its own data: the train split of the dataset below, "
        "from random initialisation. No pretrained weights and no external data were used.",
        "",
        f"- dataset content hash: `{info['data_hash']}`",
        f"- images: {info['image_size']}x{info['image_size']}, "
        f"train {info['train_images']}, val {info['val_images']}",
        f"- heads: categorical {info['heads']['categorical']}, "
        f"continuous {info['heads']['continuous']}",
        f"- encoder for distribution metrics: {info['encoder']}",
        f"- recipe: {info['fit']}",
        f"- epochs: {info['fit']['epochs']}, selected epoch (lowest val loss): {info['best_epoch']}",
        f"- training time: {info['train_seconds']} s on {info['machine']}",
        "",
        "## Metrics",
        "",
        "| split | attribute | n | accuracy | macro-AUROC | MAE |",
        "|---|---|---|---|---|---|",
    ]
    for split, per_attribute in info["metrics"].items():
        for name, m in per_attribute.items():
            lines.append(
                f"| {split} | {name} | {m['n']} | {_fmt(m.get('accuracy'))} | "
                f"{_fmt(m.get('macro_auroc'))} | {_fmt(m.get('mae'))} |"
            )
    lines += [
        "",
        "Intended use: judging synthetic images of this domain (condition adherence, feature space "
        "for Frechet distance and precision/recall). Not a diagnostic model.",
        "",
    ]
    from conditioning.dataset import write_text_atomic

    write_text_atomic(path, "\n".join(lines))
