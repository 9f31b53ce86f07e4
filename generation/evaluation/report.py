"""Writing evaluation outputs atomically: JSON, CSV tables for `dvc plots`, text."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from conditioning.dataset import write_json_atomic, write_text_atomic


def clean_json(value: Any) -> Any:
    """NaN/inf to None (JSON null), numpy scalars to Python, recursively."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics_json(path: str | Path, metrics: dict) -> None:
    write_json_atomic(path, clean_json(metrics))


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of one shape as CSV (the header is the union of keys, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cleaned = clean_json(row)
        writer.writerow({k: "" if cleaned.get(k) is None else cleaned.get(k) for k in columns})
    write_text_atomic(path, buffer.getvalue())


def baseline_rows(evaluation, attribute: str | None, rng) -> list[tuple]:
    """Per class (or one row): real images, then the same indices of the baseline set and of the
    evaluated set, so paired sets (same seed, same conditions) show what changed image by image."""
    real, base, synthetic = evaluation.real, evaluation.baseline, evaluation.synthetic

    def members(images, value) -> list[int]:
        if value is None:
            return list(range(len(images)))
        return [i for i, v in enumerate(images.values(attribute)) if v == value]

    values = [None] if attribute is None else list(dict.fromkeys(synthetic.values(attribute)))
    rows = []
    for value in values:
        ri, si, bi = (members(images, value) for images in (real, synthetic, base))
        ranks = sorted(rng.permutation(min(len(si), len(bi)))[:6])  # k-th of its class in both
        pick_r = [int(i) for i in rng.permutation(ri)[:6]]
        rows.append(
            (
                value or "all",
                real.images[pick_r],
                base.images[[bi[k] for k in ranks]],
                synthetic.images[[si[k] for k in ranks]],
            )
        )
    return rows


def write_evaluation(evaluation, out_dir: str | Path, domain=None, seed: int = 0) -> list[Path]:
    """metrics.json, plots/*.csv for `dvc plots` and PNG figures into `out_dir`; returns paths."""
    import numpy as np

    from .figures import bar_chart, comparison_grid, scatter

    out = Path(out_dir)
    written = [out / "metrics.json", out / "evaluation.json"]
    write_metrics_json(written[0], evaluation.metrics)
    write_metrics_json(written[1], evaluation.info)
    for name, rows in evaluation.tables.items():
        if rows:
            path = out / "plots" / f"{name}.csv"
            write_csv(path, rows)
            written.append(path)
    real, synthetic = evaluation.real, evaluation.synthetic
    if real is None or synthetic is None:
        return written
    rng = np.random.default_rng(seed)
    rows = []
    class_rows = [r for r in evaluation.tables.get("adherence_per_class", [])]
    attribute = class_rows[0]["attribute"] if class_rows else None
    if attribute is not None:
        for row in class_rows:
            if row["attribute"] != attribute:
                continue
            value = row["class"]
            ri = [i for i, v in enumerate(real.values(attribute)) if v == value]
            si = [i for i, v in enumerate(synthetic.values(attribute)) if v == value]
            if not ri and not si:
                continue
            pick_r = rng.permutation(ri)[:6] if ri else []
            pick_s = rng.permutation(si)[:6] if si else []
            rows.append((value, real.images[list(pick_r)], synthetic.images[list(pick_s)]))
    else:
        rows.append(
            (
                "all",
                real.images[rng.permutation(len(real))[:6]],
                synthetic.images[rng.permutation(len(synthetic))[:6]],
            )
        )
    size = max(64, real.images.shape[-1])
    path = out / "plots" / "real_vs_synthetic.png"
    comparison_grid(rows, path, size=size)
    written.append(path)
    if evaluation.baseline is not None:
        path = out / "plots" / "baseline_vs_synthetic.png"
        comparison_grid(baseline_rows(evaluation, attribute, rng), path, size=size,
                        headers=("real", "baseline", "synthetic"))  # fmt: skip
        written.append(path)
    if class_rows:
        for name in dict.fromkeys(r["attribute"] for r in class_rows):
            mine = [r for r in class_rows if r["attribute"] == name]
            path = out / "plots" / f"adherence_{name}.png"
            bar_chart(
                f"{name}: recall of the domain classifier per class",
                [r["class"] for r in mine],
                {
                    "real (true label)": [r["recall_real"] for r in mine],
                    "synthetic (requested)": [r["recall_synthetic"] for r in mine],
                },
                path,
            )
            written.append(path)
    age_rows = evaluation.tables.get("age", [])
    if age_rows and domain is not None:
        for name in dict.fromkeys(r["attribute"] for r in age_rows):
            mine = [r for r in age_rows if r["attribute"] == name]
            attribute = domain.schema[name]
            path = out / "plots" / f"{name}_requested_vs_predicted.png"
            scatter(
                f"{name}: requested vs domain regressor",
                [r["requested"] for r in mine],
                [r["predicted"] for r in mine],
                (attribute.minimum, attribute.maximum),
                path,
            )
            written.append(path)
    return written
