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
from .search import topk_by_patient
from .weights import load_weights, save_weights

log = logging.getLogger(__name__)

WEIGHTS = "encoder.safetensors"
CONFIG = "encoder.json"
ENCODER_VERSION = 2  # 2: partial copies (blends, pasted regions) among the positives
HARD_VERSION = 1  # of the hard-negative phase (training_key: an encoder trained without it is
# its starting point, hardened rather than retrained)
HARD_GROUP = 4  # a hard batch is made of groups of this many films: one and its nearest
# training films of other patients (by the encoder as it is)
HARD_REFRESH = 100  # steps between two embeddings of the training films (about a second each)
HARD_LR = 0.5  # the hard phase's learning rate, as a share of the first phase's


@dataclass
class EncoderParams:
    """What decides the encoder: changing any of these retrains it."""

    input_size: int = 64
    width: int = 16
    dim: int = 128
    steps: int = 6400  # trained once per training set (with its hard phase, 2,581 s for the 4,654
    # Kermany training films on 2 AVX2 cores shared with other runs; 937 s alone at 3,200). On the
    # planted set the source's patient is the nearest for 948 of 1,000 copies and among the 10
    # nearest for 985, against 928 and 975 at 3,200 (985 copies flagged against 984, 0 of 618
    # fresh each; docs/privacy-audit.md); at 3,200 941-942 were flagged against 925-933 at 1,600
    # and 896 at 400 (an older detector)
    batch: int = 128
    lr: float = 2e-3
    temperature: float = 0.1
    seed: int = 0
    hard_steps: int | None = None  # then this many (None: as many as `steps`) on batches of
    # look-alike films (hard_batch). At 3,200 + 1,600, on the planted set the source of a
    # blended copy was among the 10 nearest patients for 185 of 203 blends against 172 (all
    # copies: 980 of 1,000 against 962), and 977 copies were flagged against 975
    hard_partial: float = 0.9  # of the hard phase's second views, this share mixed into another
    # patient's film (the first phase: half, augment.copy_augment's default). With 6,400 + 6,400
    # at 0.9 (against 6,400 + 3,200 at 0.5) the source is the nearest film for 964 of 1,000
    # planted copies against 954, and on five planted sets 4,943 of 5,000 copies are flagged
    # against 4,926 (4,947 against 4,923 with the verifier trained with another seed), 1-2 of
    # 6,180 fresh images each (docs/privacy-audit.md); the encoder trains a third longer
    hard_rounds: int = 2  # the hard phase run this many times, each from the encoder the last
    # left, its learning rate warmed up and decayed again (a warm restart) and its draws
    # seeded afresh, so a round started from a cached encoder is the round trained in one go.
    # On five planted sets, 4,951 of 5,000 copies flagged with 2 rounds against 4,943 with 1 and
    # 4,952 with 3 (the same verifier; 1-2 of 6,180 fresh images); the bench with its own
    # verifier 4,955 (99.1%), 2 of 6,180 (docs/privacy-audit.md)

    @property
    def hard(self) -> int:
        """The hard phase's steps (each round's)."""
        return self.steps if self.hard_steps is None else self.hard_steps

    @property
    def rounds(self) -> int:
        """The hard phase's rounds (none without hard steps)."""
        return self.hard_rounds if self.hard else 0


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
    """Identifies an encoder: the (deduplicated) training pixels' hashes and the params. Without
    a hard phase the key is the one encoders trained before it had (the phase's start), and with
    one round the one encoders had before there were rounds, so an encoder cached then is
    hardened further, not trained again."""
    fields = asdict(params)
    del fields["hard_steps"], fields["hard_partial"], fields["hard_rounds"]
    hard = params.hard
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(f"v{ENCODER_VERSION}".encode())
    if hard:
        digest.update(f"hard{hard}v{HARD_VERSION}partial{params.hard_partial}".encode())
    if params.rounds > 1:
        digest.update(f"rounds{params.rounds}".encode())
    for h in sorted(train_hashes):
        digest.update(h.encode())
    return digest.hexdigest()


def base_params(params: EncoderParams, rounds: int = 0) -> EncoderParams:
    """The params of the encoder after `rounds` of the hard phase (0: its first phase alone),
    from which training can go on."""
    if rounds == 0:
        return EncoderParams(**{**asdict(params), "hard_steps": 0})
    return EncoderParams(**{**asdict(params), "hard_rounds": rounds})


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


def hard_batch(neighbours: np.ndarray, groups: list[str], rng: np.random.Generator, batch: int):
    """A batch of look-alike films, at most one per patient: in random order, each film not yet
    represented by its patient with up to HARD_GROUP - 1 of its `neighbours` (N, m: nearest
    training films of other patients, -1 pad) whose patients are not either. Random batches of
    chest films are told apart by their anatomy; these only by what makes a film itself."""
    out, used = [], set()
    for first in rng.permutation(len(groups)):
        if len(out) >= batch:
            break
        if groups[first] in used:
            continue
        group: list[int] = []
        for j in [int(first), *(int(j) for j in neighbours[first] if j >= 0)]:
            if len(group) == HARD_GROUP or len(out) + len(group) == batch:
                break
            if groups[j] not in used:
                used.add(groups[j])
                group.append(j)
        out.extend(group)
    return np.array(out)


def _nearest_films(model: CopyEncoder, images01: np.ndarray, groups: list[str], size: int):
    """(N, 2 HARD_GROUP) each training film's nearest training films (one per patient) by the
    encoder as it is."""
    e = embed(model, images01, size)
    patients = np.unique(np.asarray(groups), return_inverse=True)[1]
    return topk_by_patient(e, e, patients, 2 * HARD_GROUP)[0]


class _Draws:
    """Batches and their loss, drawn from generators seeded with `params.seed` (see
    train_encoder for which phases share them)."""

    def __init__(self, model: CopyEncoder, images01: np.ndarray, groups: list[str], params):
        self.model, self.images01, self.groups, self.params = model, images01, groups, params
        self.data = to_input(images01, params.input_size)
        self.rng = np.random.default_rng(params.seed)
        self.generator = torch.Generator().manual_seed(params.seed)
        self.near, self.step = None, 0

    def loss_on(self, index: np.ndarray, share: float = 0.5) -> torch.Tensor:
        x = self.data[torch.from_numpy(index)]
        with torch.no_grad():
            others = self.data[torch.from_numpy(_others(self.groups, index, self.rng))]
            v1 = copy_augment(x, self.generator)
            v2 = copy_augment(x, self.generator, others, share)
        return nt_xent(self.model(v1), self.model(v2), self.params.temperature)

    def random_loss(self) -> torch.Tensor:
        return self.loss_on(_one_per_patient(self.groups, self.rng, self.params.batch))

    def hard_loss(self) -> torch.Tensor:
        if self.step % HARD_REFRESH == 0:
            self.model.eval()
            self.near = _nearest_films(
                self.model, self.images01, self.groups, self.params.input_size
            )
            self.model.train()
        self.step += 1
        index = hard_batch(self.near, self.groups, self.rng, self.params.batch)
        return self.loss_on(index, self.params.hard_partial)


def train_encoder(
    images01: np.ndarray,
    groups: list[str],
    params: EncoderParams,
    progress: bool = True,
    start: CopyEncoder | None = None,
    start_round: int = 0,
) -> tuple[CopyEncoder, dict]:
    """Train on the training images (N, H, W); `groups` are their patient ids: `params.steps` on
    random batches (one film per patient), then `params.rounds` rounds of `params.hard` steps
    on hard ones (hard_batch) at HARD_LR of the rate, `params.hard_partial` of their second
    views partial copies. `start`: an encoder trained for base_params(params, start_round),
    whose phases are not redone. The first round goes on with the first phase's draws (as
    before there were rounds, so the key of one round still names the same encoder); a later
    round, or one started from a cached encoder, draws afresh from `params.seed`, so an encoder
    cached after a round is trained on to the encoder trained in one go."""
    if len(images01) < 8:
        raise AuditError("training split", f"{len(images01)} images: too few to train the encoder")
    torch.manual_seed(params.seed)  # the first phase's initial weights
    model = start if start is not None else CopyEncoder(params.width, params.dim)
    stats: dict = {"train_seconds": 0.0, "final_loss": None}
    draws = None
    if start is None:
        draws = _Draws(model, images01, groups, params)
        stats = fit(
            model, draws.random_loss, params.steps, params.lr, "train copy encoder", progress
        )
    rounds = range(start_round if start is not None else 0, params.rounds)
    for done in rounds:
        if draws is None or done > 0:
            torch.manual_seed(params.seed)
            draws = _Draws(model, images01, groups, params)
        desc = f"harden {done + 1}/{params.rounds}"
        hard = fit(model, draws.hard_loss, params.hard, params.lr * HARD_LR, desc, progress)
        stats["train_seconds"] = round(stats["train_seconds"] + hard["train_seconds"], 1)
        stats["hard_final_loss"] = hard["final_loss"]
    if params.rounds:
        stats["hardened_a_cached_encoder"] = start is not None
        stats["hard_rounds_trained"] = len(rounds)
    stats.update(train_images=len(images01), train_patients=len(set(groups)))
    log.info("copy encoder trained: %s", stats)
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
