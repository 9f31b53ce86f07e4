"""The speed benchmark behind `radsynth bench speed|all`: sampling images/s per sampler x steps
(fp32 and bf16, against diffusers' default 1000-step DDPM on the same weights), the UNet's FLOP/s
against the machine's measured matmul peak, training steps/s, and the audit's search at
10,000 x 5,000. Each measurement runs in a fresh process, so its peak memory is its own.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import resource
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("radsynth.bench")
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak RSS is the task's


def _child(target: str, kwargs: dict, threads: int) -> tuple[Any, float]:
    import torch

    torch.set_num_threads(threads)
    module, name = target.split(":")
    result = getattr(importlib.import_module(module), name)(**kwargs)
    return result, round(_peak_rss_mib(), 1)


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the exec'd image alone;
    ru_maxrss would also count the parent's RSS at fork time."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import sys

    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def measured(target: str, threads: int, **kwargs) -> tuple[Any, float]:
    """Run `module:function(**kwargs)` in a fresh process; its result and peak RSS (MiB)."""
    with SPAWN.Pool(1) as pool:
        return pool.apply(_child, (target, kwargs, threads))


# Tasks run in the child processes: each loads what it measures.


def task_baseline(model: str) -> dict:
    """Peak RSS of a process that only imported torch and loaded the model."""
    from generation import load_model

    load_model(model)
    return {}


def task_sampling(model: str, sampler: str, steps: int, bf16: bool, n: int) -> dict:
    from generation import load_model
    from generation.bench import bench_sampling

    loaded = load_model(model)
    if sampler == "ddpm" and steps == 1000:
        rows = bench_sampling(loaded, samplers=(), precisions=(bf16,), ddpm_1000_n=n)
    else:
        rows = bench_sampling(
            loaded, n=n, steps=(steps,), samplers=(sampler,), precisions=(bf16,), ddpm_1000_n=0
        )
    return rows[0]


def task_unet(model: str, batch: int, bf16: bool) -> dict:
    from generation import load_model
    from generation.bench import unet_throughput

    return unet_throughput(load_model(model), batch=batch, bf16=bf16)


def task_training(model: str, part: str, batch: int, bf16: bool) -> dict:
    from generation import load_model
    from generation.bench import training_throughput

    return training_throughput(load_model(model), part, batch, bf16)


def task_matmul(bf16: bool) -> dict:
    from generation.bench import matmul_peak

    return matmul_peak(bf16=bf16)


def task_audit(n_query: int, n_train: int, bf16: bool = False) -> dict:
    from privacy_audit.bench import benchmark_search

    return benchmark_search(n_query, n_train, bf16=bf16)


@dataclass(frozen=True)
class SpeedConfig:
    """What `run_speed` measures: sampling sizes, batches, the audit's image counts (None skips
    it) and the precisions (None: fp32, and bf16 where the CPU runs it natively)."""

    threads: int = 2
    n: int = 16
    steps: tuple[int, ...] = (10, 20, 50)
    samplers: tuple[str, ...] | None = None
    ddpm_1000_n: int = 2
    unet_batch: int = 32
    ae_batch: int = 16
    audit: tuple[int, int] | None = (10_000, 5_000)
    precisions: tuple[bool, ...] | None = None


def run_speed(model: str, config: SpeedConfig | None = None, *, progress: bool = True) -> dict:
    """Every speed measurement, one fresh process each; returns the rows of each table.
    `precisions` defaults to fp32 and bf16 where the CPU runs bf16 natively, fp32 alone
    elsewhere (emulated bf16 takes minutes per row and the product does not use it there)."""
    from tqdm import tqdm

    from conditioning.precision import native_bf16

    config = config or SpeedConfig()
    precisions = config.precisions
    if precisions is None:
        precisions = (False, True) if native_bf16("cpu") else (False,)
    plan = _speed_plan(model, config, precisions)
    out: dict[str, Any] = {
        "threads": config.threads,
        "native_bf16": native_bf16("cpu"),
        "precisions": ["bf16" if p else "fp32" for p in precisions],
        "sampling": [],
        "unet": [],
        "training": [],
    }
    for kind, target, kwargs in tqdm(plan, desc="speed benchmark", disable=not progress):
        result, peak = measured(target, config.threads, **kwargs)
        row = {**result, "peak_rss_mib": peak}
        log.info("%s %s: %s", kind, {k: v for k, v in kwargs.items() if k != "model"}, row)
        if kind in ("sampling", "unet", "training"):
            out[kind].append(row)
        else:
            out[kind] = row
    return out


def _speed_plan(
    model: str, config: SpeedConfig, precisions: tuple[bool, ...]
) -> list[tuple[str, str, dict]]:
    """(table, task, its arguments) of every measurement, in the order they run; a pixel-space
    model has no autoencoder to time."""
    from generation.pipeline import read_config
    from generation.schedulers import SAMPLERS
    from generation.space import space_name

    parts = [("unet", config.unet_batch)]
    if space_name(read_config(model)) == "latent":
        parts.append(("autoencoder", config.ae_batch))
    me = __name__
    plan: list[tuple[str, str, dict]] = [
        ("baseline", f"{me}:task_baseline", {"model": model}),
        ("matmul", f"{me}:task_matmul", {"bf16": True in precisions}),
    ]
    for bf16 in precisions:
        for sampler in config.samplers or SAMPLERS:
            for k in config.steps:
                kwargs = {"sampler": sampler, "steps": k, "bf16": bf16, "n": config.n}
                plan.append(("sampling", f"{me}:task_sampling", {"model": model, **kwargs}))
        if config.ddpm_1000_n:
            kwargs = {"sampler": "ddpm", "steps": 1000, "bf16": bf16, "n": config.ddpm_1000_n}
            plan.append(("sampling", f"{me}:task_sampling", {"model": model, **kwargs}))
        unet = {"model": model, "batch": config.unet_batch, "bf16": bf16}
        plan.append(("unet", f"{me}:task_unet", unet))
        for part, batch in parts:
            kwargs = {"model": model, "part": part, "batch": batch, "bf16": bf16}
            plan.append(("training", f"{me}:task_training", kwargs))
    for bf16 in precisions if config.audit else ():
        audit = {"n_query": config.audit[0], "n_train": config.audit[1], "bf16": bf16}
        plan.append(("audit_bf16" if bf16 else "audit", f"{me}:task_audit", audit))
    return plan


def _share_of_peak(row: dict, peak: dict) -> str:
    """A row's GFLOP/s as a share of the matmul peak in the same precision."""
    ceiling = peak["bf16" if row["bf16"] else "fp32"]
    return f"{100 * row['gflop_per_s'] / ceiling:.0f}%" if ceiling else "n/a"


def _cell(audit: dict, key: str) -> str:
    """'wall | CPU |' seconds of an audit step (nan where the run did not time it)."""
    wall = audit.get(f"{key}_seconds", float("nan"))
    cpu = audit.get(f"{key}_cpu_seconds", float("nan"))
    return f"{wall:.1f} | {cpu:.1f} |"


def speed_markdown(result: dict) -> str:
    """The speed tables (the machine, date and command are added by the caller)."""
    peak = result["matmul"]
    lines = [
        *_speed_intro(result),
        *_sampling_table(result["sampling"]),
        *_unet_table(result["unet"], peak),
        *_training_table(result["training"], peak),
    ]
    for key in ("audit", "audit_bf16"):
        if result.get(key):
            lines += _audit_table(result[key])
    return "\n".join(lines) + "\n"


def _speed_intro(result: dict) -> list[str]:
    """The measured matmul peak and baseline memory, and why bf16 rows may be missing."""
    peak = result["matmul"]
    base = result["baseline"]["peak_rss_mib"]
    bf16_peak = f"bf16 {peak['bf16']:.0f} GFLOP/s" if peak.get("bf16") else "bf16 not measured"
    lines = [
        f"Measured matmul peak (2048 x 2048, best of 5): fp32 {peak['fp32']:.0f} GFLOP/s, "
        f"{bf16_peak}. Peak RSS is that of a fresh process per row; one that only imports torch "
        f"and loads the model peaks at {base:.0f} MiB.",
        "",
    ]
    if not result.get("native_bf16", True) and "bf16" not in result.get("precisions", []):
        lines += [
            "This CPU has no native bf16 (no AVX512-BF16 or AMX): torch emulates it, many times "
            "slower than fp32 (an autoencoder training step took 18x longer here), so the bf16 "
            "rows are skipped and RadSynth runs in fp32 on such machines.",
            "",
        ]
    return lines


def _sampling_table(rows: list[dict]) -> list[str]:
    """Images/s per sampler and steps, with the speed-up over 1000-step DDPM."""
    lines = [
        "### Sampling",
        "",
        "| sampler | steps | bf16 | images | img/s | x DDPM-1000 | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    reference = {
        r["bf16"]: r["images_per_s"] for r in rows if r["sampler"] == "ddpm" and r["steps"] == 1000
    }
    for r in rows:
        ref = reference.get(r["bf16"])
        ratio = f"{r['images_per_s'] / ref:.0f}" if ref else "n/a"
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {'yes' if r['bf16'] else 'no'} | {r['images']} | "
            f"{r['images_per_s']:.2f} | {ratio} | {r['peak_rss_mib']:.0f} |"
        )
    return lines


def _unet_table(rows: list[dict], peak: dict) -> list[str]:
    lines = [
        "",
        "### UNet throughput (one forward pass, inference)",
        "",
        "| batch | bf16 | GFLOP / pass | GFLOP/s | % of matmul peak | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {'yes' if r['bf16'] else 'no'} | {r['forward_gflop']:.2f} | "
            f"{r['gflop_per_s']:.1f} | {_share_of_peak(r, peak)} | {r['peak_rss_mib']:.0f} |"
        )
    return lines


def _training_table(rows: list[dict], peak: dict) -> list[str]:
    lines = [
        "",
        "### Training (forward, backward, AdamW step on random inputs of the model's shapes)",
        "",
        "| network | batch | bf16 | steps/s | images/s | GFLOP/s | % of matmul peak | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['part']} | {r['batch']} | {'yes' if r['bf16'] else 'no'} | "
            f"{r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | {r['gflop_per_s']:.1f} | "
            f"{_share_of_peak(r, peak)} | {r['peak_rss_mib']:.0f} |"
        )
    return lines


def _audit_table(audit: dict) -> list[str]:
    """Wall and CPU seconds of each audit step, the former method's alongside."""
    return [
        "",
        f"### Privacy audit, {audit['n_query']:,} synthetic x {audit['n_train']:,} training images"
        + (", the detector's networks in bf16" if audit.get("bf16") else ""),
        "",
        "| step | seconds | CPU seconds |",
        "|---|---|---|",
        f"| embedding ({audit['embed_images_per_second']:.0f} img/s, estimated for all) | "
        f"{audit['embed_seconds_estimated']:.1f} | |",
        f"| top-5 search by patient (embeddings given) | {audit['search_seconds']:.2f} | |",
        f"| reference preparation (training images) | {_cell(audit, 'reference_prepare')}",
        "| whole copy detection of the queries (embed, search, register) | "
        f"{_cell(audit, 'copy_detection')}",
        f"| former method, same run: reference preparation | "
        f"{_cell(audit, 'legacy_reference_prepare')}",
        "| former method, same run: whole copy detection (embed, search, FFT-NCC align) | "
        f"{_cell(audit, 'legacy_copy_detection')}",
        "",
        f"Peak RSS {audit['peak_rss_mib']:.0f} MiB (random images: content hardly changes "
        "the cost). CPU seconds are the process's own: on a shared machine, what the step "
        "costs when the thread has the core to itself.",
    ]
