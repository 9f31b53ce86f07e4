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

from conditioning.dataset import ConditionSchema, Dataset, load_dataset
from conditioning.encoders import encode_conditions


@dataclass
class TrainingData:
    images: torch.Tensor  # (N, C, *size) in [-1, 1]; C = 2 (image, mask) on masked datasets
    conditions: torch.Tensor  # (N, A), NaN = unknown
    schema: ConditionSchema
    spatial_dims: int
    has_masks: bool
    dataset: Dataset
    records: list  # the conditioning.dataset Records, in tensor order

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch_indices(self, step: int, batch_size: int, seed: int, rank=0, world=1) -> np.ndarray:
        """Indices of the batch for global `step` (this process's share under data parallel)."""
        n = len(self)
        global_batch = batch_size * world
        per_epoch = max(n // global_batch, 1)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        start = position * global_batch + rank * batch_size
        return np.take(order, range(start, start + batch_size), mode="wrap")


def load_training_data(path, split: str = "train", limit_to=None) -> TrainingData:
    """Read one split through the validating reader; `limit_to` optionally filters records."""
    dataset = load_dataset(path)
    records = dataset.split(split)
    if limit_to is not None:
        records = limit_to(records)
    if not records:
        raise ValueError(f"{dataset.root}: no {split} images to train on")
    images = []
    for record in tqdm(records, desc="loading images", unit="img", leave=False):
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
    )
