"""Viewer page: one synthetic image at its own resolution, enlarged 2x or 4x by whole pixels,
under window/level controls as a PACS viewer has them, optionally beside a real image of the
same condition from a dataset's test split (held-out patients; never a training image) shown
through the same window. The reader study keeps origins hidden; this page is for looking."""

from __future__ import annotations

import streamlit as st

from .config import AppConfig
from .paths import inside_root
from .ui import catalog, dataset_cached, pick_path, synthetic_set_cached
from .viewer import FULL_WINDOW, INTERPOLATION, ZOOMS, to_grey_levels, view_png

NO_REAL = "(none)"


def _query_int(name: str, default: int) -> int:
    try:
        return int(st.query_params.get(name, default))
    except ValueError:
        return default


def _window_controls() -> tuple[float, float]:
    """Window centre and width in grey levels of the 8-bit image (128 / 256: unchanged)."""
    if st.button("Reset window", key="view_reset"):
        st.session_state["view_centre"], st.session_state["view_width"] = map(int, FULL_WINDOW)
    centre = st.slider("Window level (centre)", 0, 255, int(FULL_WINDOW[0]), key="view_centre")
    width = st.slider("Window width", 1, 256, int(FULL_WINDOW[1]), key="view_width")
    return float(centre), float(width)


def _matching_real(dataset, conditions: dict[str, str]):
    """The first test-split record whose categorical conditions equal the synthetic image's."""
    from conditioning.dataset import CATEGORICAL

    names = [a.name for a in dataset.schema.attributes if a.kind == CATEGORICAL]
    wanted = {n: conditions.get(n) for n in names if conditions.get(n)}
    for record in dataset.split("test"):
        if all(str(record.conditions.get(n)) == v for n, v in wanted.items()):
            return record
    return None


def _describe(conditions: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in conditions.items() if v not in (None, "")) or "-"


def render(config: AppConfig) -> None:
    st.header("Viewer")
    found = catalog(config)
    if not found.synthetic_sets:
        st.warning(f"No synthetic set under {config.data_root} (images/ + manifest.csv).")
    set_dir = pick_path(config, "Synthetic set", found.synthetic_sets, key="view_set", query="set")
    if set_dir is None:
        return
    synthetic = synthetic_set_cached(set_dir)
    if not synthetic.images:
        st.warning(f"{set_dir.name} holds no image.")
        return
    left, right = st.columns([1, 3])
    with left:
        last = len(synthetic.images) - 1
        index = st.number_input(
            "Image #", 0, last, min(max(_query_int("image", 0), 0), last), key="view_index"
        )
        zoom_label = st.radio(
            "Zoom",
            [f"{z}x" for z in ZOOMS],
            index=ZOOMS.index(asked) if (asked := _query_int("zoom", 1)) in ZOOMS else 0,
            horizontal=True,
            key="view_zoom",
        )
        zoom = int(zoom_label.rstrip("x"))
        centre, width = _window_controls()
        real_choice = st.selectbox(
            "Real image beside it (test split)", [NO_REAL, *found.datasets], key="view_real"
        )
    item = synthetic.images[int(index)]
    grey = to_grey_levels(synthetic.load_image(item))
    side = "x".join(map(str, grey.shape))
    note = f"{side} px at {zoom}x, {INTERPOLATION}; window centre {centre:g}, width {width:g}"
    with right:
        panels = st.columns(2) if real_choice != NO_REAL else [st.container()]
        _show(panels[0], grey, centre, width, zoom,
              f"synthetic #{int(index)} ({_describe(item.conditions)}) | {note}")  # fmt: skip
        if real_choice != NO_REAL:
            dataset = dataset_cached(inside_root(config.data_root, real_choice))
            record = _matching_real(dataset, item.conditions)
            if record is None:
                panels[1].info("No test-split image has this image's conditions.")
                return
            _show(panels[1], to_grey_levels(dataset.load_image(record)), centre, width, zoom,
                  f"real, test split ({_describe(record.conditions)}) | same window")  # fmt: skip


def _show(panel, grey, centre: float, width: float, zoom: int, caption: str) -> None:
    """One image through the window, enlarged, drawn at 1:1 (its PNG's own width)."""
    panel.image(view_png(grey, centre, width, zoom), caption=caption,
                width=grey.shape[1] * zoom, output_format="PNG")  # fmt: skip
