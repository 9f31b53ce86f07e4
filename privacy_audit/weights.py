"""The audit's own trained networks (the copy encoder, the pair verifier) on disk: safetensors
weights and a JSON record holding the key they were trained for, each written atomically; a
cached copy is reused only for the same key, and a damaged one is retrained, never trusted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn

from conditioning.dataset import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


def save_weights(model: nn.Module, directory: str | Path, names: tuple[str, str], meta: dict):
    """`names`: the weights' and the record's file names in `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    with atomic_path(directory / names[0]) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    write_json_atomic(directory / names[1], meta)


def load_weights(
    directory: str | Path, names: tuple[str, str], key: str, build: Callable[[dict], nn.Module]
) -> tuple[nn.Module, dict] | None:
    """The network cached in `directory` if it was trained for `key` (`build` makes an empty
    one from the record), else None."""
    from safetensors.torch import load_file

    directory = Path(directory)
    weights, config = (directory / name for name in names)
    if not weights.is_file() or not config.is_file():
        return None
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("%s: unreadable record; retraining", config)
        return None
    if not isinstance(meta, dict) or meta.get("key") != key:
        return None
    try:
        model = build(meta)
        model.load_state_dict(load_file(weights))
    except Exception as exc:  # a damaged or foreign weights file: retrain rather than fail
        log.warning("%s: cannot load (%s); retraining", weights, exc)
        return None
    model.eval()
    return model, meta
