"""A known-answer test of copy detection: a set mixing real held-out images with training
images copied and then altered the way a memorising model alters them: small rotations,
scalings and shifts, crops, contrast, gamma, blur, noise, recompression, and partial copies (the
training image blended into, or a large region of it pasted into, an image of a patient never
trained on). The alterations here are implemented independently of the encoder's training
augmentations and of the registration's warps (PIL JPEG, SciPy rotate/zoom/blur, integer
shifts) so the test does not grade the detector on its own homework."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from conditioning.dataset import atomic_open

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


def alter(
    image01: np.ndarray,
    kinds: tuple[str, ...],
    rng: np.random.Generator,
    other: np.ndarray | None = None,
) -> np.ndarray:
    """Apply the named alterations, in a fixed order, at random strengths a reviewer would still
    call the same image. `other` (an image of a patient never trained on) is what a partial
    copy ("blend", "patch") is mixed into."""
    from PIL import Image
    from scipy import ndimage

    x = image01.astype(np.float32)
    h, w = x.shape
    spread = float(x.std()) or 1.0  # noise and brightness are set relative to the contrast
    if any(k in kinds for k in PARTIAL) and other is None:
        raise ValueError(f"{kinds}: a partial copy needs `other`, an image to mix into")
    if "mirror" in kinds:
        x = x[:, ::-1]
    if "rotate" in kinds:
        angle = rng.uniform(2.0, 6.0) * rng.choice([-1, 1])
        x = ndimage.rotate(x, angle, reshape=False, order=1, mode="nearest")
    if "scale" in kinds:
        factor = 1 + rng.uniform(0.02, 0.06) * rng.choice([-1, 1])
        centre = (np.array(x.shape) - 1) / 2
        x = ndimage.affine_transform(
            x, np.eye(2) / factor, offset=centre - centre / factor, order=1, mode="nearest"
        )
    if "crop_resize" in kinds:
        frac = rng.uniform(0.82, 0.95)
        ch, cw = round(h * frac), round(w * frac)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(x[top : top + ch, left : left + cw])
        x = np.asarray(crop.resize((w, h), Image.BILINEAR), dtype=np.float32)
    if "shift" in kinds:
        s = max(1, round(4 * w / 64))
        dy, dx = rng.integers(-s, s + 1, size=2)
        if dy == 0 and dx == 0:
            dx = s
        x = np.roll(x, (int(dy), int(dx)), axis=(0, 1))
        if dy > 0:
            x[:dy] = x[dy : dy + 1]
        elif dy < 0:
            x[dy:] = x[dy - 1 : dy]
        if dx > 0:
            x[:, :dx] = x[:, dx : dx + 1]
        elif dx < 0:
            x[:, dx:] = x[:, dx - 1 : dx]
    if "contrast" in kinds:
        gamma = np.exp(rng.uniform(-1, 1) * np.log(1.4))
        x = np.clip(x, 0, 1) ** gamma
        m = x.mean()
        x = (x - m) * rng.uniform(0.75, 1.25) + m + rng.uniform(-0.25, 0.25) * spread
    if "gamma" in kinds:
        x = np.clip(x, 0, 1) ** np.exp(rng.uniform(0.15, 0.4) * rng.choice([-1, 1]))
    if "blend" in kinds:
        share = rng.uniform(0.6, 0.75)  # the training image's share of the mixture
        x = share * x + (1 - share) * np.asarray(other, dtype=np.float32)
    if "patch" in kinds:
        ph, pw = (np.array([h, w]) * rng.uniform(0.7, 0.85, size=2)).round().astype(int)
        top, left = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        pasted = np.asarray(other, dtype=np.float32).copy()
        pasted[top : top + ph, left : left + pw] = x[top : top + ph, left : left + pw]
        x = pasted
    if "blur" in kinds:
        x = ndimage.gaussian_filter(x, rng.uniform(0.4, 0.9) * w / 64, mode="nearest")
    if "noise" in kinds:
        x = x + rng.normal(0, rng.uniform(0.05, 0.18) * spread, x.shape)
    x = np.clip(x, 0, 1)
    if "jpeg" in kinds:
        import io

        buffer = io.BytesIO()
        Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(
            buffer, format="JPEG", quality=int(rng.integers(40, 86))
        )
        buffer.seek(0)
        with Image.open(buffer) as im:
            x = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return np.clip(x, 0, 1).astype(np.float32)


def random_kinds(rng: np.random.Generator, index: int) -> tuple[str, ...]:
    """Each alteration alone once in a while, otherwise a random combination of two or three."""
    if index < len(ALTERATIONS):
        return (ALTERATIONS[index],)
    n = int(rng.integers(2, 4))
    kinds = list(rng.choice(ALTERATIONS, size=n, replace=False))
    partial = [k for k in kinds if k in PARTIAL]
    kinds = [k for k in kinds if k not in PARTIAL] + partial[:1]
    return tuple(sorted(kinds))


def planted_copies(
    load, n_train: int, donors: list[np.ndarray], count: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[tuple[str, ...]], list[int]]:
    """`count` altered copies of distinct training images (`load(i)` reads training image i),
    their alterations and source indices;
    every alteration alone once, then random combinations. Partial copies are mixed into a
    random donor (an image of a patient never trained on)."""
    picks = rng.choice(n_train, min(count, n_train), replace=False)
    copies, kinds = [], []
    for j, i in enumerate(picks):
        kinds.append(random_kinds(rng, j))
        donor = donors[int(rng.integers(len(donors)))]
        copies.append(alter(load(int(i)), kinds[-1], rng, donor))
    return copies, kinds, [int(i) for i in picks]


def write_challenge_set(
    out: str | Path,
    copies: list[np.ndarray],
    fresh: list[np.ndarray],
    seed: int = 0,
) -> dict[str, tuple[str, int]]:
    """Write a generated-style set (images/*.png + manifest.csv) mixing altered copies and fresh
    images in a shuffled order; returns the truth, file -> ('copy' | 'fresh', index in its list).
    The truth is returned, not written: the set must look like any other synthetic set."""
    from PIL import Image

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = [("copy", i, im) for i, im in enumerate(copies)]
    items += [("fresh", i, im) for i, im in enumerate(fresh)]
    order = rng.permutation(len(items))
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
