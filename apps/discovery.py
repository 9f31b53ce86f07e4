"""What lies under the data root: trained models, datasets, synthetic sets, releases and audit
reports, found by their marker files (no registry to keep in sync).

The walk is bounded (depth, pruned folders, symlinked folders not followed) so pointing the app
at a repository with a virtualenv or thousands of images stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

MAX_DEPTH = 5
PRUNE = {
    "images",
    "masks",
    "checkpoints",
    "samples",
    "__pycache__",
    "node_modules",
    "site-packages",
}
MODEL_KIND = "latent-diffusion"  # generation's run layout: config.json + unet.safetensors,
# in latent or pixel space alike (literal here: importing generation.pipeline would pull in torch
# on every page)


@dataclass
class Catalog:
    """Relative POSIX paths (to the data root) of everything the app can open."""

    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    synthetic_sets: list[str] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)  # report.json files


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scan(root: Path) -> Catalog:
    root = root.resolve()
    found = Catalog()
    for current, dirs, files in os.walk(root):
        here = Path(current)
        rel = here.relative_to(root)
        depth = len(rel.parts)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and d not in PRUNE and depth < MAX_DEPTH
        )
        names = set(files)
        name = rel.as_posix() or "."
        if "config.json" in names and "unet.safetensors" in names:
            config = _json(here / "config.json")
            if config and config.get("kind") == MODEL_KIND:
                found.models.append(name)
        if "dataset.json" in names and "manifest.csv" in names:
            found.datasets.append(name)
        elif "manifest.csv" in names and (here / "images").is_dir():
            found.synthetic_sets.append(name)
        if "report.json" in names:
            report = _json(here / "report.json")
            if report and "verdict" in report:
                found.reports.append((rel / "report.json").as_posix())
        if len(rel.parts) == 2 and rel.parts[0] == "releases":
            found.releases.append(name)
    return found
