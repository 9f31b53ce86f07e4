"""Tiny training settings and a tiny trained model for the generation tests (seconds on a CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from generation.config import Profile, merge_profile
from tests.conftest import make_tiny_dataset

TINY = {
    "autoencoder": {
        "channels": [8, 16],
        "latent_channels": 2,
        "norm_num_groups": 8,
        "batch_size": 4,
        "steps": 6,
        "checkpoint_every": 2,
        "ssim_kernel": 3,
        "mixed_precision": "no",
    },
    "diffusion": {
        "channels": [16, 16],
        "attention_levels": [False, True],
        "norm_num_groups": 8,
        "num_head_channels": 8,
        "batch_size": 4,
        "steps": 6,
        "checkpoint_every": 100,
        "grid_columns": 2,
        "mixed_precision": "no",
    },
    "generate": {"steps": 3, "batch_size": 8, "bf16": False},
}


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny tensors run fastest on one thread, and several times faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_settings(**overrides) -> Profile:
    profile = {section: dict(values) for section, values in TINY.items()}
    for key, value in overrides.items():
        section, name = key.split("__")
        profile[section][name] = value
    return replace(merge_profile(profile), profile="tiny")


def train_tiny_model(root: Path, with_masks: bool = False) -> tuple[Path, Path, Path]:
    """(dataset, autoencoder run, model run) under root."""
    from generation.train_autoencoder import train_autoencoder
    from generation.train_diffusion import train_diffusion

    data = make_tiny_dataset(root / "data", size=16, per_class=4, with_masks=with_masks)
    settings = tiny_settings()
    train_autoencoder(data, root / "ae", settings, show_progress=False)
    train_diffusion(data, root / "ae", root / "model", settings, show_progress=False)
    return data, root / "ae", root / "model"


def touch_memory(mib: int) -> int:
    """Holds `mib` MiB of written (resident) memory for a moment: the speed bench's memory test."""
    block = b"\x01" * (mib * 2**20)
    return len(block) // 2**20


def crash_in_training_step(monkeypatch, step: int) -> None:
    """Make the diffusion trainer raise RuntimeError("simulated crash") in its step `step`
    (counted from 0), after the checkpoints of the earlier steps; `monkeypatch.undo()` heals it."""
    import generation.unet_trainer as trainer

    original, calls = trainer.snr_weights, {"n": 0}

    def crash(*args):
        calls["n"] += 1
        if calls["n"] == step + 1:
            raise RuntimeError("simulated crash")
        return original(*args)

    monkeypatch.setattr(trainer, "snr_weights", crash)
