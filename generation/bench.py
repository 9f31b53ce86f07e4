"""Sampling speed of a trained model: images/s for each sampler x steps, with and without bf16,
against diffusers' default 1000-step DDPM on the same weights."""

from __future__ import annotations

import time
from typing import Any

from .schedulers import SAMPLERS


def bench_sampling(
    model,
    n: int = 16,
    steps: tuple[int, ...] = (10, 20, 50),
    samplers: tuple[str, ...] = SAMPLERS,
    precisions: tuple[bool, ...] = (False, True),
    ddpm_1000_n: int = 2,
    guidance: float | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (sampler, steps, bf16): seconds and images/s for n images in one batch, with
    classifier-free guidance (the first class of the first categorical attribute requested)."""
    from .grids import grid_conditions

    rows_of_conditions, _ = grid_conditions(model.schema, 1)
    request = rows_of_conditions[0][0]
    model.generate([request], seed=seed, steps=2, bf16=False)  # warm-up: lazy imports, kernels
    model.generate([request], seed=seed, steps=2, bf16=True)
    plan = [(s, k, bf16, n) for bf16 in precisions for s in samplers for k in steps]
    if ddpm_1000_n:
        plan += [("ddpm", 1000, bf16, ddpm_1000_n) for bf16 in precisions]
    results = []
    for sampler, k, bf16, count in plan:
        started = time.perf_counter()
        model.generate(
            [request] * count, seed=seed, steps=k, sampler=sampler, guidance=guidance,
            batch_size=count, bf16=bf16,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        results.append(
            {
                "sampler": sampler,
                "steps": k,
                "bf16": bf16,
                "images": count,
                "seconds": round(seconds, 3),
                "images_per_s": round(count / seconds, 3),
            }
        )
    return results


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'sampler':8} {'steps':>5} {'bf16':>5} {'images':>6} {'seconds':>8} {'img/s':>8}"]
    for r in rows:
        lines.append(
            f"{r['sampler']:8} {r['steps']:>5} {str(r['bf16']):>5} {r['images']:>6} "
            f"{r['seconds']:>8.2f} {r['images_per_s']:>8.2f}"
        )
    return "\n".join(lines)
