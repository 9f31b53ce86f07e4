"""The shared training loop: progress bar, log lines, checkpoints every N steps and on exit
(SIGTERM and Ctrl-C included), a wall-clock cap, and resumption from the last checkpoint."""

from __future__ import annotations

import logging
import signal
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

log = logging.getLogger("radsynth.train")


@dataclass
class LoopResult:
    step: int
    stopped_by: str  # "steps", "max_minutes" or "interrupted"
    wall_seconds: float
    losses: dict[str, float] = field(default_factory=dict)


class _Terminate(Exception):
    pass


@dataclass(frozen=True)
class LoopPlan:
    """How long a run trains: from start_step (after elapsed_before seconds of earlier
    sessions) to total_steps, capped at max_minutes of wall clock (0 = no cap), with a
    checkpoint every checkpoint_every steps; desc names the progress bar."""

    total_steps: int
    start_step: int
    max_minutes: float
    checkpoint_every: int
    elapsed_before: float
    desc: str
    show_progress: bool = True


def run_loop(
    plan: LoopPlan,
    train_step: Callable[[int], dict[str, float]],
    checkpoint: Callable[[int, float], None],
    agree: Callable[[bool], bool] = bool,
) -> LoopResult:
    """Run `train_step(step)` from the plan's start step to its total.

    `checkpoint(step, wall_seconds)` is called every `checkpoint_every` steps, at the end, and
    when the run is stopped by SIGTERM, Ctrl-C or the `max_minutes` cap; an interrupted run
    re-raises KeyboardInterrupt after its checkpoint is safely written. `agree` turns one
    process's wish to stop at the cap into the decision of all of them."""
    total_steps, start_step = plan.total_steps, plan.start_step
    max_minutes, checkpoint_every = plan.max_minutes, plan.checkpoint_every
    elapsed_before = plan.elapsed_before
    history: dict[str, deque] = defaultdict(lambda: deque(maxlen=50))
    started = time.monotonic()

    def wall() -> float:
        return elapsed_before + time.monotonic() - started

    def on_term(signum, frame):
        raise _Terminate()

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        previous = None
    step, stopped_by = start_step, "steps"
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc=plan.desc,
        unit="step",
        disable=not plan.show_progress,
    )
    try:
        while step < total_steps:
            if max_minutes and agree(wall() >= max_minutes * 60):
                stopped_by = "max_minutes"
                log.info("wall-clock cap of %s min reached at step %d", max_minutes, step)
                break
            losses = train_step(step)
            step += 1
            for key, value in losses.items():
                history[key].append(value)
            bar.update(1)
            if step % 10 == 0 or step == total_steps:
                means = {k: sum(v) / len(v) for k, v in history.items()}
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
            if step % 50 == 0:
                log.info(
                    "step %d %s",
                    step,
                    " ".join(f"{k}={sum(v) / len(v):.5f}" for k, v in history.items()),
                )
            if checkpoint_every and step % checkpoint_every == 0 and step < total_steps:
                checkpoint(step, wall())
        checkpoint(step, wall())
    except (KeyboardInterrupt, _Terminate):
        bar.close()
        log.warning("interrupted at step %d: writing a checkpoint before exiting", step)
        checkpoint(step, wall())
        raise KeyboardInterrupt from None
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    means = {k: sum(v) / len(v) for k, v in history.items()}
    return LoopResult(step, stopped_by, wall(), means)
