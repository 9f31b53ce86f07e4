"""Speed of a trained model: images/s for each sampler x steps, with and without bf16, against
diffusers' default 1000-step DDPM on the same weights; the UNet's FLOP/s against the machine's
measured matmul peak; training steps/s of the UNet and the autoencoder."""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from .sampling import Sampling
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
    model.generate([request], seed, Sampling(steps=2, bf16=False))  # warm-up: imports, kernels
    model.generate([request], seed, Sampling(steps=2, bf16=True))
    plan = [(s, k, bf16, n) for bf16 in precisions for s in samplers for k in steps]
    if ddpm_1000_n:
        plan += [("ddpm", 1000, bf16, ddpm_1000_n) for bf16 in precisions]
    results = []
    for sampler, k, bf16, count in plan:
        started = time.perf_counter()
        how = Sampling(sampler=sampler, steps=k, guidance=guidance, batch_size=count, bf16=bf16)
        model.generate([request] * count, seed, how)
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


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(size: int = 2048, repeats: int = 5, bf16: bool = True) -> dict[str, float | None]:
    """The machine's measured dense matmul throughput (GFLOP/s, best of `repeats`) in fp32 and,
    where asked, bf16: the ceiling the UNet's FLOP/s is compared with."""
    out: dict[str, float | None] = {"fp32": None, "bf16": None}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name == "bf16" and not bf16:
            continue
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        seconds = _best_seconds(lambda a=a, b=b: torch.mm(a, b), repeats)
        out[name] = round(2 * size**3 / seconds / 1e9, 2)
    return out


def _random_batch(model, batch: int, seed: int):
    """Latents, timesteps, encoded conditions (and mask input) shaped like the model's own."""
    from conditioning.encoders import encode_conditions

    from .grids import grid_conditions

    gen = torch.Generator().manual_seed(seed)
    rows, _ = grid_conditions(model.schema, 1)
    requests = [rows[i % len(rows)][0] for i in range(batch)]
    values = encode_conditions(model.schema, model.validate(requests))
    z = torch.randn((batch, *model.latent_shape), generator=gen)
    t = torch.randint(0, int(model.schedule["num_train_timesteps"]), (batch,), generator=gen)
    masks = model._masks_input(None, batch) if model.has_masks else None
    return z, t, values, masks


def unet_throughput(model, batch: int = 32, bf16: bool = False, repeats: int = 3) -> dict:
    """FLOPs of one UNet forward pass (counted by torch's FlopCounterMode) and the FLOP/s it runs
    at on this machine, in inference mode (what sampling spends its time on)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .sampling import autocast

    z, t, values, masks = _random_batch(model, batch, 0)
    unet = model.unet.eval()

    def forward():
        with torch.no_grad(), autocast(model.device, bf16):
            unet(z, t, values, masks)

    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    flops = counter.get_total_flops()
    seconds = _best_seconds(forward, repeats)
    return {
        "batch": batch,
        "bf16": bf16,
        "forward_gflop": round(flops / 1e9, 3),
        "seconds": round(seconds, 4),
        "gflop_per_s": round(flops / seconds / 1e9, 2),
    }


def training_throughput(model, part: str, batch: int, bf16: bool, steps: int = 5) -> dict:
    """Training steps/s of a copy of the model's UNet (MSE on random latents, AdamW) or
    autoencoder (L1 + KL on random images, AdamW), and the FLOP/s of one step."""
    from torch.utils.flop_counter import FlopCounterMode

    from .autoencoder import kl_loss
    from .sampling import autocast
    from .space import no_autoencoder

    if part == "unet":
        net = copy.deepcopy(model.unet).train()
        z, t, values, masks = _random_batch(model, batch, 0)

        def loss_fn():
            with autocast(model.device, bf16):
                pred = net(z, t, values, masks)
            return ((pred.float() - z) ** 2).mean()

    elif part == "autoencoder":
        if model.autoencoder is None:
            raise no_autoencoder("autoencoder training throughput")
        net = copy.deepcopy(model.autoencoder).train()
        channels = 2 if model.has_masks else 1
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((batch, channels, *model.image_size), generator=gen) * 2 - 1

        def loss_fn():
            with autocast(model.device, bf16):
                recon, z_mu, z_sigma = net(x)
            return (recon.float() - x).abs().mean() + 1e-6 * kl_loss(z_mu.float(), z_sigma.float())

    else:
        raise ValueError(f"part must be unet or autoencoder, got {part!r}")
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up after counting
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {
        "part": part,
        "batch": batch,
        "bf16": bf16,
        "steps_per_s": round(1 / seconds, 3),
        "images_per_s": round(batch / seconds, 1),
        "step_gflop": round(flops / 1e9, 3),
        "gflop_per_s": round(flops / seconds / 1e9, 2),
    }
