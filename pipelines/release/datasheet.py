"""datasheet.md: what a downstream team must know before training on a release
(in the spirit of "Datasheets for Datasets", Gebru et al.)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from privacy_audit.report import AuditReport, to_json

AGE_BANDS = ((0, 12), (12, 36), (36, 72), (72, 144), (144, 240))


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _distribution(rows: list[dict], name: str) -> list[str]:
    values = [r.get(name, "") for r in rows]
    known = [v for v in values if v not in ("", None)]
    if known and all(_is_number(v) for v in known):
        numbers = [float(v) for v in known]
        lines = [f"- `{name}`: {len(numbers)} values, min {min(numbers):g}, max {max(numbers):g}"]
        for lo, hi in AGE_BANDS if "age" in name else ():
            n = sum(lo <= x < hi for x in numbers)
            lines.append(f"  - {lo}-{hi} months: {n} ({100 * n / len(numbers):.1f}%)")
        return lines
    tally = Counter(values)
    total = len(values)
    return [
        f"- `{name}`: "
        + ", ".join(
            f"{v or 'unconditioned'} {n} ({100 * n / total:.1f}%)" for v, n in sorted(tally.items())
        )
    ]


def _balance_warnings(rows: list[dict], names: list[str]) -> list[str]:
    notes = []
    for name in names:
        values = [r.get(name, "") for r in rows if r.get(name, "") != ""]
        if not values or all(_is_number(v) for v in values):
            continue
        tally = Counter(values)
        most, least = max(tally.values()), min(tally.values())
        if least and most / least > 1.5:
            notes.append(
                f"- `{name}` is imbalanced: largest class {most} vs smallest {least} images."
            )
    return notes


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    elif (
        isinstance(value, list | tuple)
        and len(value) <= 4
        and all(isinstance(v, int | float) for v in value)
    ):
        out.append(f"- {prefix}: {', '.join(f'{v:.4g}' for v in value)}")
    elif isinstance(value, int | float | str | bool) or value is None:
        out.append(f"- {prefix}: {value if not isinstance(value, float) else f'{value:.4g}'}")


def _f(value: Any, sign: bool = False) -> str:
    if not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def quality_lines(metrics: dict[str, Any] | None) -> list[str]:
    """Fidelity and detectability from `radsynth evaluate`'s metrics.json."""
    if not metrics:
        return ["- not evaluated (release with `--evaluation DIR` of `radsynth evaluate`)."]
    fd = metrics.get("fd", {})
    lines = [
        f"- Frechet distance to real test images {_f(fd.get('synthetic_vs_real'))} "
        f"(two real splits: {_f(fd.get('real_vs_real'))})"
    ]
    detect = metrics.get("detectability")
    if detect:
        low, high = detect["interval"]
        lines.append(
            f"- detectability: a real-vs-synthetic classifier reaches AUROC {_f(detect['auroc'])} "
            f"[95% {_f(low)}-{_f(high)}] against {detect['n_real']} held-out real "
            f"`{detect.get('real_split', '?')}` images (0.5: cannot tell them apart; 1: every "
            "image gives itself away). A downstream model can learn that look as a shortcut."
        )
        for value, row in detect.get("per_class", {}).items():
            lines.append(f"  - {value}: {_f(row['auroc'])}")
    return lines


def usage_lines(utility: dict[str, Any] | None) -> list[str]:
    """ "How to use this set": the recipe measured to help (`radsynth bench utility`), or a plain
    statement that none was measured or none helped."""
    if not utility:
        return [
            "- No downstream gain was measured for this set. Measure before relying on it:",
            "  `radsynth bench utility --synthetic THIS_SET ...` compares the recipes.",
        ]
    advice = utility.get("recommendation", {}).get("regimes", {})
    if not advice:
        notes = "; ".join(utility.get("notes", [])) or "no regime had a recipe to compare"
        return [f"- No downstream gain could be measured for this set: {notes}."]
    lines = [f"- measured by `{utility.get('command', 'radsynth bench utility')}`"]
    scarce = utility.get("config", {}).get("scarce_class", "")
    for regime, entry in advice.items():
        best = entry["best"]
        low, high = best["macro_auroc_gain_ci95"]
        rlow, rhigh = best.get(f"recall_{scarce}_gain_ci95", [None, None])
        measured = (
            f"macro-AUROC {_f(best['macro_auroc_gain'], True)} [95% {_f(low, True)}, "
            f"{_f(high, True)}], {scarce} recall {_f(best.get(f'recall_{scarce}_gain'), True)} "
            f"[{_f(rlow, True)}, {_f(rhigh, True)}] over real images alone ({best['seeds']} seeds)"
        )
        if entry["recipe"]:
            lines.append(
                f"- regime `{regime}`: use recipe **{entry['recipe']}** ({best['description']}): "
                f"{measured}."
            )
        else:
            lines.append(
                f"- regime `{regime}`: no recipe was measured to help; the best, "
                f"`{best['arm']}`, gave {measured}. Train on the real images alone here."
            )
    return lines


def render_datasheet(
    name: str,
    rows: list[dict],
    condition_names: list[str],
    lineage: dict[str, Any],
    report: AuditReport,
    metrics: dict[str, Any] | None = None,
    utility: dict[str, Any] | None = None,
) -> str:
    lines = [
        f"# Datasheet: synthetic release `{name}`",
        "",
        "**Every image in this release is synthetic.** It was generated by a RadSynth latent diffusion",
        "model and shows no real patient. It passed the RadSynth privacy audit before release.",
        "",
        *_generated_lines(rows, condition_names),
        "",
        *_data_lines(lineage.get("dataset", {})),
        "",
        *_model_lines(lineage),
        "",
        *INTENDED_USE,
        "",
        "## Fidelity and detectability",
        *quality_lines(metrics),
        "",
        "## How to use this set",
        *usage_lines(utility),
        "",
        "## Known biases",
        *(
            _balance_warnings(rows, condition_names)
            or ["- no class imbalance above 1.5x among the requested conditions."]
        ),
        "- The training data's own biases (one hospital, its age and sex mix) carry over to the model.",
        "",
        *_audit_lines(report, lineage),
    ]
    return "\n".join(lines)


INTENDED_USE = [
    "## Intended use and limits",
    "- Intended: augmenting the training of research models (classification, regression, segmentation),",
    "  especially for rare classes and under-represented age bands, always evaluated on real patients.",
    "- Not intended: clinical decisions, evaluating a model (test on real data only), or estimating",
    "  disease prevalence (the class mix was chosen at generation time, see above).",
    "- The model learnt from a single source; images carry its acquisition style, resolution and",
    "  artefacts (e.g. burned-in side markers), and may omit rare findings that the training data lacked.",
]


def _generated_lines(rows: list[dict], condition_names: list[str]) -> list[str]:
    """What was generated: counts, sampler settings and the requested conditions."""
    generation = Counter(
        (r.get("sampler", ""), r.get("steps", ""), r.get("guidance", "")) for r in rows
    )
    with_masks = sum(1 for r in rows if r.get("mask_file"))
    return [
        "## What was generated",
        f"- {len(rows)} images" + (f", {with_masks} with masks" if with_masks else ""),
        *(
            f"- sampler {s or '?'}, {st or '?'} steps, guidance {g or '?'}: {n} images"
            for (s, st, g), n in generation.items()
        ),
        "- conditions requested:",
        *(("  " + line) for n in condition_names for line in _distribution(rows, n)),
    ]


def _data_lines(dataset: dict[str, Any]) -> list[str]:
    lines = [
        "## From what data",
        f"- dataset `{dataset.get('name', 'unknown')}` ({dataset.get('modality', '?')}, image size "
        f"{dataset.get('image_size', '?')}), content hash `{dataset.get('content_sha256', 'not recorded')}`",
    ]
    for split, counts in (dataset.get("counts") or {}).items():
        lines.append(
            f"- {split}: {counts.get('images', '?')} images of {counts.get('patients', '?')} patients"
        )
    return lines


def _model_lines(lineage: dict[str, Any]) -> list[str]:
    """The model's weights, its card's training parameters, params.yaml and the code commit."""
    model = lineage.get("model", {})
    card = model.get("model_card", {})
    lines = [
        "## By which model and parameters",
        f"- model weights: {', '.join(f'`{k}` {v[:16]}' for k, v in model.get('weights_sha256', {}).items()) or 'not recorded'}",
    ]
    kept = ("space", "params", "steps", "wall_time_s", "profile", "metrics", "parent")
    _flatten("", {k: v for k, v in card.items() if k in kept}, lines)
    code = lineage.get("code", {})
    return [
        *lines,
        f"- params.yaml sha256: `{lineage.get('params_sha256', 'not recorded')}`",
        f"- code: commit `{code.get('git_commit')}` (dirty: {code.get('git_dirty')})",
    ]


def _audit_lines(report: AuditReport, lineage: dict[str, Any]) -> list[str]:
    """The audit's verdict, the screening that came before it, and its summary."""
    lines = ["## Privacy audit", f"- verdict: **{report.verdict}**"]
    screening = lineage.get("screening_audit")
    if screening:
        lines.append(
            f"- screening: {screening.get('flagged_and_removed')} of {screening.get('generated_images')} "
            "generated images were closer to a training image than real new patients are, and were "
            "removed before this audit (`audit/screening-report.json`)."
        )
    _flatten("", to_json(report.summary), lines)

    return [*lines, "- the full report is in `audit/report.html` and `audit/report.json`.", ""]
