"""Data-parallel training through accelerate: one global batch per step, whatever the number of
processes or accumulation micro-steps.

Every process draws the same global batch (indices, noise, timesteps, dropout) from the step's
random stream and trains on its own slices of it, so N processes with per-process batch B and
accumulation A follow the same trajectory as one process with batch N x B x A (up to the order
in which gradients are summed). Gradients are averaged by DDP (models go through
`accelerator.prepare`), so every process holds the same weights; `replica_digests` proves it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("radsynth.train")


@dataclass(frozen=True)
class GlobalBatch:
    per_process: int
    processes: int
    grad_accum: int

    @property
    def size(self) -> int:
        return self.per_process * self.processes * self.grad_accum

    def describe(self) -> dict[str, int]:
        """What config.json and the model card state about the batch."""
        return {
            "size": self.size,
            "per_process": self.per_process,
            "processes": self.processes,
            "grad_accum": self.grad_accum,
        }

    def micro_slices(self, rank: int) -> Iterator[slice]:
        """This process's slices of the global batch, one per accumulation micro-step."""
        for micro in range(self.grad_accum):
            start = (rank * self.grad_accum + micro) * self.per_process
            yield slice(start, start + self.per_process)


def global_batch(cfg: dict[str, Any], accelerator) -> GlobalBatch:
    accum = int(cfg.grad_accum)
    if accum < 1:
        raise ValueError(f"grad_accum must be at least 1, got {accum}")
    return GlobalBatch(int(cfg.batch_size), accelerator.num_processes, accum)


def mean_over_processes(accelerator, losses: list[dict[str, float]]) -> dict[str, float]:
    """The global batch's losses: the mean over micro-steps and processes (one all-reduce)."""
    keys = list(losses[0])
    local = torch.tensor([[row[k] for k in keys] for row in losses], dtype=torch.float64)
    total = accelerator.reduce(local.mean(0).to(accelerator.device), reduction="mean")
    return dict(zip(keys, total.cpu().tolist(), strict=True))


def any_process(accelerator, flag: bool) -> bool:
    """True on every process when it is true on one: stopping must be a shared decision, or the
    processes that go on wait forever for the gradients of those that stopped."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def _digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def replica_digests(accelerator, module: torch.nn.Module) -> list[str]:
    """Each process's SHA-256 of `module`'s weights; raises when they differ (replicas that
    diverged would silently give N different models)."""
    from accelerate.utils import gather_object

    digests = [_digest(module)]
    if accelerator.num_processes > 1:
        digests = gather_object(digests)
    if len(set(digests)) != 1:
        raise RuntimeError(
            f"the {len(digests)} processes hold different weights ({', '.join(d[:12] for d in digests)}): "
            "data-parallel training lost synchronisation"
        )
    return digests


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` with gradients off: the generator's adversarial loss must not leave gradients in
    the discriminator, which accumulation would add to the discriminator's own."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for param, flag in zip(module.parameters(), flags, strict=True):
            param.requires_grad_(flag)


def scaler_state(accelerator) -> dict[str, Any]:
    """The fp16 loss scale (JSON), so a resumed run scales as the uninterrupted one would."""
    return {} if accelerator.scaler is None else {"grad_scaler": accelerator.scaler.state_dict()}


def restore_scaler(accelerator, state: dict[str, Any]) -> None:
    if accelerator.scaler is not None and "grad_scaler" in state:
        accelerator.scaler.load_state_dict(state["grad_scaler"])
