"""LoRA of the conditioned UNet with peft (generation/lora.py): the UNet's linear layers and no
others are adapted, the adapted model starts exactly at its parent, a seed fixes the adapters,
and merging gives plain layers under the parent's weight names with the adapted outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraModel
from torch import nn

from conditioning.dataset import Attribute, ConditionSchema
from generation.lora import add_lora, merge_lora
from generation.unet import ConditionedUNet

SPEC = {
    "spatial_dims": 2,
    "in_channels": 2,
    "out_channels": 2,
    "channels": [16, 16],
    "attention_levels": [False, True],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
    "num_head_channels": 8,
}
SCHEMA = ConditionSchema(
    (
        Attribute("pathology", "categorical", values=("normal", "viral")),
        Attribute("age_months", "continuous", unit="months", minimum=0, maximum=216),
    )
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _unet() -> ConditionedUNet:
    """A "trained" parent: MONAI zero-initialises the output convolution, so every weight is
    drawn anew (else every output would be zero)."""
    torch.manual_seed(0)
    unet = ConditionedUNet(SPEC, SCHEMA, mask_input=False).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(std=0.2)
    return unet


def _adapted(rank: int = 2, seed: int = 1) -> ConditionedUNet:
    unet = _unet()
    torch.manual_seed(seed)
    unet.unet = add_lora(unet.unet, rank, skip=("class_embedding",))
    return unet


def _inputs():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 8, 8, generator=g)
    t = torch.tensor([1, 500, 999])
    conditions = torch.tensor([[0.0, 0.3], [1.0, float("nan")], [float("nan"), 0.9]])
    return x, t, conditions


def _linear_names(module: nn.Module) -> set[str]:
    return {n for n, m in module.named_modules() if type(m) is nn.Linear}


def test_lora_wraps_the_unets_linear_layers_and_starts_at_the_parent():
    parent, unet = _unet(), _adapted()
    assert isinstance(unet.unet, LoraModel)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    unet_linears = {n for n in _linear_names(parent.unet) if not n.startswith("class_embedding.")}
    adapted = {n.removeprefix("unet.model.").rsplit(".lora_", 1)[0] for n in trainable}
    assert adapted == unet_linears and all(".lora_" in n for n in trainable)
    lora = dict(unet.named_parameters())
    assert all(lora[n].shape[0 if ".lora_A." in n else 1] == 2 for n in trainable)
    assert all(not lora[n].any() for n in trainable if ".lora_B." in n)  # B starts at zero
    assert any(n.startswith("class_embedding.") for n in _linear_names(parent.unet))
    with torch.no_grad():
        out = parent(*_inputs())
        assert out.abs().mean() > 0 and torch.equal(unet(*_inputs()), out)


def test_same_seed_same_adapters_and_merging_keeps_the_outputs_and_names():
    first, again, other = _adapted(seed=1), _adapted(seed=1), _adapted(seed=2)
    state = first.state_dict()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        for name, p in first.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
        want = first(*_inputs())
    averaged = copy.deepcopy(first)  # what the EMA holds and the adapt run merges and saves
    merged = merge_lora(averaged)
    assert merged is averaged and type(merged.unet) is type(_unet().unet)
    assert merged.state_dict().keys() == _unet().state_dict().keys()
    assert _linear_names(merged) == _linear_names(_unet())
    with torch.no_grad():
        torch.testing.assert_close(merged(*_inputs()), want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(merged(*_inputs()), _unet()(*_inputs()), atol=1e-4)


def test_lora_rank_must_be_positive_and_find_a_linear_layer():
    with pytest.raises(ValueError, match="at least 1"):
        add_lora(_unet().unet, 0)
    with pytest.raises(ValueError, match="no linear layer"):
        add_lora(nn.Sequential(nn.Conv2d(1, 1, 1)), 2)
