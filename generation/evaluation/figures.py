"""PNG figures of an evaluation, drawn with Pillow: real-vs-synthetic sample grid per class,
per-class adherence bars (real vs synthetic) and requested-vs-predicted age."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conditioning.dataset import atomic_open

GAP = 4
LABEL_WIDTH = 110


def _save_png(image, path: str | Path) -> None:
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")


def _tile(image01: np.ndarray, size: int):
    from PIL import Image

    tile = Image.fromarray(np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8), mode="L")
    return tile.resize((size, size), Image.BILINEAR) if tile.size != (size, size) else tile


def comparison_grid(
    rows: list[tuple],
    path: str | Path,
    per_side: int = 6,
    size: int = 64,
    headers: tuple[str, ...] = ("real", "synthetic"),
) -> None:
    """One row per group: its name, then `per_side` images of each column (real, synthetic; or
    real, baseline, synthetic), a gap between columns."""
    from PIL import Image, ImageDraw

    block = per_side * (size + 2) + 2 * GAP
    width = LABEL_WIDTH + len(headers) * block + GAP
    height = 20 + len(rows) * (size + GAP)
    canvas = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(canvas)
    starts = [LABEL_WIDTH + c * block for c in range(len(headers))]
    for start, header in zip(starts, headers, strict=True):
        draw.text((start, 4), header, fill=0)
    for r, (name, *columns) in enumerate(rows):
        top = 20 + r * (size + GAP)
        draw.text((4, top + size // 2 - 6), name[:18], fill=0)
        for start, images in zip(starts, columns, strict=True):
            for i, image in enumerate(images[:per_side]):
                canvas.paste(_tile(image, size), (start + i * (size + 2), top))
    _save_png(canvas, path)


def bar_chart(
    title: str, labels: list[str], series: dict[str, list[float]], path: str | Path
) -> None:
    """Grouped bars of values in [0, 1] (NaN drawn as missing)."""
    from PIL import Image, ImageDraw

    shades = [90, 170, 40, 210]
    plot_h, bar_w = 200, 22
    group_w = bar_w * len(series) + 20
    width = max(320, 60 + group_w * len(labels))
    canvas = Image.new("L", (width, plot_h + 90), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 5), title, fill=0)
    base = plot_h + 30
    draw.line((45, 30, 45, base), fill=0)
    draw.line((45, base, width - 5, base), fill=0)
    for tick in (0.0, 0.5, 1.0):
        y = base - tick * plot_h
        draw.text((10, y - 6), f"{tick:.1f}", fill=0)
        draw.line((42, y, 45, y), fill=0)
    for g, label in enumerate(labels):
        x0 = 55 + g * group_w
        for s, values in enumerate(series.values()):
            value = values[g]
            if value is None or value != value:
                continue
            x = x0 + s * bar_w
            draw.rectangle(
                (x, base - value * plot_h, x + bar_w - 4, base), fill=shades[s % 4], outline=0
            )
        draw.text((x0, base + 5), label[:12], fill=0)
    for s, name in enumerate(series):
        y = base + 25 + 14 * s
        draw.rectangle((55, y, 65, y + 10), fill=shades[s % 4], outline=0)
        draw.text((72, y - 1), name, fill=0)
    _save_png(canvas, path)


def scatter(
    title: str, x: list[float], y: list[float], limits: tuple[float, float], path: str | Path
) -> None:
    """Requested (x) against predicted (y) with the identity line."""
    from PIL import Image, ImageDraw

    side, margin = 260, 40
    canvas = Image.new("L", (side + 2 * margin, side + 2 * margin), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 5), title, fill=0)
    lo, hi = limits
    span = (hi - lo) or 1.0

    def px(vx: float, vy: float) -> tuple[float, float]:
        return margin + (vx - lo) / span * side, margin + side - (vy - lo) / span * side

    draw.rectangle((margin, margin, margin + side, margin + side), outline=0)
    draw.line((*px(lo, lo), *px(hi, hi)), fill=160)
    for vx, vy in zip(x, y, strict=True):
        cx, cy = px(vx, vy)
        draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=0)
    draw.text((margin, margin + side + 5), f"x: requested, y: predicted ({lo:g}..{hi:g})", fill=0)
    _save_png(canvas, path)
