"""Class-balanced training batches: a rare class's share of the draws follows count**power, the
draw is a function of (seed, step) alone, and a bad setting names the problem."""

import numpy as np
import pytest
import torch

from conditioning.dataset import CATEGORICAL, Attribute, ConditionSchema
from generation.config import DiffusionConfig
from generation.data import ClassBalance, TrainingData


def _data(counts: dict[str, int]) -> TrainingData:
    schema = ConditionSchema((Attribute("pathology", CATEGORICAL, values=tuple(counts)),))
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(counts.values())])
    return TrainingData(
        images=torch.zeros(len(labels), 1, 4, 4),
        conditions=torch.from_numpy(labels.astype(np.float32))[:, None],
        schema=schema,
        spatial_dims=2,
        has_masks=False,
        dataset=None,
        records=[None] * len(labels),
    )


def test_shares_follow_the_power_and_the_draw_replays():
    data = _data({"normal": 900, "bacterial": 400, "viral": 25})
    balance = ClassBalance("pathology", 0.5).bind(data)
    assert balance.shares == pytest.approx(
        {"normal": 30 / 55, "bacterial": 20 / 55, "viral": 5 / 55}
    )
    drawn = np.concatenate([data.batch_indices(s, 64, 0, balance) for s in range(300)])
    viral = (data.conditions[drawn, 0].numpy() == 2).mean()
    assert viral == pytest.approx(5 / 55, abs=0.015)  # 25 / 1325 = 1.9% without balancing
    assert np.array_equal(
        data.batch_indices(7, 64, 0, balance), data.batch_indices(7, 64, 0, balance)
    )
    equal = np.concatenate(
        [
            data.batch_indices(s, 64, 0, ClassBalance("pathology", 1.0).bind(data))
            for s in range(300)
        ]
    )
    assert (data.conditions[equal, 0].numpy() == 2).mean() == pytest.approx(1 / 3, abs=0.02)
    plain = data.batch_indices(7, 64, 0, None)
    assert np.array_equal(plain, data.batch_indices(7, 64, 0))


def test_settings_are_checked():
    assert ClassBalance.from_settings(DiffusionConfig(balance_by="", balance_power=0.5)) is None
    assert ClassBalance.from_settings(DiffusionConfig(balance_by="pathology")) is None
    with pytest.raises(ValueError, match="balance_power"):
        ClassBalance.from_settings(DiffusionConfig(balance_by="pathology", balance_power=2))
    with pytest.raises(ValueError, match="not a condition"):
        ClassBalance("sex", 0.5).bind(_data({"a": 3, "b": 2}))
