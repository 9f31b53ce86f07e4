"""A known-answer test of copy detection: a set mixing real held-out images with training
images copied and then altered the way a memorising model alters them: small rotations,
scalings and shifts, crops, contrast, gamma, blur, noise, recompression, and partial copies (the
training image blended into, or a large region of it pasted into, an image of a patient never
trained on). The alterations here are implemented independently of the encoder's training
augmentations and of the registration's warps (PIL JPEG, SciPy rotate/zoom/blur, integer
shifts) so the test does not grade the detector on its own homework."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conditioning.dataset import atomic_open

from .stats import wilson_interval

ALTERATIONS = (
    "mirror",
    "shift",
    "crop_resize",
    "noise",
    "contrast",
    "jpeg",
    "blur",
    "rotate",
    "scale",
    "gamma",
    "blend",
    "patch",
)
PARTIAL = ("blend", "patch")  # need an image of another patient; at most one per copy
PHOTOMETRIC = ("contrast", "gamma", "blur", "noise", "jpeg")  # what a fresh image may undergo
# in the control (fresh_altered): an altered image that is no copy must not be flagged either


def altered(
    image01: np.ndarray,
    kinds: tuple[str, ...],
    rng: np.random.Generator,
    other: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Apply the named alterations, in a fixed order, at random strengths a reviewer would still
    call the same image; return the image and what was drawn (`PARAMETERS` names the keys), so
    a miss can be traced to the strength that caused it. `other` (an image of a patient never
    trained on) is what a partial copy ("blend", "patch") is mixed into."""
    if any(k in kinds for k in PARTIAL) and other is None:
        raise ValueError(f"{kinds}: a partial copy needs `other`, an image to mix into")
    x = image01.astype(np.float32)
    spread = float(x.std()) or 1.0  # noise and brightness are set relative to the contrast
    drawn: dict[str, float] = {}
    x = _geometric(x, kinds, rng, drawn)
    x = _photometric(x, kinds, rng, drawn, spread)
    x = _partial(x, kinds, rng, drawn, other)
    x = _degrade(x, kinds, rng, drawn, spread)
    return np.clip(x, 0, 1).astype(np.float32), drawn


PARAMETERS = {  # what `altered` records, per alteration
    "rotate": ("rotate_deg",),
    "scale": ("scale",),
    "crop_resize": ("crop_frac", "crop_top", "crop_left"),
    "shift": ("shift_dy", "shift_dx"),
    "contrast": ("contrast_gamma", "contrast_gain", "contrast_offset"),
    "gamma": ("gamma",),
    "blend": ("blend_share",),
    "patch": ("patch_area", "patch_h", "patch_w", "patch_top", "patch_left"),
    "blur": ("blur_sigma",),
    "noise": ("noise_sd",),
    "jpeg": ("jpeg_quality",),
}


def _geometric(x, kinds, rng, drawn: dict) -> np.ndarray:
    """Mirror, rotation, scaling, crop+resize, shift (in that order)."""
    from PIL import Image
    from scipy import ndimage

    h, w = x.shape
    if "mirror" in kinds:
        x = x[:, ::-1]
    if "rotate" in kinds:
        drawn["rotate_deg"] = angle = rng.uniform(2.0, 6.0) * rng.choice([-1, 1])
        x = ndimage.rotate(x, angle, reshape=False, order=1, mode="nearest")
    if "scale" in kinds:
        drawn["scale"] = factor = 1 + rng.uniform(0.02, 0.06) * rng.choice([-1, 1])
        centre = (np.array(x.shape) - 1) / 2
        x = ndimage.affine_transform(
            x, np.eye(2) / factor, offset=centre - centre / factor, order=1, mode="nearest"
        )
    if "crop_resize" in kinds:
        drawn["crop_frac"] = frac = rng.uniform(0.82, 0.95)
        ch, cw = round(h * frac), round(w * frac)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        drawn["crop_top"], drawn["crop_left"] = int(top), int(left)
        crop = Image.fromarray(x[top : top + ch, left : left + cw])
        x = np.asarray(crop.resize((w, h), Image.BILINEAR), dtype=np.float32)
    if "shift" in kinds:
        x = _shift(x, rng, drawn)
    return x


def _shift(x, rng, drawn: dict) -> np.ndarray:
    """A whole-pixel shift of up to 4 px of a 64x64 image, the border repeated."""
    w = x.shape[1]
    s = max(1, round(4 * w / 64))
    dy, dx = rng.integers(-s, s + 1, size=2)
    if dy == 0 and dx == 0:
        dx = s
    drawn["shift_dy"], drawn["shift_dx"] = int(dy), int(dx)
    x = np.roll(x, (int(dy), int(dx)), axis=(0, 1))
    if dy > 0:
        x[:dy] = x[dy : dy + 1]
    elif dy < 0:
        x[dy:] = x[dy - 1 : dy]
    if dx > 0:
        x[:, :dx] = x[:, dx : dx + 1]
    elif dx < 0:
        x[:, dx:] = x[:, dx - 1 : dx]
    return x


def _photometric(x, kinds, rng, drawn: dict, spread: float) -> np.ndarray:
    """Contrast (with a gamma and a brightness offset), then gamma alone."""
    if "contrast" in kinds:
        drawn["contrast_gamma"] = gamma = np.exp(rng.uniform(-1, 1) * np.log(1.4))
        x = np.clip(x, 0, 1) ** gamma
        m = x.mean()
        drawn["contrast_gain"] = gain = rng.uniform(0.75, 1.25)
        drawn["contrast_offset"] = offset = rng.uniform(-0.25, 0.25)
        x = (x - m) * gain + m + offset * spread
    if "gamma" in kinds:
        drawn["gamma"] = gamma = np.exp(rng.uniform(0.15, 0.4) * rng.choice([-1, 1]))
        x = np.clip(x, 0, 1) ** gamma
    return x


def _partial(x, kinds, rng, drawn: dict, other) -> np.ndarray:
    """The copy blended into `other`, or a region of it pasted into `other`."""
    h, w = x.shape
    if "blend" in kinds:
        drawn["blend_share"] = share = rng.uniform(0.6, 0.75)  # the training image's share
        x = share * x + (1 - share) * np.asarray(other, dtype=np.float32)
    if "patch" in kinds:
        ph, pw = (np.array([h, w]) * rng.uniform(0.7, 0.85, size=2)).round().astype(int)
        top, left = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        drawn["patch_area"] = float(ph * pw) / (h * w)
        drawn["patch_h"], drawn["patch_w"] = int(ph), int(pw)
        drawn["patch_top"], drawn["patch_left"] = int(top), int(left)
        pasted = np.asarray(other, dtype=np.float32).copy()
        pasted[top : top + ph, left : left + pw] = x[top : top + ph, left : left + pw]
        x = pasted
    return x


def _degrade(x, kinds, rng, drawn: dict, spread: float) -> np.ndarray:
    """Blur, noise (relative to the original's contrast), then JPEG recompression."""
    import io

    from PIL import Image
    from scipy import ndimage

    w = x.shape[1]
    if "blur" in kinds:
        drawn["blur_sigma"] = sigma = rng.uniform(0.4, 0.9) * w / 64
        x = ndimage.gaussian_filter(x, sigma, mode="nearest")
    if "noise" in kinds:
        drawn["noise_sd"] = sd = rng.uniform(0.05, 0.18)  # of the original's spread
        x = x + rng.normal(0, sd * spread, x.shape)
    x = np.clip(x, 0, 1)
    if "jpeg" in kinds:
        buffer = io.BytesIO()
        drawn["jpeg_quality"] = quality = int(rng.integers(40, 86))
        Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(
            buffer, format="JPEG", quality=quality
        )
        buffer.seek(0)
        with Image.open(buffer) as im:
            x = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return x


def random_kinds(rng: np.random.Generator, index: int) -> tuple[str, ...]:
    """Each alteration alone once in a while, otherwise a random combination of two or three."""
    if index < len(ALTERATIONS):
        return (ALTERATIONS[index],)
    n = int(rng.integers(2, 4))
    kinds = list(rng.choice(ALTERATIONS, size=n, replace=False))
    partial = [k for k in kinds if k in PARTIAL]
    kinds = [k for k in kinds if k not in PARTIAL] + partial[:1]
    return tuple(sorted(kinds))


def altered_fresh(
    images: list[np.ndarray], rng: np.random.Generator
) -> tuple[list[np.ndarray], list[tuple[str, ...]]]:
    """Every fresh image (a patient never trained on) under one or two PHOTOMETRIC alterations
    at the strengths `altered` draws for copies, and the kinds drawn: the control that keeps a
    detector from being graded on "altered means copy" (every planted copy is altered)."""
    out, kinds = [], []
    for image in images:
        n = int(rng.integers(1, 3))
        chosen = tuple(sorted(str(k) for k in rng.choice(PHOTOMETRIC, size=n, replace=False)))
        out.append(altered(image, chosen, rng)[0])
        kinds.append(chosen)
    return out, kinds


@dataclass(frozen=True)
class Planted:
    """Altered copies of training images: per copy its alterations, the index of its source in
    the training split and what each alteration drew (`altered`)."""

    copies: list[np.ndarray]
    kinds: list[tuple[str, ...]]
    sources: list[int]
    drawn: list[dict[str, float]]


def planted_copies(
    load, n_train: int, donors: list[np.ndarray], count: int, rng: np.random.Generator
) -> Planted:
    """`count` altered copies of distinct training images (`load(i)` reads training image i):
    every alteration alone once, then random combinations. Partial copies are mixed into a
    random donor (an image of a patient never trained on)."""
    picks = rng.choice(n_train, min(count, n_train), replace=False)
    copies, kinds, drawn = [], [], []
    for j, i in enumerate(picks):
        kinds.append(random_kinds(rng, j))
        donor = donors[int(rng.integers(len(donors)))]
        image, params = altered(load(int(i)), kinds[-1], rng, donor)
        copies.append(image)
        drawn.append({k: float(v) for k, v in params.items()})
    return Planted(copies, kinds, [int(i) for i in picks], drawn)


def write_challenge_set(
    out: str | Path,
    copies: list[np.ndarray],
    fresh: list[np.ndarray],
    seed: int = 0,
    fresh_altered: list[np.ndarray] = (),
) -> dict[str, tuple[str, int]]:
    """Write a generated-style set (images/*.png + manifest.csv) mixing altered copies, fresh
    images and fresh images altered (altered_fresh) in a shuffled order; returns the truth,
    file -> ('copy' | 'fresh' | 'fresh_altered', index in its list). The truth is returned,
    not written: the set must look like any other synthetic set. The copies and fresh images
    are placed as without `fresh_altered` (which follow them in the order drawn)."""
    from PIL import Image

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = [("copy", i, im) for i, im in enumerate(copies)]
    items += [("fresh", i, im) for i, im in enumerate(fresh)]
    order = rng.permutation(len(items))
    items += [("fresh_altered", i, im) for i, im in enumerate(fresh_altered)]
    order = np.concatenate([order, len(order) + rng.permutation(len(fresh_altered))])
    truth: dict[str, tuple[str, int]] = {}
    with atomic_open(out / "manifest.csv", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "seed"])
        for n, i in enumerate(order):
            kind, number, image = items[i]
            rel = f"images/syn{n:06d}.png"
            Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(
                out / rel
            )
            writer.writerow([rel, n])
            truth[rel] = (kind, number)
    return truth


STRENGTH_BINS = {  # what the flag rate is reported against: bin edges over each drawn range
    "blend_share": (0.60, 0.65, 0.70, 0.75),
    "patch_area": (0.49, 0.55, 0.61, 0.67, 0.73),
    "crop_frac": (0.82, 0.85, 0.88, 0.91, 0.95),
    "rotate_deg": (2.0, 3.0, 4.0, 5.0, 6.0),  # |angle|
    "scale": (0.02, 0.03, 0.04, 0.05, 0.06),  # |factor - 1|
}


def strength(drawn: dict[str, float], key: str) -> float | None:
    """How strong `altered`'s draw `key` was, on STRENGTH_BINS' axis (None: not drawn)."""
    if key not in drawn:
        return None
    value = drawn[key]
    return abs(value - 1) if key == "scale" else abs(value)


COPY_GROUPS = ("whole", "partial", "partial_moved", "partial_cropped")  # flagged_by_group's
MOVED = ("rotate", "scale", "shift")  # moved without being cropped: "partial_moved"


def copy_group(kinds: tuple[str, ...]) -> str:
    """Which COPY_GROUPS a copy with these alterations is in: the whole image (however altered),
    or a partial copy (blended or pasted) not moved, moved (rotated, scaled or shifted) or also
    cropped and resized. On the bench's sets the misses are partial copies, most of them cropped
    (docs/privacy-audit.md): the groups say where an auditor can rely on the audit."""
    if not any(k in PARTIAL for k in kinds):
        return "whole"
    if "crop_resize" in kinds:
        return "partial_cropped"
    return "partial_moved" if any(k in MOVED for k in kinds) else "partial"


def flagged_by_group(flagged: list[bool], kinds: list[tuple[str, ...]]) -> dict:
    """Per COPY_GROUPS group: its copies, how many were flagged, and the Wilson 95% interval of
    that share."""
    groups = [copy_group(k) for k in kinds]
    out = {}
    for group in COPY_GROUPS:
        hits = [f for f, g in zip(flagged, groups, strict=True) if g == group]
        n, m = len(hits), int(sum(hits))
        out[group] = {"copies": n, "flagged": m, "ci95": wilson_interval(m, n)}
    return out


def flagged_by_strength(flagged: list[bool], drawn: list[dict[str, float]]) -> dict:
    """Per STRENGTH_BINS key and bin: how many copies drew a strength in it and how many of
    them were flagged; which strengths the detector catches is what an auditor can rely on."""
    out: dict[str, list[dict]] = {}
    for key, edges in STRENGTH_BINS.items():
        values = [(strength(d, key), f) for d, f in zip(drawn, flagged, strict=True)]
        values = [(v, f) for v, f in values if v is not None]
        rows = []
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            last = j == len(edges) - 2
            hits = [f for v, f in values if lo <= v < hi or (last and v == hi)]
            rows.append({"from": lo, "to": hi, "copies": len(hits), "flagged": int(sum(hits))})
        out[key] = rows
    return out


def write_planted(
    path: str | Path,
    truth: dict[str, tuple[str, int]],
    planted: Planted,
    source_ids,
    samples,
    fresh_kinds: list[tuple[str, ...]] = (),
) -> None:
    """The truth of a challenge set, outside the set: per image whether it is a copy, its
    source's id, its alterations and what they drew (a fresh image altered: its alterations,
    `fresh_kinds`), and the audit's score and flag (`samples`: file -> (score, flagged)); one
    CSV row per image."""
    keys = sorted({k for d in planted.drawn for k in d})
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "truth", "source", "alterations", "score", "flagged", *keys])
        for file, (kind, i) in sorted(truth.items()):
            score, flag = samples[file]
            if kind != "copy":
                kinds = "+".join(fresh_kinds[i]) if kind == "fresh_altered" else ""
                row = [file, kind, "", kinds, f"{score:.4f}", int(flag)]
                writer.writerow(row + [""] * len(keys))
                continue
            drawn = planted.drawn[i]
            row = [file, kind, source_ids[i], "+".join(planted.kinds[i]), f"{score:.4f}"]
            writer.writerow(row + [int(flag)] + [_cell(drawn.get(k)) for k in keys])


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
