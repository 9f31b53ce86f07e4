"""What every training run shares: its directory rules, log file, accelerator and step seeds."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.logfile import attach_log_file

from .checkpoints import CHECKPOINTS, LATEST

log = logging.getLogger("radsynth.train")


def prepare_run_dir(out: str | Path, resume: bool, kind: str) -> Path:
    """A fresh run directory, or (with resume) one holding a checkpoint of the same kind."""
    run = Path(out)
    config = run / "config.json"
    if resume:
        if not (run / CHECKPOINTS / LATEST).is_file():
            raise FileNotFoundError(f"{run}: nothing to resume (no {CHECKPOINTS}/{LATEST})")
        if config.is_file():
            found = json.loads(config.read_text(encoding="utf-8")).get("kind")
            if found != kind:
                raise ValueError(f"{config}: run is a {found!r} run, not {kind!r}")
    elif run.exists() and any(run.iterdir()):
        raise ValueError(
            f"{run}: already exists and is not empty; pass --resume to continue it or choose --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    return run


def attach_log(run: Path) -> logging.Handler:
    return attach_log_file(run / "train.log", "radsynth")


def make_accelerator(mixed_precision: str):
    from accelerate import Accelerator

    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {mixed_precision!r}")
    from .precision import effective_mixed_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Accelerator(
        mixed_precision=effective_mixed_precision(mixed_precision, device),
        cpu=device == "cpu",
    )


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random stream of one training step: resuming needs no saved RNG state."""
    value = int(np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(value)


def check_resume(state: dict[str, Any], expected: dict[str, Any], run: Path) -> None:
    """A checkpoint must come from the same data and settings it is resumed with."""
    for key, value in expected.items():
        if state.get(key) != value:
            raise ValueError(
                f"{run}: checkpoint was written with a different {key} "
                f"({state.get(key)!r} vs {value!r}); start a new --out instead of --resume"
            )
