"""lineage.json: which data, model, parameters and code made a release, as hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privacy_audit.report import AuditReport


LINEAGE_VERSION = 1


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version(repo: Path | None = None) -> dict[str, Any]:
    """The git commit of the code that ran, and whether the work tree had changes."""
    from importlib.metadata import PackageNotFoundError, version

    here = repo or Path(__file__).resolve().parents[2]
    info: dict[str, Any] = {}
    try:
        info["package_version"] = version("radsynth")
    except PackageNotFoundError:
        info["package_version"] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info.update(git_commit=commit, git_dirty=bool(dirty))
    except (OSError, subprocess.CalledProcessError):
        info.update(git_commit=None, git_dirty=None)
    return info


def _model_info(model_dir: Path) -> dict[str, Any]:
    import json

    info: dict[str, Any] = {"weights_sha256": {}}
    for weights in sorted(model_dir.rglob("*.safetensors")):
        if "checkpoint" in weights.parts[-2]:
            continue
        info["weights_sha256"][weights.relative_to(model_dir).as_posix()] = file_sha256(weights)
    card = model_dir / "model_card.json"
    if card.is_file():
        info["model_card"] = without_local_paths(json.loads(card.read_text(encoding="utf-8")))
    return info


def without_local_paths(value: Any) -> Any:
    """A copy where every absolute path is cut to its last part: a release names runs, never
    where they lay on the machine that made it (older model cards hold such paths)."""
    if isinstance(value, dict):
        return {k: without_local_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_local_paths(v) for v in value]
    if isinstance(value, str) and re.match(r"^(/|~/|[A-Za-z]:[\\/]|\\\\)", value):
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return value


def build_lineage(inputs, *, synthetic_sha256: str, report: AuditReport) -> dict[str, Any]:
    """Hashes of dataset, model, params and code, plus the audit it passed."""
    from privacy_audit.report import REPORT_JSON, read_report

    lineage: dict[str, Any] = {
        "lineage_version": LINEAGE_VERSION,
        "release": inputs.name,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "synthetic_set_sha256": synthetic_sha256,
        "audit": {
            "verdict": report.verdict,
            "report_sha256": file_sha256(inputs.report_dir / REPORT_JSON),
            "schema_version": report.schema_version,
        },
        "code": code_version(),
    }
    if inputs.screening_report_dir is not None:
        screening = read_report(inputs.screening_report_dir)
        copies = screening.summary.copy_detection
        lineage["screening_audit"] = {
            "verdict": screening.verdict,
            "report_sha256": file_sha256(inputs.screening_report_dir / REPORT_JSON),
            "generated_images": copies.synthetic_images,
            "flagged_and_removed": copies.flagged,
            "set_sha256": screening.set_sha256,
        }
    if inputs.dataset_dir is not None:
        from conditioning.dataset import load_dataset

        dataset = load_dataset(inputs.dataset_dir)
        lineage["dataset"] = {
            "name": dataset.name,
            "content_sha256": dataset.content_hash(),
            "counts": dataset.info["counts"],
            "image_size": dataset.image_size,
            "modality": dataset.info["modality"],
        }
    if inputs.model_dir is not None:
        lineage["model"] = _model_info(inputs.model_dir)
    if inputs.params_file is not None and inputs.params_file.is_file():
        lineage["params_sha256"] = file_sha256(inputs.params_file)
    return lineage
