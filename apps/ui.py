"""What every page shares: errors as messages (never tracebacks in the browser), the cached model
loader, and a picker that accepts only paths under the data root."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from .config import AppConfig, torch_threads
from .paths import PathRefused, inside_root

log = logging.getLogger("radsynth.app")
OTHER = "other (type a path under the data root)"


def guarded(body: Callable[[], None]) -> None:
    """Run a page body; any failure becomes one st.error line (the traceback goes to the log)."""
    from conditioning.dataset import DatasetError

    try:
        body()
    except PathRefused as exc:
        st.error(f"Refused: {exc}")
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        st.error(str(exc))
    except KeyError as exc:
        log.exception("page failed")
        st.error(f"Missing entry {exc} (see the app log)")
    except Exception as exc:  # noqa: BLE001 - the page must stay up and say what went wrong
        log.exception("page failed")
        st.error(f"Unexpected error ({type(exc).__name__}): {exc}")


def pick_path(
    config: AppConfig, label: str, options: list[str], key: str, query: str | None = None
) -> Path | None:
    """A select box of discovered paths plus a free-text path; either way checked to lie under
    the data root. `query` names a URL parameter that preselects a path (`?model=runs/demo`).
    None when nothing is chosen (empty text)."""
    wanted = st.query_params.get(query) if query else None
    choices = [*options, OTHER]
    index = choices.index(wanted) if wanted in options else (len(options) if wanted else 0)
    choice = st.selectbox(label, choices, index=index, key=key)
    if choice == OTHER:
        raw = st.text_input(
            f"{label}: path",
            value=wanted or "",
            key=f"{key}_path",
            help="relative to the data root",
        )
        if not raw.strip():
            st.info(f"Type a path under the data root {config.data_root}.")
            return None
        return inside_root(config.data_root, raw)
    return inside_root(config.data_root, choice)


def _weights_stamp(run: Path) -> tuple:
    """Changes whenever the run is retrained, so the cache never serves stale weights."""
    from generation.pipeline import AE_DIR, AE_WEIGHTS, CONFIG, UNET_WEIGHTS

    files = [run / CONFIG, run / UNET_WEIGHTS, run / AE_DIR / AE_WEIGHTS]
    return tuple(f.stat().st_mtime_ns for f in files if f.exists())


@st.cache_resource(max_entries=2, show_spinner="Loading model...")
def _load(run: str, stamp: tuple):
    from generation.pipeline import load_model

    try:
        model = load_model(run)
    except KeyError as exc:
        raise ValueError(
            f"{run}/config.json lacks {exc}: saved by another version of generation; "
            "retrain it or pick another model"
        ) from None
    # one 1-step image now, so the first click on Generate does not pay for imports and warm-up
    from generation.sampling import Sampling

    model.generate([{}], 0, Sampling(steps=1))
    import generation.generate_set  # noqa: F401

    return model


def load_model_cached(config: AppConfig, run: Path):
    """generation.load_model (safetensors only), cached per run directory and weights version."""
    use_threads(config)
    return _load(str(run), _weights_stamp(run))


def use_threads(config: AppConfig) -> int:
    """Set torch's thread count for the work about to run in this script thread."""
    import torch

    threads = torch_threads(config)
    torch.set_num_threads(threads)
    return threads


@st.cache_data(ttl=15, show_spinner=False)
def _scan(root: str):
    from .discovery import scan

    return scan(Path(root))


def catalog(config: AppConfig):
    """What lies under the data root (re-scanned at most every 15 s)."""
    return _scan(str(config.data_root))


def _stamp(path: Path) -> int:
    manifest = path / "manifest.csv"
    return manifest.stat().st_mtime_ns if manifest.exists() else 0


@st.cache_resource(max_entries=4, show_spinner=False)
def _dataset(path: str, stamp: int):
    from conditioning.dataset import load_dataset

    return load_dataset(path)


@st.cache_resource(max_entries=4, show_spinner=False)
def _synthetic(path: str, stamp: int):
    from conditioning.dataset import load_synthetic_set

    return load_synthetic_set(path)


def dataset_cached(path: Path):
    """conditioning.dataset.load_dataset, cached until its manifest changes."""
    return _dataset(str(path), _stamp(path))


def synthetic_set_cached(path: Path):
    """conditioning.dataset.load_synthetic_set, cached until its manifest changes."""
    return _synthetic(str(path), _stamp(path))
