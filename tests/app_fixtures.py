"""A tiny data root for the app tests: a dataset, a model trained for one step with generation's
own training functions (so its run directory is the real format), a synthetic set written by
generation's set writer, and a release whose real privacy audit flags two copied training
images (its report.html galleries show them: what the clinician view must never show)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, make_tiny_dataset

MODEL = "runs/tiny-model"
DATASET = "data/tiny"
SYNTHETIC = "runs/tiny-samples"
RELEASE = "releases/tiny-release"
AUDIT_DATASET = "data/audit-patients"
AUDIT_SET = "runs/audit-set"


def train_tiny_model(dataset: Path, runs: Path) -> Path:
    """Autoencoder and UNet of the smoke profile, one step each, one-step sampling defaults."""
    import torch

    from generation.config import load_profile
    from generation.train_autoencoder import train_autoencoder
    from generation.train_diffusion import train_diffusion

    torch.set_num_threads(2)
    settings = load_profile(REPO / "params.yaml", "smoke").updated(
        autoencoder={"steps": 1, "checkpoint_every": 1, "mixed_precision": "no"},
        diffusion={"steps": 1, "checkpoint_every": 1, "mixed_precision": "no"},
        generate={"steps": 1, "bf16": False},
    )
    train_autoencoder(dataset, runs / "tiny-ae", settings, show_progress=False)
    train_diffusion(dataset, runs / "tiny-ae", runs / "tiny-model", settings, show_progress=False)
    return runs / "tiny-model"


def write_audited_release(root: Path) -> tuple[Path, Path]:
    """A real privacy audit (privacy_audit.run_audit) of a set holding 4 held-out images and 2
    copies of training images, released as releases/NAME; its report.html galleries show the
    copied training images. Returns (release dir, audited dataset dir)."""
    import torch

    from conditioning.dataset import load_dataset
    from privacy_audit.aligner import AlignerParams
    from privacy_audit.audit import AuditConfig, run_audit
    from privacy_audit.encoder import EncoderParams
    from privacy_audit.verifier import VerifierParams
    from tests.audit_data import make_patient_dataset, save_png

    data = make_patient_dataset(root / AUDIT_DATASET, train=100, val=100, test=10)
    dataset = load_dataset(data)
    picks = dataset.split("test")[:4] + dataset.split("train")[:2]
    audited = root / AUDIT_SET
    (audited / "images").mkdir(parents=True)
    with (audited / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", "pathology"])
        for i, record in enumerate(picks):
            save_png(audited / "images" / f"syn{i:06d}.png", dataset.load_image(record))
            writer.writerow([f"syn{i:06d}", f"images/syn{i:06d}.png", "normal"])
    release = root / RELEASE
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_audit(
            audited,
            data,
            release / "audit",
            AuditConfig(
                quantile=0.98,
                encoder=EncoderParams(steps=20),
                verifier=VerifierParams(steps=40),
                aligner=AlignerParams(steps=40),
                encoder_cache=str(root / ".audit-cache"),
                n_boot=50,
                progress=False,
            ),
        )
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(audited / "images", release / "images")
    shutil.copyfile(audited / "manifest.csv", release / "manifest.csv")
    (release / "datasheet.md").write_text("# tiny-release\n\nSynthetic test release.\n")
    (release / "evaluation").mkdir()  # as `radsynth release --evaluation` copies it
    detect = {"auroc": 0.712, "interval": [0.65, 0.77], "per_class": {"viral": {"auroc": 0.8}}}
    (release / "evaluation" / "metrics.json").write_text(json.dumps({"detectability": detect}))
    (release / "lineage.json").write_text(json.dumps({"set": AUDIT_SET, "dataset": AUDIT_DATASET}))
    return release, data


def build_data_root(root: Path) -> Path:
    from generation.generate_set import SetRequest, generate_set
    from generation.pipeline import load_model

    dataset_dir = make_tiny_dataset(root / DATASET, size=16)
    run = train_tiny_model(dataset_dir, root / "runs")
    model = load_model(run)
    synthetic = root / SYNTHETIC
    generate_set(model, synthetic, SetRequest(6, {}, 0, "grid"), show_progress=False)
    write_audited_release(root)
    return root


_built: dict[str, Path] = {}


@pytest.fixture(scope="session")
def app_root(tmp_path_factory) -> Path:
    """Built once per test session (training the tiny model takes most of the time), also when
    several test modules import this fixture."""
    if "root" not in _built:
        _built["root"] = build_data_root(tmp_path_factory.mktemp("app-root"))
    return _built["root"]
