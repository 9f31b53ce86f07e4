"""A synthetic set against a baseline set of the same data (say, the model before adaptation): the
FD difference overall and per subgroup, each with a paired bootstrap interval, so "model B is
closer to the real images than model A" is a measured statement rather than two overlapping
intervals read by eye."""

from __future__ import annotations

import numpy as np

from .domain_models import DomainModels
from .evaluate import MIN_GROUP_FOR_DISTRIBUTION, Evaluation, group_labels, group_order
from .images import ImageSet
from .metrics import frechet_difference


def compare_with_baseline(
    evaluation: Evaluation, baseline: ImageSet, domain: DomainModels, seed: int = 0
) -> dict:
    """{"n_baseline", "all": {...}, "subgroups": {"group=value": {...}}}; each entry holds fd,
    fd_baseline, difference (negative: the evaluated set is closer), its 95% interval (low,
    high) and the share of bootstrap draws in which the evaluated set was closer."""
    real, real_pred = evaluation.real, evaluation.real_predictions
    syn, syn_pred = evaluation.synthetic, evaluation.synthetic_predictions
    base_pred = domain.predict(baseline.images)
    out: dict = {"n_baseline": len(baseline), "subgroups": {}}
    out["all"] = frechet_difference(
        real_pred.features, syn_pred.features, base_pred.features, seed=seed
    )
    real_groups, syn_groups = group_labels(real, domain), group_labels(syn, domain)
    base_groups = group_labels(baseline, domain)
    for group in syn_groups:
        for value in group_order(group, domain):
            index = [
                np.array([i for i, v in enumerate(g.get(group, [])) if v == value], dtype=np.int64)
                for g in (real_groups, syn_groups, base_groups)
            ]
            if min(len(i) for i in index) < MIN_GROUP_FOR_DISTRIBUTION:
                continue
            row = frechet_difference(
                real_pred.features[index[0]],
                syn_pred.features[index[1]],
                base_pred.features[index[2]],
                seed=seed,
            )
            out["subgroups"][f"{group}={value}"] = {
                "n_synthetic": len(index[1]),
                "n_baseline": len(index[2]),
                "n_real": len(index[0]),
                **row,
            }
    return out
