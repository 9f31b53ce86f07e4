"""The EMA of the diffusion UNet (generation/ema.py, diffusers' EMAModel underneath): the decay
schedule it was written with, the average held in its own model, and its counters round-tripped
through JSON."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from generation.ema import EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def _reference(decay: float, warmup: bool, steps: list[list[torch.Tensor]], start):
    """The average by hand: decay min(decay, (1+s)/(10+s)) at training step s (or `decay`)."""
    shadow = [p.clone().double() for p in start]
    for s, weights in enumerate(steps):
        d = min(decay, (1 + s) / (10 + s)) if warmup else decay
        shadow = [d * a + (1 - d) * w.double() for a, w in zip(shadow, weights, strict=True)]
    return shadow


def _train(ema: EMA, net: nn.Module, n: int) -> list[list[torch.Tensor]]:
    seen = []
    for _ in range(n):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net)
        seen.append([p.detach().clone() for p in net.parameters()])
    return seen


@pytest.mark.parametrize(("decay", "warmup"), [(0.999, True), (0.6, True), (0.5, False)])
def test_average_follows_the_warmup_schedule(decay, warmup):
    net = _net()
    start = [p.detach().clone() for p in net.parameters()]
    ema = EMA(net, decay, warmup=warmup)
    seen = _train(ema, net, 12)
    want = _reference(decay, warmup, seen, start)
    for got, expected in zip(ema.model.parameters(), want, strict=True):
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    first = ema.average.get_decay(1)
    assert first == pytest.approx(0.1 if warmup else decay)  # not 0: the start is kept


def test_decay_one_keeps_the_start_and_frozen_weights_are_copied():
    net = _net()
    start = [p.detach().clone() for p in net.parameters()]
    ema = EMA(net, 1.0, warmup=False)
    _train(ema, net, 3)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), start, strict=True))
    net[0].weight.requires_grad_(False)  # a frozen weight (LoRA's base) is the weight itself
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    assert torch.equal(ema.model[0].weight, net[0].weight)


def test_counters_resume_the_same_average_and_a_skip_advances_the_warmup():
    net = _net()
    ema = EMA(net, 0.999)
    _train(ema, net, 3)
    ema.skip()  # an fp16 overflow step: no weights averaged in, the schedule moves on
    counters = json.loads(json.dumps(ema.counters()))  # what state.json keeps
    assert counters["optimization_step"] == 4 and counters["decay"] == 0.999

    resumed = EMA(net, 0.999)  # a new process: weights from the checkpoint, counters from JSON
    resumed.model.load_state_dict(ema.model.state_dict())
    resumed.load_counters(counters, step=4)
    old_format = EMA(net, 0.999)  # a checkpoint of the hand-written EMA kept no counters
    old_format.model.load_state_dict(ema.model.state_dict())
    old_format.load_counters(None, step=4)
    fresh = EMA(net, 0.999)  # counters lost: the warmup would start again
    fresh.model.load_state_dict(ema.model.state_dict())
    torch.manual_seed(1)
    _train(ema, net, 1)
    for other in (resumed, old_format, fresh):
        other.update(net)
    params = {name: list(e.model.parameters()) for name, e in
              (("ema", ema), ("resumed", resumed), ("old", old_format), ("fresh", fresh))}  # fmt: skip
    for name in ("resumed", "old"):
        assert all(torch.equal(a, b) for a, b in zip(params["ema"], params[name], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(params["ema"], params["fresh"], strict=True))


def test_a_model_with_buffers_is_refused():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match="parameters only.*running_mean"):
        EMA(net, 0.9)
