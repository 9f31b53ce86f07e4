"""A learned pair verifier: is this registered pair a copy and its source?

The hand-built scores compare a registered pair through fixed windows and a fixed projection of
the anatomy every chest film shares; a blend keeps only part of the training film's detail in
every window, and they stop short of it (docs/privacy-audit.md). The verifier is a small CNN
that looks at the pair itself: the query's band-passed window at the alignment the local detail
score was taken at, the training image's window, and their product. It is trained by the
project per training set, on pairs made from the training split alone (no held-out image, no
pretrained weights): the training patients split in two halves, each in turn the reference;
positives are copies of a reference image altered by the encoder's copy augmentations (most of
them blended or pasted into a film of the other half) and registered against their source;
negatives are the other half's films registered against their nearest candidates, the pairs
the audit meets on every real image, as they are and altered by the same augmentations (mixed
among themselves): trained on clean negatives alone, it learned that a blurred or recompressed
film is a copy, and flagged the smooth samples of a barely trained generator. Its logit becomes
one more term of the combined score, calibrated on the held-out images like the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .aligner import Aligner, align, thetas_of, transforms_of
from .augment import copy_augment
from .blocks import map_blocks
from .copies import (
    DETAIL_ALIGNMENT,
    Neighbours,
    Reference,
    build_reference,
    find_neighbours,
)
from .detail import DetailIndex, band_queries, pair_windows
from .errors import AuditError
from .nets import conv_block, fit, for_inference, standardised
from .register import FIELD, Transform
from .weights import load_weights, save_weights

log = logging.getLogger(__name__)

WEIGHTS = "verifier.safetensors"
CONFIG = "verifier.json"
VERIFIER_VERSION = 8  # 2: negatives from the encoder route's 10 nearest patients (was 5); 3:
# and the other half's films altered as the copies are, among the negatives; 4: the windows
# band-passed before the warp (detail.band_queries); 5: negatives also from the detail route's
# candidate (register.detail_route_best); 6: the encoder's nearest pair's detail scores also at
# the detail's own alignment (register.detail_route_alignment); 7: no mirrored pixel route; 8:
# four convolutions (PairVerifier), not five
ALIGNED_DEPTH = 3  # each query's nearest candidates by the embedding scored at the aligner's
# alignment: a blend's source is often its second or third (five planted sets, verifier seeds
# 0-2, the 4,000-step aligner: 4,959, 4,957 and 4,954 of 5,000 copies flagged against 4,952,
# 4,950 and 4,945 with the nearest alone, the threshold unchanged, no fresh film flagged; the 5
# nearest flagged no copy more, the 8 nearest a fresh film; docs/privacy-audit.md), for about a
# third more time
PAIR_CHUNK = 8192  # pairs score_aligned aligns and verifies at a time: with ALIGNED_DEPTH pairs a
# query, the copies of the queries' images it takes stay a chunk's, not three times all of them.
# A multiple of align's and verify's blocks, so the batches (and the logits) are the same
COPIES_PER_IMAGE = 4  # positives per training image at most: a small training set needs fewer


@dataclass
class VerifierParams:
    """What decides the verifier (besides the encoder it shares candidates with): changing any
    of these retrains it."""

    steps: int = 6000  # about 6 min on an AVX2-only host, 2 threads. At 3,000 the five planted
    # sets' count moved with the training seed (4,952, 4,923 and 4,945 of 5,000 for seeds 0-2);
    # at 6,000 it is 4,952, 4,950 and 4,945, no fresh film flagged (docs/privacy-audit.md)
    batch: int = 128
    lr: float = 2e-3
    copies: int = 8000  # positives per half of the training patients (at most 4 per image)
    partial_share: float = 0.75  # of them blended into or pasted into another patient's film
    width: int = 16
    seed: int = 0


class PairVerifier(nn.Module):
    """Four 3x3 convolutions (w, w, 2w and 4w channels, a stride of 2 in the first and third),
    max- and mean-pooled, then a small head: 0.18-0.23 ms a pair of 52x52 windows on one thread
    of an AVX2-only host. The five of VERIFIER_VERSION 7 (w, 2w, 2w, 4w, 4w) took 0.38-0.44 ms
    and flagged 4-7 more of the 5,000 planted copies (docs/privacy-audit.md, "Measured
    2026-12-07 02:40-05:00")."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_block(3, w, 2),
            *conv_block(w, w, 1),
            *conv_block(w, 2 * w, 2),
            *conv_block(2 * w, 4 * w, 1),
        )
        self.head = nn.Sequential(
            nn.Linear(8 * w, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, 1)
        )

    def forward(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(n,) logits of (n, S, S) query and training windows (any scale: each is standardised)."""
        q, r = standardised(query), standardised(reference)
        x = self.features(torch.stack([q, r, q * r], 1))
        pooled = torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)
        return self.head(pooled)[:, 0]


def verifier_key(encoder_key: str, params: VerifierParams) -> str:
    """Identifies a verifier: the encoder's key (the training set and how candidates are found)
    and the params."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(f"v{VERIFIER_VERSION}:{encoder_key}".encode())
    return digest.hexdigest()


def local_thetas(detail_at: dict[tuple[int, int], tuple[Transform, ...]], keys) -> torch.Tensor:
    """(n, 2, 3) the affine_grid maps of the alignments the pairs `keys` ((query, column) of
    register.py's detail_at) had their local detail score taken at: where the verifier looks."""
    which = DETAIL_ALIGNMENT["verifier"]
    if not len(keys):
        return torch.zeros(0, 2, 3)
    return torch.stack([detail_at[key][which].theta(FIELD) for key in keys])


def verify(
    model: PairVerifier,
    index: DetailIndex,
    banded: torch.Tensor,
    refs: torch.Tensor,
    thetas: torch.Tensor,
    block: int = 512,
) -> np.ndarray:
    """(n,) logits of the pairs: query i (band_queries' banded[i]), warped by thetas[i],
    against training image refs[i]; a block of pairs per thread (blocks.map_blocks)."""
    run = for_inference(model)

    def one(start: int) -> torch.Tensor:
        end = start + block
        q, r = pair_windows(index, banded[start:end], refs[start:end], thetas[start:end])
        with torch.no_grad():
            return run(q, r)

    out = map_blocks(one, range(0, len(refs), block), False, "verify")
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def strongest_pairs(nb: Neighbours) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each query's finely registered pair with the largest detail score (best
    window or local): the one the verifier scores. Scoring every refined pair costs 2-3 times as
    much and flagged no more copies of the planted set (docs/privacy-audit.md)."""
    if nb.detail_local is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    strength = np.maximum(nb.detail_patch, nb.detail_local)
    rows = np.flatnonzero(np.isfinite(strength).any(1))
    return rows, np.argmax(strength[rows], axis=1)


def score_pairs(
    model: PairVerifier, reference: Reference, queries01: np.ndarray, nb: Neighbours
) -> np.ndarray:
    """(Q, k) the verifier's logit for each query's strongest pair (strongest_pairs) at the
    alignment its local detail score was taken at; -inf for the other candidates."""
    out = np.full(nb.index.shape, -np.inf, dtype=np.float32)
    rows, cols = strongest_pairs(nb)
    if len(rows) == 0:
        return out
    thetas = local_thetas(nb.detail_at, list(zip(rows.tolist(), cols.tolist(), strict=True)))
    refs = torch.as_tensor(nb.index[rows, cols])
    index = reference.registration.detail
    out[rows, cols] = verify(model, index, _banded(nb, index, queries01, rows), refs, thetas)
    return out


def _banded(nb: Neighbours, index: DetailIndex, queries01: np.ndarray, rows) -> torch.Tensor:
    """The band_queries images of the queries `rows`: those find_neighbours made, if it did."""
    if nb.banded is not None:
        return nb.banded[rows]
    return band_queries(index, queries01[rows])


def score_aligned(
    model: PairVerifier,
    aligner: Aligner,
    reference: Reference,
    queries01: np.ndarray,
    nb: Neighbours,
) -> tuple[np.ndarray, dict]:
    """(Q, k) the verifier's logit for each query's ALIGNED_DEPTH nearest pairs by the
    embedding at the aligner's two-stage alignment of them (aligner.py), -inf for the other
    candidates; and those alignments ((query, column) -> Transform)."""
    out = np.full(nb.index.shape, -np.inf, dtype=np.float32)
    found: dict = {}
    all_rows, all_cols = aligned_pairs(nb)
    registration = reference.registration
    for start in range(0, len(all_rows), PAIR_CHUNK):
        rows, cols = all_rows[start : start + PAIR_CHUNK], all_cols[start : start + PAIR_CHUNK]
        refs = torch.as_tensor(nb.index[rows, cols])
        mirrored, params = align(
            aligner, queries01, registration.whole[refs], torch.as_tensor(rows)
        )
        banded = _banded(nb, registration.detail, queries01, rows)
        thetas = thetas_of(mirrored, params)
        out[rows, cols] = verify(model, registration.detail, banded, refs, thetas)
        keys = zip(rows.tolist(), cols.tolist(), strict=True)
        found.update(zip(keys, transforms_of(mirrored, params), strict=True))
    return out, found


def aligned_pairs(nb: Neighbours) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each query's ALIGNED_DEPTH nearest candidates by the embedding (the
    first of ties first), query by query: the pairs score_aligned scores."""
    order = np.argsort(-nb.cosine, axis=1, kind="stable")[:, :ALIGNED_DEPTH]
    rows = np.repeat(np.arange(len(order)), order.shape[1])
    cols = order.ravel()
    keep = nb.index[rows, cols] >= 0
    return rows[keep], cols[keep]


@dataclass(frozen=True)
class TrainingPairs:
    """Windows of registered pairs (n, S, S) and their labels (1: a copy and its source)."""

    queries: torch.Tensor
    references: torch.Tensor
    labels: torch.Tensor


def make_pairs(
    encoder,
    images01: np.ndarray,
    groups: list[str],
    size: int,
    params: VerifierParams,
    progress: bool = False,
) -> TrainingPairs:
    """The training pairs, from the training images (N, H, W) and their patients alone (see the
    module's docstring). `encoder` and `size` find the negatives' candidates as the audit does."""
    from .register import register

    patients = np.unique(np.asarray(groups))
    if len(patients) < 4:
        raise AuditError("training split", f"{len(patients)} patients: too few for the verifier")
    rng = np.random.default_rng(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    first = set(rng.permutation(patients)[: len(patients) // 2].tolist())
    in_first = np.array([g in first for g in groups])
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for ref_mask in (in_first, ~in_first):
        ref_idx, other_idx = np.flatnonzero(ref_mask), np.flatnonzero(~ref_mask)
        refs_img, others_img = images01[ref_idx], images01[other_idx]
        ref_groups = [groups[i] for i in ref_idx]
        reference = build_reference(encoder, refs_img, [str(i) for i in ref_idx], ref_groups, size)
        index = reference.registration.detail
        # positives: altered copies of reference images, registered against their source
        n_copies = min(params.copies, COPIES_PER_IMAGE * len(ref_idx))
        source = rng.integers(0, len(ref_idx), n_copies)
        donors = rng.integers(0, len(other_idx), n_copies)
        copies = _altered_copies(refs_img[source], others_img[donors], params, generator)
        found = register(reference.registration, copies, source[:, None], progress=progress)
        pairs = [(i, 0) for i in range(len(copies)) if (i, 0) in found.detail_at]
        rows = np.array([i for i, _ in pairs], dtype=np.int64)
        thetas = local_thetas(found.detail_at, pairs)
        q, r = pair_windows(
            index, band_queries(index, copies[rows]), torch.as_tensor(source[rows]), thetas
        )
        parts.append((q, r, torch.ones(len(q))))
        # negatives: the other half's films against the candidates the audit would refine, as
        # they are and altered alike (mixed among themselves): no alteration is a sign of a copy
        donors = rng.integers(0, len(other_idx), len(other_idx))
        altered = _altered_copies(others_img, others_img[donors], params, generator)
        for queries01 in (others_img, altered):
            parts.append(_negatives(encoder, reference, queries01, size))
    queries, references, labels = (torch.cat(p) for p in zip(*parts, strict=True))
    return TrainingPairs(queries, references, labels)


def _negatives(encoder, reference: Reference, queries01: np.ndarray, size: int) -> tuple:
    """Films of patients not in `reference` against every candidate the audit refines for
    them: (query windows, training windows, zero labels)."""
    nb = find_neighbours(encoder, reference, queries01, size)
    keys = sorted(nb.detail_at)
    rows = np.array([row for row, _ in keys], dtype=np.int64)
    cands = torch.as_tensor(np.array([nb.index[row, col] for row, col in keys], np.int64))
    thetas = local_thetas(nb.detail_at, keys)
    index = reference.registration.detail
    q, r = pair_windows(index, band_queries(index, queries01[rows]), cands, thetas)
    return q, r, torch.zeros(len(q))


def _altered_copies(sources01, donors01, params: VerifierParams, generator) -> np.ndarray:
    """Copies altered as the encoder's augmentations alter them (augment.copy_augment),
    `partial_share` of them mixed into a donor film (another patient's)."""
    out = []
    for start in range(0, len(sources01), 512):
        x = torch.as_tensor(sources01[start : start + 512], dtype=torch.float32)[:, None]
        donors = torch.as_tensor(donors01[start : start + 512], dtype=torch.float32)[:, None]
        out.append(copy_augment(x, generator, donors, share=params.partial_share)[:, 0])
    return torch.cat(out).numpy()


def train_verifier(
    pairs: TrainingPairs, params: VerifierParams, progress: bool = True
) -> tuple[PairVerifier, dict]:
    """Binary cross-entropy on the pairs, each batch flipped left-right at random (both windows
    alike); AdamW with a linear warm-up and a cosine decay (nets.fit)."""
    n = len(pairs.labels)
    if n < 2 or pairs.labels.min() == pairs.labels.max():
        raise AuditError("training split", "too few pairs of both kinds to train the verifier")
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    model = PairVerifier(params.width)
    positive = float(pairs.labels.mean())
    weight = torch.tensor([0.5 / (1 - positive), 0.5 / positive])  # both kinds count alike

    def loss_at() -> torch.Tensor:
        batch = torch.randint(0, n, (min(params.batch, n),), generator=generator)
        q, r, y = pairs.queries[batch], pairs.references[batch], pairs.labels[batch]
        flip = torch.rand(len(batch), generator=generator) < 0.5
        q = torch.where(flip[:, None, None], q.flip(-1), q)
        r = torch.where(flip[:, None, None], r.flip(-1), r)
        return F.binary_cross_entropy_with_logits(model(q, r), y, weight=weight[y.long()])

    stats = fit(model, loss_at, params.steps, params.lr, "train pair verifier", progress)
    stats.update(pairs=n, copy_pairs=int(pairs.labels.sum()))
    log.info(
        "pair verifier trained: %d steps on %d pairs in %.1f s",
        params.steps,
        n,
        stats["train_seconds"],
    )
    return model, stats


def save_verifier(model: PairVerifier, directory, meta: dict) -> None:
    """safetensors weights + JSON record (weights.py)."""
    save_weights(model, directory, (WEIGHTS, CONFIG), meta)


def load_verifier(directory, key: str) -> tuple[PairVerifier, dict] | None:
    """The cached verifier in `directory` if it was trained for `key`, else None."""
    return load_weights(
        directory, (WEIGHTS, CONFIG), key, lambda meta: PairVerifier(meta["params"]["width"])
    )
