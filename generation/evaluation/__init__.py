"""Evaluation of synthetic images: domain models the project trains on its own real data,
distribution / diversity / adherence metrics, and the downstream utility benchmark.

Reads datasets through `conditioning.dataset`; never imports `pipelines`. The names below are
imported on first use, so the commands' settings (`generation.evaluation.config`, read to build
the CLI's help) do not load torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from generation.lazy import lazy_getattr

if TYPE_CHECKING:
    from .baseline import compare_with_baseline
    from .detectability import DetectabilityConfig, detect_synthetic_set, detectability
    from .domain_models import (
        DomainModels,
        Predictions,
        load_domain_models,
        score_predictions,
        train_domain_models,
    )
    from .evaluate import Evaluation, evaluate_synthetic_set
    from .fit import FitConfig
    from .images import ImageSet, load_split, load_synthetic_set
    from .metrics import (
        classification_metrics,
        frechet_distance,
        ms_ssim,
        ms_ssim_diversity,
        precision_recall,
        regression_metrics,
    )
    from .report import write_evaluation
    from .utility import UtilityConfig, run_utility_benchmark, utility_markdown

# imported on first use: the module of each public name
_MODULES = {
    ".baseline": ("compare_with_baseline",),
    ".detectability": ("DetectabilityConfig", "detect_synthetic_set", "detectability"),
    ".domain_models": ("DomainModels", "Predictions", "load_domain_models", "score_predictions",
                       "train_domain_models"),
    ".evaluate": ("Evaluation", "evaluate_synthetic_set"),
    ".fit": ("FitConfig",),
    ".images": ("ImageSet", "load_split", "load_synthetic_set"),
    ".metrics": ("classification_metrics", "frechet_distance", "ms_ssim", "ms_ssim_diversity",
                 "precision_recall", "regression_metrics"),
    ".report": ("write_evaluation",),
    ".utility": ("UtilityConfig", "run_utility_benchmark", "utility_markdown"),
}  # fmt: skip
_LAZY = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [
    "DetectabilityConfig",
    "detect_synthetic_set",
    "detectability",
    "DomainModels",
    "Evaluation",
    "FitConfig",
    "ImageSet",
    "Predictions",
    "UtilityConfig",
    "classification_metrics",
    "compare_with_baseline",
    "evaluate_synthetic_set",
    "frechet_distance",
    "load_domain_models",
    "load_split",
    "load_synthetic_set",
    "ms_ssim",
    "ms_ssim_diversity",
    "precision_recall",
    "regression_metrics",
    "run_utility_benchmark",
    "score_predictions",
    "train_domain_models",
    "utility_markdown",
    "write_evaluation",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
