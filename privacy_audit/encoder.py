"""A small copy-detection encoder, trained by the project on the training split itself
(SimCLR-style NT-Xent over the copy augmentations): near-copies of an image land near it.
No pretrained weights: the audit must not depend on anything downloaded."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import copy_augment
from .blocks import map_blocks
from .errors import AuditError
from .nets import conv_block, fit, for_inference
from .weights import load_weights, save_weights

log = logging.getLogger(__name__)

WEIGHTS = "encoder.safetensors"
CONFIG = "encoder.json"
ENCODER_VERSION = 2  # 2: partial copies (blends, pasted regions) among the positives


@dataclass
class EncoderParams:
    """What decides the encoder: changing any of these retrains it."""

    input_size: int = 64
    width: int = 16
    dim: int = 128
    steps: int = 3200  # on the planted set, 941-942 of 1,000 copies flagged against 925-933 at
    # 1,600 and 896 at 400 (two seeds each; docs/privacy-audit.md); trained once per training set
    batch: int = 128
    lr: float = 2e-3
    temperature: float = 0.1
    seed: int = 0


class CopyEncoder(nn.Module):
    """A slim strided CNN (64 -> 4x4 map; about 9 MMAC per 64x64 image, so it trains in
    minutes on a CPU) and a linear head over the 4x4 map: spatial layout matters for copies."""

    def __init__(self, width: int = 16, dim: int = 128):
        super().__init__()
        w = width

        self.features = nn.Sequential(
            *conv_block(1, w, 2),
            *conv_block(w, 2 * w, 2),
            *conv_block(2 * w, 2 * w, 1),
            *conv_block(2 * w, 4 * w, 2),
            *conv_block(4 * w, 4 * w, 1),
            *conv_block(4 * w, 8 * w, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 8 * w, 256), nn.ReLU(inplace=True), nn.Linear(256, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.pool(self.features(x))), dim=1)


def to_input(images01: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 1, size, size) float tensor (area-resized when larger)."""
    x = torch.as_tensor(np.asarray(images01, dtype=np.float32))[:, None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The NT-Xent loss of SimCLR: each view must pick its partner out of the 2B-1 others."""
    z = torch.cat([z1, z2])
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def training_key(train_hashes: list[str], params: EncoderParams) -> str:
    """Identifies an encoder: the (deduplicated) training pixels' hashes and the params."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(f"v{ENCODER_VERSION}".encode())
    for h in sorted(train_hashes):
        digest.update(h.encode())
    return digest.hexdigest()


def _others(groups: list[str], index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each image of the batch, a random training image of another patient (what a partial
    copy is mixed into)."""
    out = rng.integers(0, len(groups), len(index))
    for j, i in enumerate(index):
        while groups[out[j]] == groups[i]:
            out[j] = rng.integers(0, len(groups))
    return out


def _one_per_patient(groups: list[str], rng: np.random.Generator, batch: int) -> np.ndarray:
    """A batch with at most one image per patient: a patient's other visits are near-identical,
    and pushing them apart as negatives would teach the encoder the wrong thing."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_patient[g].append(i)
    patients = list(by_patient)
    chosen = rng.choice(len(patients), size=min(batch, len(patients)), replace=False)
    return np.array([rng.choice(by_patient[patients[c]]) for c in chosen])


def train_encoder(
    images01: np.ndarray,
    groups: list[str],
    params: EncoderParams,
    progress: bool = True,
) -> tuple[CopyEncoder, dict]:
    """Train on the training images (N, H, W); `groups` are their patient ids."""
    if len(images01) < 8:
        raise AuditError("training split", f"{len(images01)} images: too few to train the encoder")
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    data = to_input(images01, params.input_size)
    model = CopyEncoder(params.width, params.dim)

    def loss_at() -> torch.Tensor:
        index = torch.from_numpy(_one_per_patient(groups, rng, params.batch))
        x = data[index]
        with torch.no_grad():
            others = data[torch.from_numpy(_others(groups, index.numpy(), rng))]
            v1, v2 = copy_augment(x, generator), copy_augment(x, generator, others)
        return nt_xent(model(v1), model(v2), params.temperature)

    stats = fit(model, loss_at, params.steps, params.lr, "train copy encoder", progress)
    stats.update(train_images=len(images01), train_patients=len(set(groups)))
    log.info(
        "copy encoder trained: %d steps in %.1f s, loss %.3f",
        params.steps,
        stats["train_seconds"],
        stats["final_loss"],
    )
    return model, stats


def embed(
    model: CopyEncoder,
    images01: np.ndarray,
    size: int,
    batch: int = 256,
    progress: bool = False,
    desc: str = "embed",
) -> torch.Tensor:
    """Unit-norm embeddings (N, dim) of (N, H, W) images, a batch per thread (blocks.py: a
    small CNN's layers split across threads spend more time waiting than computing; batches of
    a few hundred 64x64 images stay in cache)."""
    run = for_inference(model)

    def one(start: int) -> torch.Tensor:
        x = to_input(images01[start : start + batch], size)
        with torch.no_grad():
            return run(x.contiguous(memory_format=torch.channels_last))

    out = map_blocks(one, range(0, len(images01), batch), progress, desc)
    return torch.cat(out) if out else torch.empty(0, model.head[-1].out_features)


def save_encoder(model: CopyEncoder, directory: str | Path, meta: dict) -> None:
    """safetensors weights + JSON config, each written atomically."""
    save_weights(model, directory, (WEIGHTS, CONFIG), meta)


def load_encoder(directory: str | Path, key: str) -> tuple[CopyEncoder, dict] | None:
    """The cached encoder in `directory` if it was trained for `key`, else None."""

    def build(meta: dict) -> CopyEncoder:
        params = EncoderParams(**meta["params"])
        return CopyEncoder(params.width, params.dim)

    return load_weights(directory, (WEIGHTS, CONFIG), key, build)
