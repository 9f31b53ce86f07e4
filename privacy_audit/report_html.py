"""The audit's two self-contained HTML pages, rendered from jinja2 templates (templates/) with
autoescape on: every value from the report is escaped by the environment, not by hand.

- report.html, the auditor's: verdict first, score distributions, each flagged image beside its
  nearest training images, ROC curves, metadata findings. It shows training images: it is for
  auditors, never part of a release.
- report-public.html, what a release may carry: the same without any image of the set or of the
  training data. `write_public_html` takes the report and the two score arrays only, and its
  template's context is built from nothing else, so no image can reach it; flagged images are
  listed by file name. Both pages embed their plots (drawn from scores) as base64 PNG."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from conditioning.dataset import write_text_atomic

from .register import align_for_display
from .report import Attack, AuditReport, Sample

MAX_GALLERY = 60


def _png(image01: np.ndarray, scale: int = 2) -> str:
    from PIL import Image

    pixels = np.rint(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L")
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _score_plot(holdout: np.ndarray, synthetic: np.ndarray, threshold: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    finite = np.concatenate([holdout, synthetic])
    finite = finite[np.isfinite(finite)]
    bins = np.linspace(finite.min(), max(finite.max(), threshold) + 1e-6, 60)
    ax.hist(holdout, bins=bins, alpha=0.6, density=True, label=f"held-out real (n={len(holdout)})")
    ax.hist(synthetic, bins=bins, alpha=0.6, density=True, label=f"synthetic (n={len(synthetic)})")
    ax.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set_xlabel("copy score (higher = closer to a training image)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return _figure(fig)


def _roc_plot(curves: dict[str, Attack]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for name, entry in curves.items():
        fpr, tpr = np.array(entry.roc.fpr), np.array(entry.roc.tpr)
        for ax in axes:
            ax.plot(fpr, tpr, label=f"{name} (AUC {entry.auc:.3f})")
    for ax, log in zip(axes, (False, True), strict=True):
        ax.plot([1e-3, 1], [1e-3, 1], color="grey", linestyle=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(1e-3, 1)
            ax.set_ylim(1e-3, 1)
            ax.set_title("log scale", fontsize=9)
    axes[0].legend(fontsize=7)
    return _figure(fig)


TEMPLATES = Path(__file__).parent / "templates"
AUDITOR_TEMPLATE = "report.html"
PUBLIC_TEMPLATE = "report-public.html"


def _template(name: str):
    """A template of templates/, from an environment that escapes every value."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def _page(report: AuditReport, holdout_scores: np.ndarray, synthetic_scores: np.ndarray) -> dict:
    """What both pages show: the report's numbers and texts and two plots drawn from scores
    (no image of the set or of the training data)."""
    summary, thresholds = report.summary, report.thresholds.copy
    mia = summary.model_membership
    curves = {"DOMIAS (released set)": summary.domias}
    curves.update({f"model {k}": v for k, v in (mia.attacks or {}).items()})
    flagged = _by_score(report, True)
    encoder = report.encoder
    return {
        "passed": report.passed,
        "verdict": report.verdict,
        "reasons": report.reasons,
        "synthetic_set": report.set,
        "set_sha256": report.set_sha256,
        "dataset": report.dataset,
        "created": report.created,
        "checks": report.checks,
        "copy": summary.copy_detection,
        "thresholds": thresholds,
        "score_plot": _score_plot(holdout_scores, synthetic_scores, thresholds.threshold),
        "flagged": len(flagged),
        "shown": MAX_GALLERY,
        "flag_rows": [_flag_row(report.samples[i]) for i in flagged[:MAX_GALLERY]],
        "dcr": summary.dcr,
        "attacks_skipped": None if mia.ran else mia.skipped,
        "attacks": list(curves.items()),
        "roc_plot": _roc_plot(curves),
        "findings_total": len(report.metadata_findings),
        "findings": report.metadata_findings[:500],
        "encoder": {
            "trained_by": encoder.trained_by,
            "objective": encoder.objective,
            "train_seconds": "?" if encoder.train_seconds is None else encoder.train_seconds,
            "final_loss": "?" if encoder.final_loss is None else encoder.final_loss,
            "reused_from_cache": encoder.reused_from_cache,
        },
    }


def _flag_row(sample: Sample) -> dict:
    """A flagged image in the public table: its file, scores and nearest training id."""
    near = sample.nearest[0] if sample.nearest else None
    return {
        "file": sample.file,
        "score": sample.score,
        "p_value": sample.p_value,
        "nearest_id": near.id if near else "-",
        "nearest_ncc": near.ncc if near else float("nan"),
    }


def _by_score(report: AuditReport, flagged: bool) -> list[int]:
    """Indices of the samples flagged (or not), highest score first."""
    rows = [i for i, s in enumerate(report.samples) if s.flagged == flagged]
    rows.sort(key=lambda i: -report.samples[i].score)
    return rows


def _gallery(report: AuditReport, arrays: dict, rows: list[int]) -> list[dict]:
    """The auditor's gallery rows: each synthetic image, its nearest training images and, for
    the first, that image aligned onto it by the transform registration found."""
    out = []
    for i in rows:
        sample = report.samples[i]
        nearest = []
        for n in sample.nearest:
            image = arrays["train_images"][arrays["train_index"][n.id]]
            found = arrays.get("transforms", {}).get((i, n.id))
            aligned = None
            if found is not None and n is sample.nearest[0]:
                aligned = {"src": _png(align_for_display(image, found)), "transform": n.transform}
            nearest.append(
                {"match": n, "src": _png(image), "extra": n.local_scores(), "aligned": aligned}
            )
        out.append(
            {"sample": sample, "src": _png(arrays["synthetic_images"][i]), "nearest": nearest}
        )
    return out


def render(report: AuditReport, arrays: dict) -> str:
    """The auditor's page: the shared page, the flagged images beside their nearest training
    images and the closest images that were not flagged, to judge the threshold by."""
    page = _page(report, arrays["holdout_scores"], arrays["synthetic_scores"])
    flagged = _by_score(report, True)[:MAX_GALLERY]
    closest = _by_score(report, False)[:8]
    return _template(AUDITOR_TEMPLATE).render(
        **page,
        flagged_gallery=_gallery(report, arrays, flagged),
        closest_gallery=_gallery(report, arrays, closest),
    )


def render_public(
    report: AuditReport, holdout_scores: np.ndarray, synthetic_scores: np.ndarray
) -> str:
    """The public page: built from the report and the scores alone, so it cannot show an image
    of the set or of the training data."""
    return _template(PUBLIC_TEMPLATE).render(**_page(report, holdout_scores, synthetic_scores))


def write_html(path: str | Path, report: AuditReport, arrays: dict) -> None:
    """The auditor's page, written atomically."""
    write_text_atomic(path, render(report, arrays))


def write_public_html(
    path: str | Path,
    report: AuditReport,
    holdout_scores: np.ndarray,
    synthetic_scores: np.ndarray,
) -> None:
    """The public page (no image: see render_public), written atomically."""
    write_text_atomic(path, render_public(report, holdout_scores, synthetic_scores))
