"""Condition encoders: the tensor layout, null embeddings, dropout and request validation."""

from __future__ import annotations

import math

import pytest
import torch

from conditioning.dataset import Attribute, ConditionSchema
from conditioning.encoders import (
    ConditionEncoder,
    drop_conditions,
    encode_conditions,
    null_conditions,
)

SCHEMA = ConditionSchema(
    (
        Attribute("pathology", "categorical", values=("normal", "bacterial", "viral")),
        Attribute("age_months", "continuous", unit="months", minimum=0, maximum=216),
    )
)


def test_encode_conditions_indexes_normalises_and_marks_unknown():
    values = encode_conditions(SCHEMA, [{"pathology": "viral", "age_months": 54}, {}])
    assert values[0, 0].item() == 2.0
    assert values[0, 1].item() == pytest.approx(54 / 216)
    assert torch.isnan(values[1]).all()


def test_encode_conditions_rejects_values_outside_the_schema():
    with pytest.raises(ValueError, match="allowed: normal, bacterial, viral"):
        encode_conditions(SCHEMA, [{"pathology": "covid"}])
    with pytest.raises(ValueError, match="outside the range"):
        encode_conditions(SCHEMA, [{"age_months": 300}])


def test_validate_request_lists_allowed_attributes():
    with pytest.raises(
        ValueError, match=r"unknown condition attribute\(s\) sex; allowed: pathology"
    ):
        SCHEMA.validate_request({"sex": "F"})


def test_unknown_values_take_each_attributes_null_embedding():
    torch.manual_seed(0)
    encoder = ConditionEncoder(SCHEMA, 16)
    null = encoder(null_conditions(1, SCHEMA))
    assert torch.allclose(null[0], encoder.null.sum(0))
    partial = encoder(encode_conditions(SCHEMA, [{"pathology": "normal"}]))
    table = encoder.tables[0].weight[0]
    assert torch.allclose(partial[0], table + encoder.null[1], atol=1e-6)


def test_classes_and_ages_embed_differently_and_ages_smoothly():
    torch.manual_seed(0)
    encoder = ConditionEncoder(SCHEMA, 16)
    rows = encode_conditions(
        SCHEMA,
        [
            {"pathology": "normal"},
            {"pathology": "viral"},
            {"age_months": 100},
            {"age_months": 100.5},
            {"age_months": 200},
        ],
    )
    out = encoder(rows)
    assert not torch.allclose(out[0], out[1])
    near = (out[2] - out[3]).norm()
    far = (out[2] - out[4]).norm()
    assert near < far


def test_condition_dropout_is_per_attribute_and_seeded():
    values = torch.zeros(2000, 2)
    dropped = drop_conditions(values, 0.25, torch.Generator().manual_seed(1))
    rate = torch.isnan(dropped).float().mean(0)
    assert torch.all((rate > 0.2) & (rate < 0.3))
    both = torch.isnan(dropped).all(1).float().mean().item()
    assert 0.03 < both < 0.1  # attributes are dropped independently
    again = drop_conditions(values, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(torch.isnan(dropped), torch.isnan(again))
    assert not math.isnan(drop_conditions(values, 0.0, torch.Generator())[0, 0].item())
