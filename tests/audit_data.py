"""Tiny data for the privacy-audit tests: 'patients' whose images differ in structure, with
repeat visits and an exact duplicate, and helpers that build synthetic sets from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conditioning.dataset import Attribute, ConditionSchema, DatasetSpec, DatasetWriter, quantize

SIZE = 32


def _patient_image(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((size, size), 0.3)
    for _ in range(5):
        cx, cy, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.2)
        image += rng.uniform(-0.25, 0.35) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
    image += 0.12 * ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.0)
    return np.clip(image, 0, 1)


def make_patient_dataset(
    out: Path, *, size: int = SIZE, train: int = 160, val: int = 200, test: int = 80, seed: int = 0
) -> Path:
    """train/val/test patients; every 10th train patient has a second, near-identical visit and
    one train image is stored twice (an exact duplicate)."""
    rng = np.random.default_rng(seed)
    schema = ConditionSchema((Attribute("pathology", "categorical", values=("normal", "viral")),))
    with DatasetWriter(
        out, DatasetSpec("audit-tiny", "DX", "2D", [size, size], 8, schema)
    ) as writer:
        n = 0
        for split, count in (("train", train), ("val", val), ("test", test)):
            for _ in range(count):
                image = _patient_image(rng, size)
                pid = f"pat{n:05d}"
                label = ("normal", "viral")[n % 2]
                writer.add(
                    quantize(image, 8), split=split, patient_id=pid, conditions={"pathology": label}
                )
                if split == "train" and n % 10 == 0:  # a second visit of the same patient
                    visit = np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1)
                    writer.add(
                        quantize(visit, 8),
                        split=split,
                        patient_id=pid,
                        conditions={"pathology": label},
                    )
                if split == "train" and n == 3:  # an exact duplicate file
                    writer.add(
                        quantize(image, 8),
                        split=split,
                        patient_id=pid,
                        conditions={"pathology": label},
                    )
                n += 1
        writer.commit(intensity={"method": "synthetic"}, ingest_report={"files_read": n})
    return out


def unflagged(report, images: list, limit: int) -> list:
    """The `images` (written as images/synNNNNNN.png, in order) an audit `report` of them did
    not flag, after asserting that at most `limit` were: a clean set for tests that need one
    is filtered by the audit, as a user filters a set (`--filtered-out`), and the false flags
    are still held to about the calibration's rate."""
    flagged = {s.file for s in report.samples if s.flagged}
    assert len(flagged) <= limit, f"{len(flagged)} of {len(images)} new images flagged"
    return [im for i, im in enumerate(images) if f"images/syn{i:06d}.png" not in flagged]


def save_png(path: Path, image01: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8), mode="L").save(path)


REPORT_V1 = Path(__file__).parent / "fixtures" / "audit" / "report-v1.json"  # see its README


def report_v1() -> dict:
    """The version-1 report.json written by the audit before issue 17, as a fresh dict."""
    return json.loads(REPORT_V1.read_text(encoding="utf-8"))


ENCODER_STEPS = 40  # enough for the tiny data; the real default is larger
VERIFIER_STEPS = 60  # the pair verifier's, likewise
ALIGNER_STEPS = 60  # the aligner's, likewise


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory) -> Path:
    """One copy-encoder cache for every audit test: the tiny datasets they build are the same
    pixels, so the encoder is trained once per session."""
    return tmp_path_factory.mktemp("audit-encoder-cache")
