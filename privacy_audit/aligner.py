"""A learned aligner: where does a query sit on a training film, when a search cannot tell?

The registration (register.py) maximises a band-passed NCC over a grid of transforms. When a
quarter to a half of a copy is another film and the rest is magnified up to 1.2 times, that
maximum is often somewhere else, and the detail scores and the pair verifier, taken there, see
no copy although the right alignment shows one (docs/privacy-audit.md). The aligner is a small
CNN that looks at the pair (band-passed at FIELD px: the query, the training film and their
product) and regresses the transform that moves the query onto the film: a mirror logit and,
for each mirror hypothesis, rotation, log zoom and shift, the family Transform describes. It is
trained by the project per training set, on the training films alone: each altered as the
encoder's augmentations alter a copy (augment.draw_geometric, most blended or pasted into another
patient's film, photometric changes), its transform known. No held-out image, no pretrained
weights. At audit time the pair verifier scores each query's verifier.ALIGNED_DEPTH nearest
pairs by the embedding once more at the aligner's alignment: one more term of the combined
score (copies.LOCAL_SCORES "aligned"), calibrated on the held-out images like the others.

It works in two stages, two networks of the same shape: the coarse one from the pair as it is;
the fine one from the query moved by the coarse answer, trained on pairs left off by the coarse
stage's kind of error (AlignerParams.residual_*) to regress what remains. On the planted set the fine
stage puts the pose of a cropped blend 2-3 times nearer its true one than the gradient climb up
the windows' NCC it replaces (refine.py before ALIGNER_VERSION 2), whose optimum a blended or
pasted film pulls off the copy: against each copy's true source the verifier scores 975 of 1,000
above the threshold at its pose, against 935 after that climb, for a third of its cost
(docs/privacy-audit.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .augment import draw_geometric, geometric, partial, photometric, warp
from .blocks import map_blocks
from .errors import AuditError
from .kernels import warp_affine
from .nets import conv_block, fit, for_inference, standardised
from .register import FIELD, Transform, band_pass
from .weights import load_weights, save_weights

log = logging.getLogger(__name__)

WEIGHTS = "aligner.safetensors"
CONFIG = "aligner.json"
ALIGNER_VERSION = 3  # 2: the fine stage; 3: the first convolution strided, not the second
THETA_WEIGHT = 20.0  # the alignment's squared error against the mirror's cross-entropy


@dataclass
class AlignerParams:
    """What decides the aligner (besides its training set): changing any of these retrains it."""

    steps: int = 8000  # each stage; about 11 min for 4,654 films on an AVX2-only host, 2
    # threads. The five planted sets, verifier seeds 0-2 (ALIGNER_VERSION 2, VERIFIER_VERSION 7):
    # 4,963, 4,961 and 4,960 of 5,000 copies flagged against 4,959, 4,957 and 4,954 at 4,000
    # steps, no fresh film flagged (docs/privacy-audit.md)
    batch: int = 64
    lr: float = 2e-3
    partial_share: float = 0.75  # of the altered films blended or pasted into another's
    max_rotation_deg: float = 6.0  # the largest rotation, scaling and crop it is trained on
    max_scale: float = 0.06
    min_crop: float = 0.75
    residual_deg: float = 3.0  # the fine stage's starting errors, drawn uniformly up to these:
    residual_zoom: float = 0.07  # rotation, log zoom, shifts (normalised units); the coarse
    residual_shift: float = 0.08  # stage's are mostly within a third of them on the planted set
    width: int = 16
    seed: int = 0


class PairAligner(nn.Module):
    """Five 3x3 convolutions (three with a stride of 2, the first among them), pooled to 4x4,
    then a 256-unit head: a mirror logit and (rotation in radians, log zoom, shift x, shift y in
    normalised units) for the unmirrored and the mirrored hypothesis. The first convolution
    strided: with three input channels at 32x32 it took a third of the network's time (on an
    AVX2-only host 0.11 against 0.18 ms a pair and stage; docs/privacy-audit.md)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *conv_block(3, w, 2),
            *conv_block(w, w, 1),
            *conv_block(w, 2 * w, 1),
            *conv_block(2 * w, 2 * w, 2),
            *conv_block(2 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * w, 256), nn.ReLU(inplace=True), nn.Linear(256, 9)
        )

    def forward(self, query: torch.Tensor, reference: torch.Tensor):
        """(n,) mirror logits and (n, 2, 4) parameters of (n, S, S) band-passed pairs."""
        q, r = standardised(query), standardised(reference)
        out = self.head(self.features(torch.stack([q, r, q * r], 1)))
        return out[:, 0], out[:, 1:].view(-1, 2, 4)


class Aligner(nn.Module):
    """The two stages (the module's docstring): `coarse` from the pair as it is, `fine` from
    the query moved by the coarse answer (it keeps the coarse stage's mirror)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.coarse = PairAligner(width)
        self.fine = PairAligner(width)


def thetas_of(mirrored: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) affine_grid maps of (n,) mirror flags and (n, 4) parameters, as
    Transform.theta gives them: output u samples the query at zoom R M (u - shift)."""
    angle, zoom = params[:, 0], params[:, 1].exp()
    dx, dy = params[:, 2], params[:, 3]
    m = torch.where(mirrored, -1.0, 1.0)
    c, s = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    rows = [
        torch.stack([c * m, -s, -(c * m * dx - s * dy)], 1),
        torch.stack([s * m, c, -(s * m * dx + c * dy)], 1),
    ]
    return torch.stack(rows, 1)


def compose(mirrored: torch.Tensor, first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """The (n, 4) parameters of thetas_of(mirrored, first) followed by an unmirrored
    thetas_of(then): the query sampled at `first`'s map of `then`'s map of each output pixel."""
    angle, zoom = then[:, 0], then[:, 1].exp()
    c, s = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    dx, dy = first[:, 2], first[:, 3]
    turn = torch.where(mirrored, -angle, angle)
    return torch.stack(
        [
            first[:, 0] + turn,
            first[:, 1] + then[:, 1],
            then[:, 2] + c * dx + s * dy,
            then[:, 3] - s * dx + c * dy,
        ],
        1,
    )


def transforms_of(mirrored: torch.Tensor, params: torch.Tensor) -> list[Transform]:
    """The same alignments as Transform (shifts in px of FIELD), for the report."""
    scale = FIELD / 2
    return [
        Transform(bool(m), math.degrees(a), math.exp(z), dy * scale, dx * scale)
        for m, (a, z, dx, dy) in zip(mirrored.tolist(), params.tolist(), strict=True)
    ]


def aligner_key(train_hashes: list[str], params: AlignerParams) -> str:
    """Identifies an aligner: its training images (their pixel hashes) and the params."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(f"v{ALIGNER_VERSION}".encode())
    for h in sorted(train_hashes):
        digest.update(h.encode())
    return digest.hexdigest()


def _inverse(theta: torch.Tensor) -> torch.Tensor:
    """The affine_grid map that undoes `theta` (n, 2, 3)."""
    a_inv = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([a_inv, -a_inv @ theta[:, :, 2:]], 2)


def _donors(groups: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image of another patient for each of `rows` (redrawn where it is the same one)."""
    donors = rng.integers(0, len(groups), len(rows))
    for _ in range(8):
        same = groups[donors] == groups[rows]
        if not same.any():
            break
        donors[same] = rng.integers(0, len(groups), int(same.sum()))
    return donors


def train_aligner(
    images01: np.ndarray, patients: list[str], params: AlignerParams, progress: bool = True
) -> tuple[Aligner, dict]:
    """Trains both stages on the training films (N, H, W) and their patients alone (the module's
    docstring), `params.steps` each: the coarse stage on the mirror's cross-entropy plus
    THETA_WEIGHT times the squared error of the alignment under the true mirror, the fine one on
    that error alone; AdamW with a warm-up and a cosine decay (nets.fit)."""
    _, groups = np.unique(np.asarray(patients), return_inverse=True)
    if groups.max(initial=0) < 1:
        raise AuditError("training split", "one patient: too few to train the aligner")
    torch.manual_seed(params.seed)
    generator = torch.Generator().manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    data = torch.as_tensor(np.asarray(images01, dtype=np.float32))[:, None]
    model = Aligner(params.width)
    shift = params.residual_shift
    residual = torch.tensor(
        [math.radians(params.residual_deg), params.residual_zoom, shift, shift], dtype=torch.float32
    )
    limits = dict(
        max_rotation_deg=params.max_rotation_deg,
        max_scale=params.max_scale,
        min_crop=params.min_crop,
    )

    def views() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training films, altered copies of them and the maps that undo the alteration."""
        rows = rng.integers(0, len(data), params.batch)
        source = data[torch.as_tensor(rows)]
        theta = draw_geometric(tuple(source.shape), generator, **limits)
        others = geometric(data[torch.as_tensor(_donors(groups, rows, rng))], generator)
        query = partial(warp(source, theta), others, generator, params.partial_share)
        return source, photometric(query, generator), _inverse(theta)

    def coarse_loss() -> torch.Tensor:
        with torch.no_grad():
            source, query, target = views()
            mirrored = torch.linalg.det(target[:, :, :2]) < 0
            q, r = band_pass(query[:, 0]), band_pass(source[:, 0])
        logit, found = model.coarse(q, r)
        chosen = found[torch.arange(len(q)), mirrored.long()]
        error = F.mse_loss(thetas_of(mirrored, chosen), target)
        return F.binary_cross_entropy_with_logits(logit, mirrored.float()) + THETA_WEIGHT * error

    def fine_loss() -> torch.Tensor:
        with torch.no_grad():
            source, query, target = views()
            straight = torch.zeros(len(query), dtype=torch.bool)
            off = (torch.rand(len(query), 4, generator=generator) * 2 - 1) * residual
            left = thetas_of(straight, off)  # where the coarse stage might leave the query
            moved = warp(query, (_homogeneous(target) @ _homogeneous(left))[:, :2])
            q, r = band_pass(moved[:, 0]), band_pass(source[:, 0])
        _, found = model.fine(q, r)
        error = F.mse_loss(thetas_of(straight, found[:, 0]), _inverse(left))
        return THETA_WEIGHT * error

    coarse = fit(model.coarse, coarse_loss, params.steps, params.lr, "train aligner", progress)
    fine = fit(model.fine, fine_loss, params.steps, params.lr, "train fine aligner", progress)
    stats = {
        "train_seconds": round(coarse["train_seconds"] + fine["train_seconds"], 1),
        "final_loss": coarse["final_loss"],
        "fine_final_loss": fine["final_loss"],
    }
    log.info("aligner trained: 2 x %d steps in %.1f s", params.steps, stats["train_seconds"])
    return model, stats


def _homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) of affine maps (n, 2, 3), so they compose by matrix product."""
    last = torch.tensor([0.0, 0.0, 1.0]).expand(len(theta), 1, 3)
    return torch.cat([theta, last], 1)


def align(
    model: Aligner,
    queries01: np.ndarray,
    refs_banded: torch.Tensor,
    rows: torch.Tensor | None = None,
    block: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pair's query (queries01[rows[i]]; without `rows`, queries01[i]) aligned on its
    training film, band-passed (n, FIELD, FIELD: RegistrationIndex.whole), by both stages: (n,)
    mirror flags and (n, 4) parameters (thetas_of, transforms_of); a block of pairs per thread.
    A query of several pairs in a block (score_aligned gives each ALIGNED_DEPTH) is band-passed
    once for the coarse stage. The query is moved by kernels.warp_affine (affine_grid and
    grid_sample in one native loop)."""
    coarse, fine = for_inference(model.coarse), for_inference(model.fine)
    pairs = torch.arange(len(queries01)) if rows is None else torch.as_tensor(rows)

    def one(start: int) -> tuple[torch.Tensor, torch.Tensor]:
        which, at = torch.unique(pairs[start : start + block], return_inverse=True)
        images = torch.as_tensor(np.asarray(queries01[which.numpy()], dtype=np.float32))
        x, refs = images[at], refs_banded[start : start + block]
        with torch.no_grad():
            logit, found = coarse(band_pass(images)[at], refs)
            mirrored = logit > 0
            first = found[torch.arange(len(x)), mirrored.long()]
            moved = warp_affine(x, thetas_of(mirrored, first)[:, None], max(x.shape[-2:]))[:, 0]
            _, then = fine(band_pass(moved), refs)
        return mirrored, compose(mirrored, first, then[:, 0])

    out = map_blocks(one, range(0, len(pairs), block), False, "align")
    if not out:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, 4)
    return torch.cat([m for m, _ in out]), torch.cat([p for _, p in out])


def save_aligner(model: Aligner, directory, meta: dict) -> None:
    """safetensors weights + JSON record (weights.py)."""
    save_weights(model, directory, (WEIGHTS, CONFIG), meta)


def load_aligner(directory, key: str) -> tuple[Aligner, dict] | None:
    """The cached aligner in `directory` if it was trained for `key`, else None."""
    return load_weights(
        directory, (WEIGHTS, CONFIG), key, lambda meta: Aligner(meta["params"]["width"])
    )
