"""The auditor's self-contained HTML report: verdict first, score distributions, each flagged
image beside its nearest training images, ROC curves, metadata findings. Images and plots are
embedded as base64 PNG. It shows training images: it is for auditors, never part of a release."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from conditioning.dataset import write_text_atomic

from .register import align_for_display

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


def _roc_plot(curves: dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for name, entry in curves.items():
        fpr, tpr = np.array(entry["roc"]["fpr"]), np.array(entry["roc"]["tpr"])
        for ax in axes:
            ax.plot(fpr, tpr, label=f"{name} (AUC {entry['auc']:.3f})")
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


def _fmt_ci(ci) -> str:
    return f"{ci[0]:.3f} - {ci[1]:.3f}"


def _gallery(report: dict, arrays: dict, rows: list[int]) -> str:
    parts = []
    for i in rows:
        sample = report["samples"][i]
        cells = [
            f"<td><img src='{_png(arrays['synthetic_images'][i])}'><br>"
            f"<b>{html.escape(sample['file'])}</b><br>score {sample['score']:.2f}, "
            f"p {sample['p_value']:.4f}</td>"
        ]
        for n in sample["nearest"]:
            image = arrays["train_images"][arrays["train_index"][n["id"]]]
            patch = "".join(
                f", {name.replace('_', ' ')} {n[name]:.3f}"
                for name in ("patch", "detail", "detail_patch")
                if n.get(name) is not None
            )
            cells.append(
                f"<td><img src='{_png(image)}'><br>train {html.escape(n['id'])}<br>"
                f"score {n['score']:.2f}, cos {n['embedding_cosine']:.3f}, NCC {n['ncc']:.3f}"
                f"{patch}</td>"
            )
            found = arrays.get("transforms", {}).get((i, n["id"]))
            if found is not None and n is sample["nearest"][0]:
                t = n["transform"]
                cells.append(
                    f"<td><img src='{_png(align_for_display(image, found))}'><br>aligned onto "
                    f"the synthetic image<br>{'mirrored, ' if t['mirror'] else ''}rotated "
                    f"{t['rotation_deg']:+.1f}&deg;, scale {t['scale']:.3f}, shift "
                    f"{t['shift_px'][0]:+.0f}/{t['shift_px'][1]:+.0f} px</td>"
                )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    return "<table class='gallery'>" + "".join(parts) + "</table>"


def _flag_table(report: dict, rows: list[int]) -> str:
    """The public report's stand-in for the gallery: files and scores, no image."""
    lines = [
        "<table><tr><th>synthetic image</th><th>score</th><th>p-value</th>"
        "<th>nearest training image (id, NCC)</th></tr>"
    ]
    for i in rows:
        s = report["samples"][i]
        near = s["nearest"][0] if s["nearest"] else {"id": "-", "ncc": float("nan")}
        lines.append(
            f"<tr><td>{html.escape(s['file'])}</td><td>{s['score']:.2f}</td>"
            f"<td>{s['p_value']:.4f}</td><td>{html.escape(near['id'])}, {near['ncc']:.3f}</td></tr>"
        )
    return "".join(lines) + "</table>"


def render(report: dict, arrays: dict, public: bool = False) -> str:
    """The auditor's page, or with `public` the same without any image of the set or of the
    training data (for a release). Each section is a list of lines, joined by newlines."""
    out = [
        *_header(report, public),
        *_checks_table(report),
        *_copy_section(report, arrays),
        *_flagged_section(report, arrays, public),
        *_membership_section(report),
        *_findings_section(report),
        _encoder_section(report),
    ]
    return "\n".join(out)


def _header(report: dict, public: bool) -> list[str]:
    """Style, verdict and reasons, and what was audited against what."""
    ok = report["verdict"] == "pass"
    dataset = report["dataset"]
    return [
        "<!doctype html><html><head><meta charset='utf-8'><title>RadSynth privacy audit</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        ".verdict{padding:1em;border-radius:6px;font-size:1.3em;color:white;background:"
        f"{'#2e7d32' if ok else '#c62828'}}}table{{border-collapse:collapse}}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:0.9em;vertical-align:top}"
        ".gallery td{text-align:center}</style></head><body>",
        f"<div class='verdict'>Verdict: {report['verdict'].upper()}</div><ul>",
        *[f"<li>{html.escape(r)}</li>" for r in report["reasons"]],
        "</ul>",
        f"<p>Set <b>{html.escape(report['set']['name'])}</b> ({report['set']['images']} images, "
        f"sha256 <code>{report['set_sha256']}</code>) against dataset "
        f"<b>{html.escape(dataset['name'])}</b> (train split "
        f"{dataset['train_split']!r}: {dataset['train_images_deduplicated']}"
        f" distinct images of {dataset['train_patients']} patients; held-out split "
        f"{dataset['holdout_split']!r}: {dataset['holdout_images']} images). "
        f"Audited {html.escape(report['created'])}. "
        + (
            "This summary shows no image; the auditor's report.html does.</p>"
            if public
            else "This report shows training images: it is for auditors only and must not be "
            "released (report-public.html is the version without images).</p>"
        ),
    ]


def _checks_table(report: dict) -> list[str]:
    return [
        "<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>",
        *[
            f"<tr><td>{c['name']}</td><td>{'pass' if c['passed'] else '<b>FAIL</b>'}</td>"
            f"<td>{html.escape(c['detail'])}</td></tr>"
            for c in report["checks"]
        ],
        "</table>",
    ]


def _copy_section(report: dict, arrays: dict) -> list[str]:
    """The copy-detection rule and rates, and the score distributions against the threshold."""
    copy = report["summary"]["copy_detection"]
    thresholds = report["thresholds"]["copy"]
    plot = _score_plot(
        arrays["holdout_scores"], arrays["synthetic_scores"], thresholds["threshold"]
    )
    return [
        "<h2>Copy detection</h2>",
        f"<p>Flagged {copy['flagged']} of {copy['synthetic_images']} "
        f"({100 * copy['flagged_rate']:.2f}%, 95% Wilson CI "
        f"{100 * copy['flagged_rate_ci95'][0]:.2f}-{100 * copy['flagged_rate_ci95'][1]:.2f}%); "
        f"a set without copies would have about {100 * copy['expected_rate_without_copies']:.2f}% "
        f"flagged by chance. Rule: {html.escape(thresholds['rule'])}; threshold "
        f"{thresholds['threshold']:.3f}, {html.escape(thresholds['how_set'])}. Score: "
        f"{html.escape(thresholds['score'])}. Distinct training patients matched by flagged "
        f"images: {copy['distinct_training_patients_matched']}.</p>",
        f"<img src='{plot}'>",
    ]


def _by_score(report: dict, flagged: bool) -> list[int]:
    """Indices of the samples flagged (or not), highest score first."""
    rows = [i for i, s in enumerate(report["samples"]) if bool(s["flagged"]) == flagged]
    rows.sort(key=lambda i: -report["samples"][i]["score"])
    return rows


def _flagged_section(report: dict, arrays: dict, public: bool) -> list[str]:
    """Flagged images (the public page: a table without images); for the auditor also the
    closest images that were not flagged, to judge the threshold by."""
    out = []
    flagged = _by_score(report, True)
    if flagged:
        out.append(
            f"<h3>Flagged images{'' if public else ' beside their nearest training images'} "
            f"({len(flagged)}"
            f"{f', highest {MAX_GALLERY} shown' if len(flagged) > MAX_GALLERY else ''})</h3>"
        )
        if public:
            out.append(_flag_table(report, flagged[:MAX_GALLERY]))
        else:
            out.append(_gallery(report, arrays, flagged[:MAX_GALLERY]))
    unflagged = _by_score(report, False)
    if unflagged and not public:
        out.append("<h3>Closest images that were not flagged (for judgement)</h3>")
        out.append(_gallery(report, arrays, unflagged[:8]))
    return out


def _membership_section(report: dict) -> list[str]:
    """DCR, then each membership attack's AUC and TPR with intervals, and their ROC curves."""
    dcr = report["summary"]["dcr"]
    out = [
        "<h2>Membership inference</h2>"
        f"<p>DCR: {100 * dcr['share_closer_to_train']:.1f}% of synthetic images are closer to "
        f"a training image than to a held-out one (95% CI {_fmt_ci(dcr['share_ci95'])}; 50% is "
        f"ideal; equal-size references of {dcr['reference_size']}, {dcr['repeats']} repeats).</p>"
    ]
    curves = {"DOMIAS (released set)": report["summary"]["domias"]}
    mia = report["summary"]["model_membership"]
    if "attacks" in mia:
        curves.update({f"model {k}": v for k, v in mia["attacks"].items()})
    else:
        out.append(f"<p>Attacks on the model: {html.escape(mia.get('skipped', 'not run'))}.</p>")
    out.append(
        "<table><tr><th>attack</th><th>AUC</th><th>95% CI</th><th>TPR at 1% FPR</th>"
        "<th>95% CI</th><th>members / non-members</th></tr>"
    )
    for name, e in curves.items():
        out.append(
            f"<tr><td>{html.escape(name)}</td><td>{e['auc']:.3f}</td><td>{_fmt_ci(e['auc_ci95'])}"
            f"</td><td>{e['tpr_at_1pct_fpr']:.3f}</td><td>{_fmt_ci(e['tpr_at_1pct_fpr_ci95'])}</td>"
            f"<td>{e['members']} / {e['nonmembers']}</td></tr>"
        )
    out.append(f"</table><img src='{_roc_plot(curves)}'>")
    return out


def _findings_section(report: dict) -> list[str]:
    findings = report["metadata_findings"]
    out = [f"<h2>Metadata and leakage scan ({len(findings)} finding(s))</h2>"]
    if findings:
        out.append("<table><tr><th>file</th><th>severity</th><th>kind</th><th>found</th></tr>")
        out += [
            f"<tr><td>{html.escape(f['file'])}</td><td>{f['severity']}</td><td>{f['kind']}</td>"
            f"<td>{html.escape(f['detail'])}</td></tr>"
            for f in findings[:500]
        ]
        out.append("</table>")
    return out


def _encoder_section(report: dict) -> str:
    enc = report["encoder"]
    return (
        "<h2>Copy-detection encoder</h2>"
        f"<p>Trained by {html.escape(enc.get('trained_by', ''))}; objective: "
        f"{html.escape(enc.get('objective', ''))}; {enc.get('train_seconds', '?')} s, final loss "
        f"{enc.get('final_loss', '?')}; reused from cache: {enc.get('reused_from_cache')}.</p>"
        "</body></html>"
    )


def write_html(path: str | Path, report: dict, arrays: dict, public: bool = False) -> None:
    """Render and write atomically."""
    write_text_atomic(path, render(report, arrays, public))
