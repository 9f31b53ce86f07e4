"""Shared fixtures: tiny datasets written by the tests, and the optional real data."""

from __future__ import annotations

import os

# Tiny test models run fastest on one thread, and several threads thrash on a busy machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path

import numpy as np
import pytest

from conditioning.dataset import Attribute, ConditionSchema, DatasetSpec, DatasetWriter, quantize

REPO = Path(__file__).resolve().parent.parent


def write_params(tmp_path: Path, profile: dict) -> Path:
    """A params.yaml whose one profile, `p` (the active one), has the given sections."""
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "p", "profiles": {"p": profile}}))
    return path


def shared_data_dir() -> Path | None:
    """`RADSYNTH_SHARED_DATA`, else `../shared/data` beside the repository, if present."""
    candidate = Path(os.environ.get("RADSYNTH_SHARED_DATA", REPO.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real data not found: set RADSYNTH_SHARED_DATA or place ../shared/data beside the repo"
        )
    return path


def make_tiny_dataset(
    out: Path,
    *,
    size: int = 16,
    per_class: int = 6,
    classes: tuple[str, ...] = ("normal", "bacterial", "viral"),
    seed: int = 0,
    with_age: bool = True,
    with_masks: bool = False,
    spacing: tuple[float, float] | None = None,
) -> Path:
    """A small 2D dataset whose classes differ visibly (a bright disc whose place depends on
    the class), split by patient into train/val/test; every image records `spacing` (mm)."""
    rng = np.random.default_rng(seed)
    attributes = [Attribute("pathology", "categorical", values=classes)]
    if with_age:
        attributes.append(
            Attribute("age_months", "continuous", unit="months", minimum=0, maximum=216)
        )
    schema = ConditionSchema(tuple(attributes))
    yy, xx = np.mgrid[0:size, 0:size] / size
    spec = DatasetSpec("tiny", "DX", "2D", [size, size], 8, schema, has_masks=with_masks)
    with DatasetWriter(out, spec) as writer:
        n = 0
        for c, label in enumerate(classes):
            cx = (c + 1) / (len(classes) + 1)
            for _ in range(per_class):
                split = ("train", "train", "train", "train", "val", "test")[n % 6]
                disc = ((xx - cx) ** 2 + (yy - 0.5) ** 2) < 0.04
                image = 0.2 + 0.6 * disc + 0.05 * rng.standard_normal((size, size))
                conditions = {"pathology": label}
                if with_age:
                    conditions["age_months"] = float(rng.uniform(0, 216))
                writer.add(
                    quantize(image, 8),
                    split=split,
                    patient_id=f"p{n:04d}",
                    conditions=conditions,
                    mask=disc.astype(np.uint8) if with_masks else None,
                    spacing=spacing,
                )
                n += 1
        writer.commit(intensity={"method": "synthetic"}, ingest_report={"files_read": n})
    return out


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "tiny")


def debian_package_or_skip(package: str, paths: list[str], flag: str) -> None:
    """Programs from a Debian package: present, or installed with apt-get as root when `CI` or
    the environment variable `flag`=1 allows it; otherwise the test skips and says how."""
    import shutil
    import subprocess

    def present() -> bool:
        return all(shutil.which(p) or Path(p).exists() for p in paths)

    if present():
        return
    allowed = os.environ.get("CI") or os.environ.get(flag) == "1"
    if allowed and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
            try:
                subprocess.run(command, env=env, timeout=900, check=False, capture_output=True)
            except subprocess.TimeoutExpired:
                break
    if not present():
        pytest.skip(
            f"no {package} ({', '.join(paths)}): as root, set {flag}=1 or CI=1 to let this test "
            f"`apt-get install {package}`"
        )


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: tiny tensors run fastest on one, and two spinning
    threads on a shared 2-core machine are much slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
