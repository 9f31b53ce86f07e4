"""safetensors files written atomically (temporary file beside the target, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing weights file")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from None
