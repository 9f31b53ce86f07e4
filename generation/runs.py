"""What every training run shares: its directory rules, log file, accelerator and step seeds."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conditioning.logfile import attach_log_file

from .checkpoints import CHECKPOINTS, LATEST
from .config import MIXED_PRECISIONS, TRAINING_CONFIG, RunSettings, _Section

log = logging.getLogger("radsynth.train")


def check_run_dir(out: str | Path, resume: bool, kind: str) -> tuple[Path, bool]:
    """The run directory and whether to resume from its checkpoint; reads only, so every process
    can check before any of them writes. A run killed before its first checkpoint (its
    config.json of this kind, no checkpoint, no model card) starts again from step 0, with or
    without --resume, and says so; anything else non-empty is refused."""
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
    return run, False


@contextmanager
def open_run(out: str | Path, resume: bool, kind: str, accelerator) -> Iterator[tuple[Path, bool]]:
    """The run directory and whether to resume, checked by every process and created by the
    main one; the log file and INFO messages belong to the main process alone (N copies of each
    line help no one)."""
    run, resume = check_run_dir(out, resume, kind)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        logger = logging.getLogger("radsynth")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            accelerator.wait_for_everyone()
            yield run, resume
        finally:
            logger.setLevel(level)
        return
    run.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    handler = attach_log(run)
    try:
        yield run, resume
    finally:
        logging.getLogger("radsynth").removeHandler(handler)
        handler.close()


def attach_log(run: Path) -> logging.Handler:
    return attach_log_file(run / "train.log", "radsynth")


def make_accelerator(mixed_precision: str, grad_accum: int = 1):
    """Data parallel under `accelerate launch` (gloo on CPUs); accumulation over `grad_accum`
    micro-steps is accelerate's, so gradients are all-reduced once per optimizer step."""
    from accelerate import Accelerator

    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(
            f"mixed_precision must be {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}"
        )
    from conditioning.precision import effective_mixed_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Accelerator(
        mixed_precision=effective_mixed_precision(mixed_precision, device),
        cpu=device == "cpu",
        gradient_accumulation_steps=grad_accum,
    )


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step: resuming needs no saved RNG state. Every process
    draws the whole global batch from it (generation/parallel.py); the trailing 0 keeps the
    streams of runs made when each process drew its own."""
    value = int(np.random.SeedSequence([seed, step, 0]).generate_state(2, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(value)


# Settings a resumed run may change: how long it trains, how often it checkpoints, and how its
# batches are drawn (a rare class can be lifted for a run's later steps, a curriculum).
EXTENDABLE = ("steps", "max_minutes", "checkpoint_every", "balance_by", "balance_power")
# Settings added after runs existed, hashed only where they differ from the value that behaves as
# those runs did: their checkpoints still resume.
ADDED = {"grad_accum": 1, "space": "latent"}


def hashed_settings(cfg: _Section | dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint depends on (not its length: `--resume` with more steps or a
    longer cap continues training)."""
    values = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return {
        k: v
        for k, v in values.items()
        if k not in EXTENDABLE and not (k in ADDED and v == ADDED[k])
    }


def settings_hash(cfg: _Section | dict[str, Any]) -> str:
    """Identifies the settings a checkpoint depends on (`hashed_settings`)."""
    kept = hashed_settings(cfg)
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def check_resume(state: dict[str, Any], expected: dict[str, Any], run: Path, why: str = "") -> None:
    """A checkpoint must come from the same data and settings it is resumed with. Checkpoints
    from before data-parallel training record no global batch: they were one-process runs, whose
    batch their settings hash covers. `why`: what changed in the settings, when known."""
    for key, value in expected.items():
        if key == "global_batch_size" and key not in state:
            continue
        if state.get(key) != value:
            detail = f"; {why}" if key == "settings_hash" and why else ""
            raise ValueError(
                f"{run}: checkpoint was written with a different {key} "
                f"({state.get(key)!r} vs {value!r}){detail}; start a new --out instead of --resume"
            )


def settings_changes(run: Path, cfg) -> str:
    """What differs between the settings `run` saved (training_config.json, read back with the
    profile's checks) and `cfg`, in the keys a checkpoint depends on; "" when it saved none."""
    saved = RunSettings.read(run)
    if saved is None or cfg is None:
        return ""
    before, after = hashed_settings(saved.config), hashed_settings(cfg)
    changed = [
        f"{key} {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
    return f"{run / TRAINING_CONFIG} differs: {', '.join(changed)}" if changed else ""


def resume_run(
    run: Path, modules, optimizers, identity, accelerator, desc: str, cfg=None
) -> tuple[int, float, dict[str, Any]]:
    """Load the latest checkpoint (weights, optimizers, fp16 loss scale) after checking it fits
    (`cfg`: the settings resumed with, compared with those the run saved to say what changed);
    the step and wall seconds to continue from, and its whole state.json (for `extra`)."""
    from .checkpoints import load_checkpoint
    from .parallel import restore_scaler

    why = settings_changes(run, cfg)  # read before anything rewrites the run's settings
    state = load_checkpoint(run, modules, optimizers)
    check_resume(state, identity, run, why)
    restore_scaler(accelerator, state)
    log.info("resuming %s at step %d", desc, int(state["step"]))
    return int(state["step"]), float(state["wall_seconds"]), state


def write_checkpoint(
    run: Path, step: int, wall: float, modules, optimizers, identity, accelerator, extra=None
):
    """A checkpoint by the main process (every process holds the same weights); `extra` (JSON)
    goes into its state.json beside the identity."""
    from .checkpoints import save_checkpoint
    from .parallel import scaler_state

    state = {**identity, "wall_seconds": wall, **scaler_state(accelerator), **(extra or {})}
    save_checkpoint(run, step, modules, optimizers, state)


def train_run(cfg, start: int, elapsed: float, train_step, checkpoint, desc: str, show: bool,
              accelerator):  # fmt: skip
    """The shared loop, with progress and the stop decision shared by the processes."""
    from .parallel import any_process
    from .train_loop import LoopPlan, run_loop

    plan = LoopPlan(
        total_steps=int(cfg.steps),
        start_step=start,
        max_minutes=float(cfg.max_minutes),
        checkpoint_every=int(cfg.checkpoint_every),
        elapsed_before=elapsed,
        desc=desc,
        show_progress=show and accelerator.is_main_process,
    )
    return run_loop(plan, train_step, checkpoint, lambda flag: any_process(accelerator, flag))


def card_basics(result, accelerator, batch, digests: list[str]) -> dict[str, Any]:
    """What every model card says about how its training went."""
    return {
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "max_minutes_hit": result.stopped_by == "max_minutes",
        "wall_seconds": round(result.wall_seconds, 1),
        "mixed_precision": accelerator.mixed_precision,
        "global_batch": batch.describe(),
        "replica_sha256": digests,
        "final_losses": result.losses,
    }
