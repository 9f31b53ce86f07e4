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


def prepare_run_dir(out: str | Path, resume: bool, kind: str) -> tuple[Path, bool]:
    """The run directory and whether to resume from its checkpoint. A run killed before its
    first checkpoint (its config.json of this kind, no checkpoint, no model card) starts again
    from step 0, with or without --resume, and says so; anything else non-empty is refused."""
    run = Path(out)
    config = run / "config.json"
    found = None
    if config.is_file():
        try:
            found = json.loads(config.read_text(encoding="utf-8")).get("kind")
        except (OSError, ValueError, AttributeError):
            raise ValueError(f"{config}: unreadable run config; choose another --out") from None
        if found != kind:
            raise ValueError(f"{config}: run is a {found!r} run, not {kind!r}")
    checkpoint = (run / CHECKPOINTS / LATEST).is_file()
    empty = not run.exists() or not any(run.iterdir())
    started = found == kind or (run.is_dir() and {p.name for p in run.iterdir()} == {"train.log"})
    interrupted = started and not checkpoint and not (run / "model_card.json").is_file()
    if resume and checkpoint:
        run.mkdir(parents=True, exist_ok=True)
        return run, True
    if interrupted:
        log.warning("%s: interrupted before its first checkpoint: starting again from step 0", run)
    elif resume and empty:
        log.warning("%s: no checkpoint to resume from: starting from step 0", run)
    elif resume:
        raise FileNotFoundError(f"{run}: nothing to resume (no {CHECKPOINTS}/{LATEST})")
    elif not empty:
        raise ValueError(
            f"{run}: already exists and is not empty; pass --resume to continue it or choose --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    return run, False


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
