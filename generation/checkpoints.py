"""Weights and resumable checkpoints: safetensors for tensors, JSON for everything else, never a
pickle. A checkpoint is staged in a hidden directory and renamed into place, and `latest.json`
is replaced atomically afterwards, so a kill -9 at any moment leaves the previous one usable."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from conditioning.dataset import atomic_path, write_json_atomic

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """A state dict as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from None


def load_into(module: nn.Module, path: str | Path) -> None:
    try:
        module.load_state_dict(load_weights(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the model in config.json ({exc})") from None


def file_sha256(*paths: str | Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoints/step_NNNNNNN (modules, optimizers, state.json) and point latest.json at it."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=root))
    try:
        for name, module in modules.items():
            save_weights(stage / f"{name}.safetensors", module.state_dict())
        for name, optimizer in optimizers.items():
            tensors, meta = _flatten_optimizer(optimizer)
            save_weights(stage / f"{name}.safetensors", tensors)
            write_json_atomic(stage / f"{name}.json", meta)
        write_json_atomic(stage / "state.json", {**state, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    write_json_atomic(root / LATEST, {"step": step, "dir": final.name})
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    run_dir: str | Path,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any] | None:
    """Restore the latest checkpoint into modules/optimizers; its state.json, or None if none."""
    root = Path(run_dir) / CHECKPOINTS
    latest = root / LATEST
    if not latest.is_file():
        return None
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        folder = root / pointer["dir"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{latest}: damaged checkpoint pointer ({exc})") from None
    for name, module in modules.items():
        load_into(module, folder / f"{name}.safetensors")
    for name, optimizer in optimizers.items():
        meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        optimizer.load_state_dict(
            _unflatten_optimizer(load_weights(folder / f"{name}.safetensors"), meta)
        )
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))
