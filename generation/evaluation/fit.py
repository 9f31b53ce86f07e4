"""One seeded training recipe for the evaluation's CNNs (domain models and the utility benchmark's
downstream classifier): AdamW with a cosine schedule, light augmentation, per-epoch checkpoints
that an interrupted run resumes from, and selection of the epoch with the lowest validation loss.

Every epoch draws its batches, augmentations and dropout from generators seeded by (seed, epoch),
so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from conditioning.dataset import CATEGORICAL, ConditionSchema, write_json_atomic
from conditioning.precision import effective_bf16
from generation.checkpoints import load_weights, save_weights

log = logging.getLogger(__name__)
REGRESSION_WEIGHT = 5.0  # L1 on [0, 1]-scaled values sits well below a cross-entropy otherwise


@dataclass
class FitConfig:
    """Training recipe; stored in each model's config.json."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    max_shift: float = 0.06  # random translation, fraction of the image side
    max_rotate: float = 5.0  # degrees
    max_scale: float = 0.05
    intensity: float = 0.1  # contrast and brightness jitter
    balance_classes: bool = True  # inverse-frequency class weights in the cross-entropy
    bf16: bool = False
    channels: tuple[int, ...] = (16, 32, 64, 128)

    def to_json(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_json(cls, data: dict) -> FitConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(known["channels"])
        return cls(**known)


@dataclass
class Targets:
    """Training targets per head: class index (-1 unknown) or value scaled to [0, 1] (NaN), and
    optionally one loss weight per row (they replace the config's class balancing in `fit`)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    row_weights: torch.Tensor | None = None
    # origin index per row (e.g. 0 real, 1 synthetic): with `domain_weight` > 0 an adversary
    # learns the origin from the pooled features through a reversed gradient, so the trunk
    # unlearns whatever tells the origins apart (domain-adversarial training, Ganin et al. 2016)
    domains: torch.Tensor | None = None
    domain_weight: float = 0.0

    @property
    def adversarial(self) -> bool:
        return self.domains is not None and self.domain_weight > 0

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t[index] for n, t in self.tensors.items()}


def encode_targets(
    conditions: list[dict], schema: ConditionSchema, names: list[str] | None = None
) -> Targets:
    """Condition dicts to per-attribute target tensors (only `names`, default all)."""
    out: dict[str, torch.Tensor] = {}
    for attribute in schema.attributes:
        if names is not None and attribute.name not in names:
            continue
        raw = [c.get(attribute.name) for c in conditions]
        if attribute.kind == CATEGORICAL:
            lookup = {v: i for i, v in enumerate(attribute.values)}
            out[attribute.name] = torch.tensor(
                [lookup[v] if v is not None else -1 for v in raw], dtype=torch.long
            )
        else:
            span = attribute.maximum - attribute.minimum
            out[attribute.name] = torch.tensor(
                [(float(v) - attribute.minimum) / span if v is not None else math.nan for v in raw],
                dtype=torch.float32,
            )
    return Targets(out)


def augment(images: torch.Tensor, config: FitConfig, generator: torch.Generator) -> torch.Tensor:
    """Small random affine (shift, rotation, scale; border padding) and intensity jitter.
    No flips: chest films carry laterality (heart side, burned-in markers)."""
    n = images.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(config.max_rotate))
    scale = 1 + uniform(config.max_scale)
    shift = uniform(2 * config.max_shift), uniform(2 * config.max_shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    contrast = 1 + uniform(config.intensity).view(n, 1, 1, 1)
    brightness = uniform(config.intensity / 2).view(n, 1, 1, 1)
    return ((moved - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0)


class _ReversedGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by -scale backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reversed_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` forward; backward, the gradient times -scale (the gradient reversal layer)."""
    return _ReversedGradient.apply(x, scale)


def domain_adversary(feature_dim: int, n_domains: int, seed: int) -> torch.nn.Module:
    """The origin classifier of domain-adversarial training, seeded apart from the model."""
    with torch.random.fork_rng():
        torch.manual_seed(seed * 100_003 + 7)
        return torch.nn.Sequential(
            torch.nn.Linear(feature_dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_domains)
        )


def adversary_strength(weight: float, progress: float) -> float:
    """DANN's schedule: the reversed gradient grows from 0 to `weight` over training, so the
    adversary does not scramble the features before the label heads have any."""
    return weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


def class_weights(targets: Targets, classes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Inverse-frequency weights (mean 1 over present classes) per categorical head."""
    weights = {}
    for name, k in classes.items():
        labels = targets.tensors[name]
        counts = torch.bincount(labels[labels >= 0], minlength=k).float()
        w = torch.where(counts > 0, counts.sum() / (k * counts.clamp(min=1)), torch.zeros(k))
        weights[name] = w
    return weights


def loss_fn(
    outputs: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor] | None = None,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of head losses over the rows whose label is known; classification rows weighted by
    their class (`weights`) or by a weight of their own (`row_weights`, a weighted mean)."""
    total = torch.zeros(())
    for name, target in targets.items():
        pred = outputs[name].float()
        if target.dtype == torch.long:
            known = target >= 0
            if known.any() and row_weights is not None:
                ce = F.cross_entropy(pred[known], target[known], reduction="none")
                total = total + (ce * row_weights[known]).sum() / row_weights[known].sum()
            elif known.any():
                w = None if weights is None else weights.get(name)
                total = total + F.cross_entropy(pred, target, weight=w, ignore_index=-1)
        else:
            known = ~torch.isnan(target)
            if known.any():
                total = total + REGRESSION_WEIGHT * F.smooth_l1_loss(
                    pred[known], target[known], beta=0.05
                )
    return total


@torch.no_grad()
def run_inference(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256, bf16: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Raw head outputs and pooled features for all images, in eval mode."""
    was_training = model.training
    model.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    feats = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=effective_bf16(bf16, "cpu")):
            f = model.features(batch)
            o = model.heads(f)
        feats.append(f.float())
        for n, v in o.items():
            outs.setdefault(n, []).append(v.float())
    model.train(was_training)
    return {n: torch.cat(v) for n, v in outs.items()}, torch.cat(feats)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{index}.{key}"] = torch.as_tensor(value).clone()
    return out


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def effective_batch_size(n: int, batch_size: int) -> int:
    """The configured batch size, reduced on tiny training sets so an epoch has 4+ steps."""
    return max(2, min(batch_size, n // 4))


def fit(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: Targets,
    config: FitConfig,
    *,
    val: tuple[torch.Tensor, Targets] | None = None,
    work_dir: Path | None = None,
    progress: Callable[[int, dict], None] | None = None,
    desc: str = "train",
) -> dict:
    """Train `model` in place and return its history; the weights left in the model are those of
    the epoch with the lowest validation loss (the last epoch without `val`).

    With `work_dir`, each epoch ends with a checkpoint there and a later call with the same
    config resumes after the last finished epoch. `targets.row_weights` (one per image) replace
    the config's class balancing.
    """
    from tqdm.auto import tqdm

    adversary = None
    parameters = list(model.parameters())
    if targets.adversarial:
        n_domains = int(targets.domains.max()) + 1
        adversary = domain_adversary(model.feature_dim, n_domains, config.seed)
        parameters += list(adversary.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    classes = dict(getattr(model, "categorical", {}))
    row_weights = targets.row_weights
    balance = config.balance_classes and row_weights is None
    weights = class_weights(targets, classes) if balance else None
    history: list[dict] = []
    best = {"loss": math.inf, "epoch": -1}
    best_state = None
    start_epoch = 0
    if work_dir is not None:
        resumed = _resume(work_dir, config, model, optimizer, adversary)
        if resumed is not None:
            start_epoch, history, best, best_state = resumed
            log.info("%s: resuming after epoch %d of %d", desc, start_epoch, config.epochs)
    epochs = _Epochs(model, optimizer, images, targets, config, weights, row_weights, adversary)
    bar = tqdm(range(start_epoch, config.epochs), desc=desc, unit="epoch", leave=False)
    for epoch in bar:
        entry = {"epoch": epoch + 1, "train_loss": epochs.train(epoch)}
        if val is not None:
            outputs, _ = run_inference(model, val[0], bf16=config.bf16)
            entry["val_loss"] = float(loss_fn(outputs, val[1].tensors))
        history.append(entry)
        score = entry.get("val_loss", -epoch)
        if score < best["loss"]:
            best = {"loss": score, "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k != "epoch"})
        log.info(
            "%s epoch %d/%d: %s",
            desc,
            epoch + 1,
            config.epochs,
            ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if k != "epoch"),
        )
        if work_dir is not None:
            _checkpoint(work_dir, config, (model, adversary), optimizer, history, best, best_state)
        if progress is not None:
            progress(epoch + 1, entry)
    if best_state is not None:
        model.load_state_dict(best_state)
    best_loss = best["loss"] if val is not None else None
    return {"history": history, "best_epoch": best["epoch"], "best_val_loss": best_loss}


@dataclass
class _Epochs:
    """One epoch of training: a seeded shuffle, a cosine learning rate over all epochs, the
    config's augmentation and loss."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    targets: Targets
    config: FitConfig
    weights: dict[str, torch.Tensor] | None  # per-class weights of each categorical head
    row_weights: torch.Tensor | None
    adversary: torch.nn.Module | None = None  # origin classifier (targets.domains)

    def train(self, epoch: int) -> float:
        """Train one epoch; the mean training loss."""
        config, n = self.config, len(self.images)
        batch_size = effective_batch_size(n, config.batch_size)
        steps_per_epoch = max(1, math.ceil(n / batch_size))
        total_steps = config.epochs * steps_per_epoch
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=generator)
        self.model.train()
        running, seen = 0.0, 0
        with torch.random.fork_rng():
            torch.manual_seed(config.seed * 100_003 + epoch)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                if len(index) < 2:  # batch norm needs two samples
                    continue
                global_step = epoch * steps_per_epoch + step
                lr = config.lr * 0.5 * (1 + math.cos(math.pi * global_step / total_steps))
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                progress = global_step / total_steps
                running += self.step(index, generator, progress) * len(index)
                seen += len(index)
        return running / max(seen, 1)

    def step(self, index: torch.Tensor, generator: torch.Generator, progress: float) -> float:
        config = self.config
        batch = augment(self.images[index], config, generator)
        with torch.autocast(
            "cpu", dtype=torch.bfloat16, enabled=effective_bf16(config.bf16, "cpu")
        ):
            if self.adversary is None:
                outputs = self.model(batch)
            else:
                features = self.model.features(batch)
                outputs = self.model.heads(self.model.dropout(features))
                strength = adversary_strength(self.targets.domain_weight, progress)
                origin = self.adversary(reversed_gradient(features, strength))
        rows = None if self.row_weights is None else self.row_weights[index]
        loss = loss_fn(outputs, self.targets.take(index), self.weights, rows)
        if self.adversary is not None:
            loss = loss + self._origin_loss(origin, index, rows)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _origin_loss(self, logits: torch.Tensor, index: torch.Tensor, rows) -> torch.Tensor:
        """The adversary's cross-entropy, each origin weighing the same in every batch (and each
        row its own weight within it), so that it cannot win by guessing the larger origin."""
        domains = self.targets.domains[index]
        ce = F.cross_entropy(logits.float(), domains, reduction="none")
        rows = torch.ones_like(ce) if rows is None else rows
        per_origin = [
            (ce * rows)[domains == d].sum() / rows[domains == d].sum() for d in domains.unique()
        ]
        return torch.stack(per_origin).mean()


def _checkpoint(work_dir, config, models, optimizer, history, best, best_state) -> None:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    model, adversary = models
    save_weights(work_dir / "last.safetensors", model.state_dict())
    if adversary is not None:
        save_weights(work_dir / "adversary.safetensors", adversary.state_dict())
    save_weights(work_dir / "optimizer.safetensors", _optimizer_tensors(optimizer))
    if best_state is not None:
        save_weights(work_dir / "best.safetensors", best_state)
    write_json_atomic(
        work_dir / "progress.json",
        {"config": config.to_json(), "history": history, "best": best},
    )


def _resume(work_dir, config, model, optimizer, adversary=None):
    work_dir = Path(work_dir)
    path = work_dir / "progress.json"
    if not path.is_file():
        return None
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s: unreadable, starting over", path)
        return None
    if progress.get("config") != config.to_json() or not progress.get("history"):
        return None
    if adversary is not None and not (work_dir / "adversary.safetensors").is_file():
        log.warning("%s: no adversary checkpoint beside it, starting over", path)
        return None
    model.load_state_dict(load_weights(work_dir / "last.safetensors"))
    if adversary is not None:
        adversary.load_state_dict(load_weights(work_dir / "adversary.safetensors"))
    _restore_optimizer(optimizer, load_weights(work_dir / "optimizer.safetensors"))
    best_state = None
    if (work_dir / "best.safetensors").is_file():
        best_state = load_weights(work_dir / "best.safetensors")
    best = progress["best"]
    if best["loss"] is None:
        best["loss"] = math.inf
    return len(progress["history"]), progress["history"], best, best_state


def seed_everything(seed: int) -> None:
    """Seed torch and numpy for model initialisation."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
