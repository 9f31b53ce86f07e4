"""Generate page: condition controls from the model's schema, a grid of samples, a zip of them
(a synthetic set in the `radsynth generate` layout), and a one-attribute side-by-side sweep."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from conditioning.dataset import CATEGORICAL, ConditionSchema, load_synthetic_set

from .config import AppConfig
from .imaging import png_bytes, sweep_conditions, sweep_values, zip_directory
from .ui import catalog, load_model_cached, pick_path, use_threads

if TYPE_CHECKING:  # generation (torch) loads with the first model, not with the page
    from generation.sampling import Sampling

UNCONDITIONED = "(unconditioned)"
RESULT = "generate_result"
SWEEP = "generate_sweep"


def condition_controls(schema: ConditionSchema, prefix: str) -> dict[str, Any]:
    """One control per attribute; the request holds only the attributes that are set."""
    request: dict[str, Any] = {}
    for attribute in schema.attributes:
        key = f"{prefix}_{attribute.name}"
        if attribute.kind == CATEGORICAL:
            value = st.selectbox(attribute.name, [UNCONDITIONED, *attribute.values], key=key)
            if value != UNCONDITIONED:
                request[attribute.name] = value
            continue
        free = st.checkbox(f"{attribute.name}: unconditioned", value=False, key=f"{key}_free")
        middle = (attribute.minimum + attribute.maximum) / 2
        value = st.slider(
            f"{attribute.name} ({attribute.unit})" if attribute.unit else attribute.name,
            min_value=float(attribute.minimum),
            max_value=float(attribute.maximum),
            value=float(round(middle)),
            disabled=free,
            key=key,
        )
        if not free:
            request[attribute.name] = float(value)
    return request


def generate_batch(
    model, request: dict[str, Any], n: int, seed: int, how: Sampling
) -> dict[str, Any]:
    """n images for one request through generation's set writer, read back with the shared
    reader; returns the images, their manifest conditions and the set as zip bytes."""
    from dataclasses import replace

    from generation.config import GenerateConfig
    from generation.generate_set import SetRequest, generate_set

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radsynth-app-") as tmp:
        out = Path(tmp) / "samples"
        how = replace(how, batch_size=min(n, GenerateConfig.batch_size))
        generate_set(model, out, SetRequest(n, request, seed), how, show_progress=False)
        synthetic = load_synthetic_set(out)
        images = synthetic.load_all()
        masks = [synthetic.load_mask(item) for item in synthetic.images] if model.has_masks else []
        archive = zip_directory(out)
    return {
        "model_hash": model.model_hash,
        "images": images,
        "masks": masks,
        "conditions": [item.conditions for item in synthetic.images],
        "zip": archive,
        "seconds": time.perf_counter() - started,
        "request": dict(request),
        "seed": seed,
        "how": how,
    }


def _show_grid(result: dict[str, Any], width: int) -> None:
    images = result["images"]
    asked = (
        ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result["request"].items()
        )
        or "unconditioned"
    )
    how = result["how"]
    st.caption(
        f"{len(images)} images in {result['seconds']:.1f} s | {asked} | seed {result['seed']}, "
        f"{how.steps} steps {how.sampler}, guidance {how.guidance:g}"
    )
    st.image(
        [png_bytes(image) for image in images],
        caption=[f"#{i}" for i in range(len(images))],
        width=width,
        output_format="PNG",
    )
    if result["masks"]:
        st.image(
            [png_bytes(mask.astype("float32")) for mask in result["masks"]],
            caption=[f"mask #{i}" for i in range(len(result["masks"]))],
            width=width,
            output_format="PNG",
        )
    st.download_button(
        "Download images + conditions (zip)",
        data=result["zip"],
        file_name="radsynth-samples.zip",
        mime="application/zip",
        key="download_zip",
    )


def _sweep_section(
    config: AppConfig, model, request: dict[str, Any], seed: int, how: Sampling, width: int
) -> None:
    st.subheader("Side by side: vary one attribute, same seed")
    names = model.schema.names
    if not names:
        st.info("This model has no condition attribute to vary.")
        return
    name = st.selectbox("Attribute to vary", names, key="sweep_attribute")
    attribute = model.schema[name]
    if attribute.kind == CATEGORICAL:
        values = sweep_values(attribute)
    else:
        lo, hi = float(attribute.minimum), float(attribute.maximum)
        default = (min(max(12.0, lo), hi), max(min(180.0, hi), lo))
        start, stop = st.slider(f"{name} from / to", lo, hi, default, key="sweep_range")
        count = st.slider("Columns", 2, 8, 5, key="sweep_count")
        values = sweep_values(attribute, start, stop, count)
    if st.button("Generate side by side", key="sweep_button"):
        conditions = sweep_conditions(request, name, values)
        use_threads(config)
        # every column starts from the same noise: same seed and the same image index
        images = model.generate(conditions, seed, how, indices=[0] * len(conditions))
        st.session_state[SWEEP] = {
            "model_hash": model.model_hash,
            "name": name,
            "values": values,
            "images": images,
        }
    sweep = st.session_state.get(SWEEP)
    if sweep and sweep["model_hash"] == model.model_hash:
        columns = st.columns(len(sweep["values"]))
        for column, value, image in zip(columns, sweep["values"], sweep["images"], strict=True):
            label = f"{value:g}" if isinstance(value, float) else str(value)
            column.image(
                png_bytes(image),
                caption=f"{sweep['name']}={label}",
                width=width,
                output_format="PNG",
            )


def render(config: AppConfig) -> None:
    st.header("Generate")
    found = catalog(config)
    if not found.models:
        st.warning(f"No trained model under {config.data_root} (runs/*/config.json).")
    run = pick_path(config, "Model", found.models, key="gen_model", query="model")
    if run is None:
        return
    model = load_model_cached(config, run)
    size = "x".join(map(str, model.image_size))
    st.caption(
        f"model {model.model_hash[:12]} | {size} | {model.space_name} space | "
        f"masks: {model.has_masks}"
    )
    defaults = model.defaults
    left, right = st.columns(2)
    with left:
        request = condition_controls(model.schema, f"cond_{model.model_hash[:8]}")
    with right:
        n = st.number_input("Images", 1, 64, 16, key="gen_n")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="gen_seed")
        steps = st.slider("Steps", 1, 100, int(defaults.steps), key="gen_steps")
        samplers = list(model.samplers)
        default_sampler = defaults.sampler
        sampler = st.selectbox(
            "Sampler", samplers, index=samplers.index(default_sampler), key="gen_sampler"
        )
        guidance = st.slider(
            "Guidance", 1.0, 10.0, float(defaults.guidance), 0.5, key="gen_guidance"
        )
    from generation.sampling import Sampling

    how = Sampling(sampler=sampler, steps=int(steps), guidance=guidance)
    width = max(64, min(160, 2 * model.image_size[-1]))
    if st.button("Generate", type="primary", key="generate"):
        with st.spinner(f"Generating {int(n)} images..."):
            use_threads(config)
            st.session_state[RESULT] = generate_batch(model, request, int(n), int(seed), how)
    result = st.session_state.get(RESULT)
    if result and result["model_hash"] == model.model_hash:
        _show_grid(result, width)
    _sweep_section(config, model, request, int(seed), how, width)
