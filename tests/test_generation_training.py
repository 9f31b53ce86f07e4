"""Training runs: checkpoints resume after SIGTERM or a crash to the same final weights, weights
are safetensors, bad inputs fail clearly, and masked datasets give image+mask pairs."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

import generation.train_autoencoder as train_ae
from generation.checkpoints import load_weights
from generation.train_autoencoder import train_autoencoder
from tests.conftest import make_tiny_dataset
from tests.generation_tiny import (
    crash_in_training_step,
    one_thread,
    tiny_settings,
    train_tiny_model,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("d") / "tiny", size=16, per_class=4)


def _interrupt_at(monkeypatch, call: int, how: str) -> None:
    """Make the autoencoder's KL loss interrupt training on its `call`-th evaluation."""
    original = train_ae.kl_loss
    calls = {"n": 0}

    def kl(*args):
        calls["n"] += 1
        if calls["n"] == call:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise RuntimeError("simulated crash (like kill -9: no checkpoint on exit)")
        return original(*args)

    monkeypatch.setattr(train_ae, "kl_loss", kl)


@pytest.mark.parametrize("how", ["sigterm", "crash"])
def test_resume_after_interruption_reaches_the_same_weights(data, tmp_path, monkeypatch, how):
    settings = tiny_settings()
    train_autoencoder(data, tmp_path / "straight", settings, show_progress=False)
    _interrupt_at(monkeypatch, 4, how)  # during step index 3: checkpoints exist at 2 (and 3)
    expected = KeyboardInterrupt if how == "sigterm" else RuntimeError
    with pytest.raises(expected):
        train_autoencoder(data, tmp_path / "cut", settings, show_progress=False)
    assert not (tmp_path / "cut" / "autoencoder.safetensors").exists()
    latest = (tmp_path / "cut" / "checkpoints" / "latest.json").read_text()
    assert ('"step": 3' in latest) if how == "sigterm" else ('"step": 2' in latest)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="already exists.*--resume"):
        train_autoencoder(data, tmp_path / "cut", settings, show_progress=False)
    card = train_autoencoder(data, tmp_path / "cut", settings, resume=True, show_progress=False)
    assert card["steps"] == 6
    straight = load_weights(tmp_path / "straight" / "autoencoder.safetensors")
    resumed = load_weights(tmp_path / "cut" / "autoencoder.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.parametrize("counters", ["kept", "absent"])
def test_diffusion_resume_continues_the_same_ema(data, tmp_path, monkeypatch, counters):
    """A diffusion run crashed after a checkpoint and resumed ends on the same EMA weights as an
    uninterrupted one: the EMA's weights and its counters (the warmup's step) are in the
    checkpoint. A checkpoint of the hand-written EMA (no counters) resumes the same way."""
    from generation.train_diffusion import train_diffusion

    settings = tiny_settings(diffusion__checkpoint_every=2)
    train_autoencoder(data, tmp_path / "ae", settings, show_progress=False)
    train_diffusion(data, tmp_path / "ae", tmp_path / "straight", settings, show_progress=False)
    crash_in_training_step(monkeypatch, 4)
    with pytest.raises(RuntimeError):
        train_diffusion(data, tmp_path / "ae", tmp_path / "cut", settings, show_progress=False)
    monkeypatch.undo()
    state_file = tmp_path / "cut" / "checkpoints" / "step_0000004" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["ema"]["optimization_step"] == 4 and state["ema"]["use_ema_warmup"] is True
    if counters == "absent":
        del state["ema"]
        state_file.write_text(json.dumps(state))
    train_diffusion(
        data, tmp_path / "ae", tmp_path / "cut", settings, resume=True, show_progress=False
    )
    straight = load_weights(tmp_path / "straight" / "unet.safetensors")
    resumed = load_weights(tmp_path / "cut" / "unet.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_refuses_other_settings_and_missing_checkpoints(data, tmp_path):
    settings = tiny_settings(autoencoder__steps=2)
    train_autoencoder(data, tmp_path / "ae", settings, show_progress=False)
    with pytest.raises(ValueError, match="different settings_hash"):
        train_autoencoder(
            data,
            tmp_path / "ae",
            tiny_settings(autoencoder__lr=0.5),
            resume=True,
            show_progress=False,
        )
    longer = train_autoencoder(
        data, tmp_path / "ae", tiny_settings(autoencoder__steps=3), resume=True,
        show_progress=False,
    )  # fmt: skip
    assert longer["steps"] == 3  # a resumed run may be extended
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train_autoencoder(data, tmp_path / "other", settings, resume=True, show_progress=False)


@pytest.mark.parametrize("resume", [False, True])
def test_run_killed_before_its_first_checkpoint_starts_again(
    data, tmp_path, monkeypatch, caplog, resume
):
    """Issue 19.5: a run killed before its first checkpoint neither resumed ("nothing to
    resume") nor restarted ("already exists"); now it starts again from step 0 and says so."""
    settings = tiny_settings()
    train_autoencoder(data, tmp_path / "straight", settings, show_progress=False)
    _interrupt_at(monkeypatch, 1, "crash")  # during step 0: no checkpoint yet
    with pytest.raises(RuntimeError):
        train_autoencoder(data, tmp_path / "cut", settings, show_progress=False)
    assert not (tmp_path / "cut" / "checkpoints" / "latest.json").exists()
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="radsynth.train"):
        card = train_autoencoder(
            data, tmp_path / "cut", settings, resume=resume, show_progress=False
        )
    assert "starting again from step 0" in caplog.text
    assert card["steps"] == 6
    straight = load_weights(tmp_path / "straight" / "autoencoder.safetensors")
    again = load_weights(tmp_path / "cut" / "autoencoder.safetensors")
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_unknown_profile_key_is_an_error():
    with pytest.raises(ValueError, match="unknown key\\(s\\) chanels in autoencoder"):
        tiny_settings(autoencoder__chanels=[8])


def test_masked_dataset_yields_image_mask_pairs(tmp_path, capsys):
    from generation import load_model
    from pipelines.cli import main

    _, _, run = train_tiny_model(tmp_path, with_masks=True)
    model = load_model(run)
    assert model.has_masks
    images, masks = model.generate([{"pathology": "normal"}] * 2, seed=0, return_masks=True)
    assert images.shape == masks.shape == (2, 16, 16)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    # a given mask is a condition: the model takes it at the latent size
    given = np.zeros((2, 16, 16), np.uint8)
    given[:, 4:12, 4:12] = 1
    assert model.generate([{}] * 2, seed=0, masks=given).shape == (2, 16, 16)
    assert (
        main(
            [
                "generate",
                "--model",
                str(run),
                "--n",
                "2",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "set"),
                "--no-progress",
            ]
        )
        == 0
    )
    manifest = (tmp_path / "set" / "manifest.csv").read_text().splitlines()
    assert manifest[0].endswith(",model_hash,mask_file")
    assert (tmp_path / "set" / "masks" / "syn000001.png").is_file()

    # given masks from the CLI: image i fits mask i mod M, and that mask is written beside it
    from conditioning.dataset.pixels import read_png, write_png

    mask_dir = tmp_path / "patient-0042-masks"
    mask_dir.mkdir()
    for k, (top, left) in enumerate([(2, 2), (8, 6)]):
        painted = np.zeros((16, 16), np.uint8)
        painted[top : top + 6, left : left + 6] = 255
        write_png(mask_dir / f"patient-0042-slice{k}.png", painted)
    out = tmp_path / "fitted"
    args = ["generate", "--model", str(run), "--n", "3", "--seed", "0", "--out", str(out),
            "--masks", str(mask_dir), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    expected = [read_png(mask_dir / f"patient-0042-slice{k % 2}.png") > 0 for k in range(3)]
    for k in range(3):
        written = read_png(out / "masks" / f"syn00000{k}.png") > 0
        np.testing.assert_array_equal(written, expected[k])
    request = (out / "generation.json").read_text()
    assert '"count": 2' in request and "patient-0042" not in request
    assert "patient-0042" not in (out / "manifest.csv").read_text()
    write_png(mask_dir / "patient-0042-slice2.png", np.full((8, 8), 255, np.uint8))
    other = [a if a != str(out) else str(tmp_path / "other") for a in args]
    capsys.readouterr()
    assert main(other) == 2
    assert "patient-0042-slice2.png: mask is [8, 8]" in capsys.readouterr().err
    assert not (tmp_path / "other" / "images").exists()


def test_volumes_train_and_generate_in_3d(tmp_path):
    """spatial_dims comes from the dataset: a 3D dataset gives 3D networks and NIfTI volumes."""
    from conditioning.dataset import (
        Attribute,
        ConditionSchema,
        DatasetSpec,
        DatasetWriter,
        quantize,
    )
    from generation import Sampling, load_model
    from generation.train_diffusion import train_diffusion
    from pipelines.cli import main

    schema = ConditionSchema((Attribute("pathology", "categorical", values=("a", "b")),))
    rng = np.random.default_rng(0)
    spec = DatasetSpec("vol", "MR", "3D", [8, 16, 16], 8, schema)
    with DatasetWriter(tmp_path / "vol", spec) as writer:
        for i in range(6):
            volume = rng.uniform(0, 1, (8, 16, 16)) * (0.5 if i % 2 else 1.0)
            writer.add(quantize(volume, 8), split="train", patient_id=f"p{i}",
                       conditions={"pathology": "ab"[i % 2]})  # fmt: skip
        writer.commit(intensity={"method": "synthetic"}, ingest_report={})
    settings = tiny_settings(autoencoder__steps=2, diffusion__steps=2)
    train_autoencoder(tmp_path / "vol", tmp_path / "ae", settings, show_progress=False)
    train_diffusion(
        tmp_path / "vol", tmp_path / "ae", tmp_path / "m", settings, show_progress=False
    )
    model = load_model(tmp_path / "m")
    assert model.spatial_dims == 3 and model.latent_shape == [2, 4, 8, 8]
    volumes = model.generate([{"pathology": "b"}], seed=0, how=Sampling(steps=2))
    assert volumes.shape == (1, 8, 16, 16)
    assert main(["generate", "--model", str(tmp_path / "m"), "--n", "1", "--seed", "0",
                 "--out", str(tmp_path / "set"), "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "set" / "images" / "syn000000.nii.gz").is_file()


def test_class_balanced_batches_train_and_may_change_on_resume(data, tmp_path, caplog):
    from generation.train_diffusion import train_diffusion

    train_autoencoder(data, tmp_path / "ae", tiny_settings(), show_progress=False)
    balanced = tiny_settings(diffusion__steps=2, diffusion__balance_by="pathology",
                             diffusion__balance_power=0.5)  # fmt: skip
    with caplog.at_level("INFO", logger="radsynth.train"):
        card = train_diffusion(data, tmp_path / "ae", tmp_path / "m", balanced, show_progress=False)
    assert card["steps"] == 2 and "class-balanced batches by pathology (power 0.5)" in caplog.text
    equal = tiny_settings(diffusion__steps=3, diffusion__balance_by="pathology",
                          diffusion__balance_power=1.0)  # fmt: skip
    card = train_diffusion(
        data, tmp_path / "ae", tmp_path / "m", equal, resume=True, show_progress=False
    )
    assert card["steps"] == 3  # the balance is a curriculum: a resumed run may change it
    wrong = tiny_settings(diffusion__balance_by="age_months", diffusion__balance_power=0.5)
    with pytest.raises(ValueError, match="must be categorical"):
        train_diffusion(data, tmp_path / "ae", tmp_path / "n", wrong, show_progress=False)
