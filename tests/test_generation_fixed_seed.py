"""A fixed seed gives the same images: tiny models trained from fixed seeds on the tiny dataset,
through the CLI (train autoencoder, train diffusion, train adapt with LoRA and in full, with and
without masks), generate the images stored in tests/fixtures/generation/, which were recorded
before issue 17 cut the training and generation functions into steps.

On the machine that recorded them the images are identical byte for byte. Another CPU (AVX2,
AVX-512, AMX kernels sum in other orders) may round the last bits of a float differently, and
a value lying on a grey-level boundary then moves to the next one: so the check allows one grey
level anywhere and a few percent of such pixels. A perturbation of every weight by 1e-4 of its
value moved 2.5% of pixels by one level and none by two; a change in what is computed (another
seed, random stream, schedule or condition) changes most pixels by many levels. (A LoRA
adaptation of this tiny model moves its images by less than a grey level: its weights are what
the adapt tests check.)

Re-record (only when generation is meant to change):
`PYTHONPATH=. python -m tests.test_generation_fixed_seed --record`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conditioning.dataset.pixels import read_png, write_png
from tests.conftest import make_tiny_dataset
from tests.generation_tiny import one_thread

FIXTURES = Path(__file__).parent / "fixtures" / "generation"
PARAMS = """profile: tiny
profiles:
  tiny:
    autoencoder: {channels: [8, 16], latent_channels: 2, norm_num_groups: 8, batch_size: 4,
                  steps: 6, checkpoint_every: 2, ssim_kernel: 3, mixed_precision: "no"}
    diffusion: {channels: [16, 16], attention_levels: [false, true], norm_num_groups: 8,
                num_head_channels: 8, batch_size: 4, steps: 6, checkpoint_every: 4,
                grid_columns: 2, mixed_precision: "no"}
    generate: {steps: 3, batch_size: 4, bf16: false}
    adapt: {steps: 4, batch_size: 2, lr: 0.002, warmup_steps: 2, ema_decay: 0.5,
            mixed_precision: "no", checkpoint_every: 2}
"""
# scenario -> (model, generate arguments); models are trained by _train_models
SCENARIOS = {
    "base": ("model", ["--n", "6", "--balanced", "grid", "--seed", "0"]),
    "ddpm": ("model", ["--n", "3", "--condition", "pathology=viral", "--sampler", "ddpm",
                       "--guidance", "3", "--seed", "1"]),
    "lora": ("lora", ["--n", "3", "--condition", "pathology=viral", "--seed", "0"]),
    "full": ("full", ["--n", "3", "--balanced", "match", "--seed", "2"]),
    "masked": ("masked", ["--n", "3", "--seed", "0"]),
}  # fmt: skip
ONE_LEVEL_SHARE = 0.05  # pixels allowed one grey level off (another CPU's rounding)
MASK_SHARE = 0.02  # mask pixels allowed to flip (a decoded value on the 0.5 threshold)


def _cli(*args: str) -> None:
    from pipelines.cli import main

    assert main([*args, "--no-progress"]) == 0, args


def _train_models(root: Path) -> dict[str, Path]:
    """Every model the scenarios use, trained through the CLI from fixed seeds."""
    params = root / "params.yaml"
    params.write_text(PARAMS)
    common = ["--params", str(params)]
    runs = {}
    for name, masked in (("model", False), ("masked", True)):
        data = make_tiny_dataset(root / f"data-{name}", size=16, per_class=4, with_masks=masked)
        _cli("train", "autoencoder", "--data", str(data), "--out", str(root / f"ae-{name}"),
             *common)  # fmt: skip
        _cli("train", "diffusion", "--data", str(data), "--autoencoder", str(root / f"ae-{name}"),
             "--out", str(root / name), *common)  # fmt: skip
        runs[name] = root / name
    data = root / "data-model"
    for name, how in (("lora", ["--lora", "2", "--limit", "2"]), ("full", ["--full"])):
        _cli("train", "adapt", "--model", str(runs["model"]), "--data", str(data),
             "--out", str(root / name), "--where", "pathology=viral", *how, *common)  # fmt: skip
        runs[name] = root / name
    return runs


def _generate(runs: dict[str, Path], root: Path, scenario: str) -> dict[str, np.ndarray]:
    """The scenario's images (and masks) side by side in one strip each."""
    model, args = SCENARIOS[scenario]
    out = root / "sets" / scenario
    _cli("generate", "--model", str(runs[model]), "--out", str(out), *args)
    strips = {}
    for kind in ("images", "masks"):
        files = sorted((out / kind).glob("*.png"))
        if files:
            strips[kind] = np.concatenate([read_png(f) for f in files], axis=1)
    return strips


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixed_seed")
    with one_thread():
        runs = _train_models(root)
        return {scenario: _generate(runs, root, scenario) for scenario in SCENARIOS}


def _fixture(scenario: str, kind: str) -> Path:
    return FIXTURES / f"{scenario}-{kind}.png"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fixed_seed_generates_the_recorded_images(generated, scenario):
    strips = generated[scenario]
    expected_kinds = {"images", "masks"} if scenario == "masked" else {"images"}
    assert set(strips) == expected_kinds
    for kind, got in strips.items():
        want = read_png(_fixture(scenario, kind))
        assert got.shape == want.shape
        diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
        if kind == "images":
            assert diff.max() <= 1, f"{scenario}: {int(diff.max())} grey levels off"
            assert (diff > 0).mean() <= ONE_LEVEL_SHARE, f"{scenario}: {(diff > 0).mean():.1%}"
        else:
            assert (diff > 0).mean() <= MASK_SHARE, f"{scenario} masks: {(diff > 0).mean():.1%}"


def record(root: Path) -> None:
    """Write the fixtures from this checkout's code (run it before changing generation)."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with one_thread():
        runs = _train_models(root)
        for scenario in SCENARIOS:
            for kind, strip in _generate(runs, root, scenario).items():
                write_png(_fixture(scenario, kind), strip)
                print(_fixture(scenario, kind), strip.shape)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
