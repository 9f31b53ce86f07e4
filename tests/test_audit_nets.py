"""The audit's networks as they are run (privacy_audit/nets.py for_inference): the same outputs
as the trained model in eval mode, and the trained model itself left as it was."""

from __future__ import annotations

import torch

from privacy_audit.encoder import CopyEncoder
from privacy_audit.nets import bf16_inference, for_inference
from privacy_audit.verifier import PairVerifier


def _with_batch_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norms with running statistics and affine terms far from their initial values, as
    training leaves them (folding the initial ones would hide a wrong fold)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -1, 1), (m.running_var, 0.3, 3)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.train()


def test_the_encoder_and_verifier_run_as_trained_and_are_left_untouched():
    g = torch.Generator().manual_seed(1)
    encoder = _with_batch_statistics(CopyEncoder(8, 32))
    verifier = _with_batch_statistics(PairVerifier(8))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = torch.rand(6, 1, 64, 64, generator=g)
    windows = torch.randn(2, 6, 52, 52, generator=g)
    fast_encoder, fast_verifier = for_inference(encoder), for_inference(verifier)
    assert encoder.training and verifier.training  # the caller's models are not switched
    with torch.no_grad():
        expected = encoder.eval()(images), verifier.eval()(*windows)
        got = (
            fast_encoder(images.contiguous(memory_format=torch.channels_last)),
            fast_verifier(*windows),
        )
    for want, have in zip(expected, got, strict=True):
        assert torch.allclose(have, want, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_verifier.modules())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def _verifier_outputs(monkeypatch, native: bool, requested: bool) -> tuple[torch.Tensor, ...]:
    """The same pairs through a verifier made by for_inference outside bf16_inference, inside
    it, and after it, on a CPU that runs bf16 natively or not (`native`)."""
    import conditioning.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    torch.manual_seed(0)
    verifier = PairVerifier(8).eval()
    windows = torch.randn(2, 4, 52, 52, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = for_inference(verifier)(*windows)
        with bf16_inference(requested):
            inside = for_inference(verifier)(*windows)
        after = for_inference(verifier)(*windows)
    return before, inside, after


def test_bf16_inference_runs_the_networks_in_bf16_only_inside_and_only_where_native(monkeypatch):
    before, inside, after = _verifier_outputs(monkeypatch, native=True, requested=True)
    assert inside.dtype == torch.float32  # handed back as fp32, whatever they ran in
    assert not torch.equal(inside, before)  # bf16's rounding: it did run in bf16
    assert torch.allclose(inside, before, atol=0.05, rtol=0.05)
    assert torch.equal(after, before)  # fp32 again once the block is left
    for native, requested in ((False, True), (True, False)):  # emulated, or not asked for: fp32
        before, inside, _ = _verifier_outputs(monkeypatch, native=native, requested=requested)
        assert torch.equal(inside, before)
