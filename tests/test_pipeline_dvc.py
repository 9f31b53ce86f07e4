"""The whole chain as a DVC pipeline on the smoke profile, in a temporary repository:
`dvc repro` builds a release, a second `dvc repro` does nothing, and changing a generation
parameter re-runs only generate, audit, evaluate and release."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conditioning.dataset.pixels import write_png
from tests.conftest import REPO

pytestmark = pytest.mark.slow
CODE = ("conditioning", "generation", "privacy_audit", "pipelines")


def _tiny_source(root: Path, per_class: int = 40, size: int = 32) -> Path:
    """Class folders of PNGs whose classes differ visibly; each image its own patient."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for c, label in enumerate(("normal", "viral")):
        for i in range(per_class):
            cx = 0.3 + 0.4 * c + rng.uniform(-0.05, 0.05)
            disc = ((xx - cx) ** 2 + (yy - rng.uniform(0.3, 0.7)) ** 2) < 0.03
            image = 0.25 + 0.5 * disc + 0.08 * rng.standard_normal((size, size))
            write_png(
                root / label / f"{label}{i:03d}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8)
            )
    return root


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(
        os.environ,
        DVC_NO_ANALYTICS="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    env["RADSYNTH_PSEUDONYM_KEY_FILE"] = str(cwd / ".." / "pseudonym.key")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout + result.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


def test_dvc_repro_smoke_profile(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    for folder in CODE:
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["ingest"] = {"source": str(_tiny_source(tmp_path / "source")), "size": 32, "seed": 0,
                        "val_fraction": 0.3, "test_fraction": 0.15}  # fmt: skip
    params["release"] = {"name": "smoke", "exports": ["datalist", "dicom"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], repo)

    first = _run([sys.executable, "-m", "dvc", "repro"], repo)
    # the chain writes only ignored outputs: no tracked file changes (params.yaml included)
    assert _run(["git", "status", "--porcelain", "--untracked-files=no"], repo) == ""
    assert _ran(first) == ["ingest", "train_autoencoder", "train_diffusion", "generate", "audit",
                           "evaluate", "utility", "release"]  # fmt: skip
    release = repo / "releases" / "smoke"
    assert (release / "datasheet.md").is_file() and (release / "audit" / "report.json").is_file()
    screening = json.loads((repo / "runs" / "audit" / "report.json").read_text())
    flagged = sum(sample["flagged"] for sample in screening["samples"])
    generated = params["profiles"]["smoke"]["generate"]["n"]
    assert len(screening["samples"]) == generated
    assert len(list((release / "images").glob("*.png"))) == generated - flagged
    sheet = (release / "datasheet.md").read_text()
    assert f"{flagged} of {generated} generated images" in sheet
    # the datasheet states the set's detectability and the recipe measured on it, with its gain
    detect = json.loads((repo / "runs" / "evaluation" / "metrics.json").read_text())[
        "detectability"
    ]
    assert f"AUROC {detect['auroc']:.3f}" in sheet
    utility = json.loads((repo / "runs" / "utility" / "utility.json").read_text())
    (advice,) = utility["recommendation"]["regimes"].values()
    assert f"macro-AUROC {advice['best']['macro_auroc_gain']:+.3f}" in sheet
    assert "## How to use this set" in sheet and "radsynth bench utility" in sheet
    metrics = _run([sys.executable, "-m", "dvc", "metrics", "show"], repo)
    assert "runs/evaluation/metrics.json" in metrics

    again = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert _ran(again) == []

    params["profiles"]["smoke"]["generate"]["seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert _ran(changed) == ["generate", "audit", "evaluate", "utility", "release"]
