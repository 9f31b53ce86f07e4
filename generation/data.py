"""Training data: the train split of a dataset as tensors in [-1, 1], with conditions and masks.

Small enough to hold in memory at the sizes we train on (5k images of 64x64 are 85 MB); batches
are drawn by a permutation that depends only on (seed, epoch), so a resumed run sees the same
order as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from conditioning.dataset import CATEGORICAL, ConditionSchema, Dataset, load_dataset
from conditioning.encoders import encode_conditions


@dataclass
class TrainingData:
    images: torch.Tensor  # (N, C, *size) in [-1, 1]; C = 2 (image, mask) on masked datasets
    conditions: torch.Tensor  # (N, A), NaN = unknown
    schema: ConditionSchema
    spatial_dims: int
    has_masks: bool
    dataset: Dataset
    records: list  # the conditioning.dataset Records, in tensor order: focus first, then replay
    n_focus: int | None = None  # set with a replay pool: records[:n_focus] are the focus
    replay_share: float = 0.0  # share of each batch drawn from the replay pool

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def focus_records(self) -> list:
        return self.records[: self.n_focus] if self.n_focus is not None else self.records

    def batch_indices(
        self, step: int, batch_size: int, seed: int, balance: BalancedDraw | None = None
    ) -> np.ndarray:
        """Indices of the global batch of `step` (processes take slices of it: data parallel).

        With a replay pool, round(batch_size * replay_share) of them come from the pool and the
        rest from the focus records, each pool walked by its own seeded permutation. With a
        class balance (ClassBalance.bind), each slot picks a class first, then an image of it."""
        if balance is not None:
            return balance.draw(step, batch_size, seed)
        if self.n_focus is None:
            return _draw(len(self), step, batch_size, [seed])
        n_replay = int(round(batch_size * self.replay_share))
        focus = _draw(self.n_focus, step, batch_size - n_replay, [seed, 0])
        pool = _draw(len(self) - self.n_focus, step, n_replay, [seed, 1])
        return np.concatenate([focus, self.n_focus + pool])


@dataclass(frozen=True)
class ClassBalance:
    """Draw each batch slot's class with probability proportional to count**(1 - power), then an
    image of that class uniformly: power 0 is plain shuffling, 1 gives every class the same
    share, 0.5 (square-root sampling) lifts a rare class without replaying its few images as
    often as the common ones'. A rare class seen in 3% of batches leaves its condition
    embedding under-trained; one seen in half of them is memorized."""

    by: str
    power: float

    @classmethod
    def from_settings(cls, cfg) -> ClassBalance | None:
        by, power = cfg.balance_by or "", float(cfg.balance_power)
        if not by or power == 0:
            return None
        if not 0 < power <= 1:
            raise ValueError(f"balance_power must be in (0, 1], got {power}")
        return cls(by, power)

    def bind(self, data: TrainingData) -> BalancedDraw:
        """The draw over `data`'s labels, checked and counted once before training starts."""
        if data.n_focus is not None:
            raise ValueError("class-balanced batches and a replay pool cannot be combined")
        if self.by not in data.schema.names:
            raise ValueError(
                f"balance_by {self.by!r} is not a condition of this dataset "
                f"({', '.join(data.schema.names)})"
            )
        column = data.schema.names.index(self.by)
        attribute = data.schema.attributes[column]
        if attribute.kind != CATEGORICAL:
            raise ValueError(f"balance_by {self.by!r} must be categorical, not {attribute.kind}")
        values = data.conditions[:, column].numpy()
        if np.isnan(values).any():
            raise ValueError(
                f"{int(np.isnan(values).sum())} training images have no "
                f"{self.by}; class-balanced batches need it on every image"
            )
        labels = values.astype(np.int64)
        members = tuple(np.flatnonzero(labels == k) for k in range(len(attribute.values)))
        counts = np.array([len(m) for m in members], dtype=float)
        weights = np.where(counts > 0, counts ** (1 - self.power), 0.0)
        return BalancedDraw(tuple(attribute.values), members, weights / weights.sum())


@dataclass(frozen=True)
class BalancedDraw:
    """A ClassBalance bound to one training set: each class's images and its share of a batch."""

    names: tuple[str, ...]
    members: tuple[np.ndarray, ...]
    p: np.ndarray

    @property
    def shares(self) -> dict[str, float]:
        """Each class's expected share of a batch (what the run log states)."""
        return {n: float(v) for n, v in zip(self.names, self.p, strict=True)}

    def draw(self, step: int, batch_size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, 2])
        classes = rng.choice(len(self.names), size=batch_size, p=self.p)
        picks = [self.members[k][rng.integers(len(self.members[k]))] for k in classes]
        return np.array(picks, np.int64)


def _draw(n: int, step: int, batch_size: int, seed: list[int]) -> np.ndarray:
    """`batch_size` indices into range(n) at `step`: epochs of seeded permutations."""
    if batch_size == 0:
        return np.zeros(0, dtype=np.int64)
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([*seed, epoch]).permutation(n)
    start = position * batch_size
    return np.take(order, range(start, start + batch_size), mode="wrap")


def load_training_data(
    path,
    split: str = "train",
    limit_to=None,
    replay_from=None,
    replay_share: float = 0.0,
    show_progress: bool = True,
) -> TrainingData:
    """Read one split through the validating reader; `limit_to` optionally filters records.

    `replay_from(all_records)` picks a replay pool mixed into every batch at `replay_share`
    (adaptation keeps the rest of the distribution in view so the unconditional branch that
    classifier-free guidance contrasts against does not drift to the adaptation subset)."""
    dataset = load_dataset(path)
    every = dataset.split(split)
    records = limit_to(every) if limit_to is not None else every
    if not records:
        raise ValueError(f"{dataset.root}: no {split} images to train on")
    if not 0.0 <= replay_share < 1.0:
        raise ValueError(f"replay share must be in [0, 1), got {replay_share}")
    n_focus = None
    if replay_share > 0:
        pool = replay_from(every) if replay_from is not None else []
        if not pool:
            raise ValueError(
                f"{dataset.root}: replay asked for, but no {split} image is left to replay"
            )
        n_focus, records = len(records), [*records, *pool]
    images = []
    for record in tqdm(
        records, desc="loading images", unit="img", leave=False, disable=not show_progress
    ):
        channels = [dataset.load_image(record)]
        if dataset.has_masks:
            channels.append(dataset.load_mask(record).astype(np.float32))
        images.append(np.stack(channels))
    tensor = torch.from_numpy(np.stack(images)) * 2 - 1
    conditions = encode_conditions(dataset.schema, [r.conditions for r in records])
    return TrainingData(
        images=tensor,
        conditions=conditions,
        schema=dataset.schema,
        spatial_dims=2 if dataset.dimensionality == "2D" else 3,
        has_masks=dataset.has_masks,
        dataset=dataset,
        records=records,
        n_focus=n_focus,
        replay_share=replay_share,
    )
