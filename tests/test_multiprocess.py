"""Data parallel for real: the README's `accelerate launch --multi_gpu --num_processes 2` commands,
run on this CPU (gloo), train one synchronised model that matches one process with the same
global batch, resume exactly after a kill -9, and generate the same bytes as one process.

Tolerances are on what the models compute, not on every weight: a conv bias followed by a
GroupNorm has no effect and a zero true gradient, so Adam turns float noise in it into steps of
size lr whose sign depends on the summation order. Outputs agree to a few 1e-6 here; 1e-4 is the
bound, and a run on a different global batch lands more than 100x further away.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from generation import Sampling, load_model
from generation.autoencoder import build_autoencoder
from generation.checkpoints import load_into, load_weights
from generation.data import load_training_data
from generation.generate_set import SetRequest, generate_set
from generation.train_autoencoder import train_autoencoder
from generation.train_diffusion import train_diffusion
from tests.conftest import REPO, make_tiny_dataset
from tests.generation_tiny import TINY, one_thread, tiny_settings

pytestmark = pytest.mark.multiprocess  # runs in CI: two CPU processes, about 1.5 minutes
TOLERANCE = 1e-4
AE = {"steps": 12, "checkpoint_every": 2, "adversarial_weight": 0.1}  # discriminator included
PROFILES = {  # each process's batch; all four train on a global batch of 4
    "one": {"autoencoder": {**AE, "batch_size": 4}, "diffusion": {"batch_size": 4}},
    "two": {
        "autoencoder": {**AE, "batch_size": 2},
        "diffusion": {"batch_size": 1, "grad_accum": 2},
    },
}


def _profile(name: str) -> dict:
    profile = copy.deepcopy(TINY)
    for section, values in PROFILES[name].items():
        profile[section].update(values)
    return profile


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str]) -> subprocess.Popen:
    """`accelerate launch --multi_gpu --num_processes 2 -m pipelines.cli ARGS` on this repository."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "pipelines.cli", *args, "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _run(args: list[str]) -> str:
    proc = _launch(args)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-process runs (in this process) and two-process runs (launched) of the same setups."""
    root = tmp_path_factory.mktemp("mp")
    data = make_tiny_dataset(root / "data", size=16, per_class=4)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"profiles": {n: _profile(n) for n in PROFILES}}))
    two = ["--params", str(params), "--profile", "two"]
    with one_thread():
        one = tiny_settings(
            **{f"{s}__{k}": v for s, d in PROFILES["one"].items() for k, v in d.items()}
        )
        train_autoencoder(data, root / "ae1", one, show_progress=False)
        train_diffusion(data, root / "ae1", root / "model1", one, show_progress=False)
    _run(["train", "autoencoder", "--data", str(data), "--out", str(root / "ae2"), *two])
    _run(["train", "diffusion", "--data", str(data), "--autoencoder", str(root / "ae1")]
         + ["--out", str(root / "model2"), *two])  # fmt: skip
    return root, data, params


def _card(run: Path) -> dict:
    return json.loads((run / "model_card.json").read_text())


def _reconstructions(run: Path, images: torch.Tensor) -> torch.Tensor:
    config = json.loads((run / "config.json").read_text())
    model = build_autoencoder(config["network"]).eval()
    load_into(model, run / "autoencoder.safetensors")
    with torch.no_grad():
        return model.decode(model.encode(images)[0])


def _synchronised(card: dict, per_process: int, grad_accum: int) -> None:
    """Both processes ended with byte-identical weights, and the card says how the batch was made."""
    digests = card["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert card["global_batch"] == {
        "size": 4, "per_process": per_process, "processes": 2, "grad_accum": grad_accum
    }  # fmt: skip


def test_two_processes_train_the_autoencoder_one_process_trains(runs):
    root, data, _ = runs
    _synchronised(_card(root / "ae2"), per_process=2, grad_accum=1)
    images = load_training_data(data, show_progress=False).images
    with one_thread():
        one, two = (_reconstructions(root / r, images) for r in ("ae1", "ae2"))
        settings = tiny_settings(**{f"autoencoder__{k}": v for k, v in AE.items()})
        settings = settings.updated(autoencoder={"batch_size": 2})  # global batch 2: another path
        train_autoencoder(data, root / "other", settings, show_progress=False)
        other = _reconstructions(root / "other", images)
    assert (one - two).abs().max().item() < TOLERANCE
    assert (one - other).abs().max().item() > 100 * TOLERANCE


def test_two_processes_with_accumulation_train_the_diffusion_model_one_process_trains(runs):
    root, _, _ = runs
    _synchronised(_card(root / "model2"), per_process=1, grad_accum=2)
    one, two = load_model(root / "model1"), load_model(root / "model2")
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((6, *one.latent_shape), generator=gen)
    t = torch.tensor([0, 100, 300, 500, 700, 999])
    cond = torch.full((6, len(one.schema.attributes)), float("nan"))
    with torch.no_grad(), one_thread():
        a, b = (m.unet(z, t, cond, None) for m in (one, two))
    assert (a - b).abs().max().item() < TOLERANCE


def _kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 the launcher and its workers (torchrun starts them in sessions of their own)."""
    family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.communicate(timeout=60)


def test_two_process_run_killed_and_resumed_matches_the_uninterrupted_one(runs):
    root, data, params = runs
    args = ["train", "autoencoder", "--data", str(data), "--out", str(root / "cut")]
    args += ["--params", str(params), "--profile", "two"]
    latest = root / "cut" / "checkpoints" / "latest.json"
    proc = _launch(args)
    deadline = time.monotonic() + 240
    while not latest.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill_tree(proc)
    step = json.loads(latest.read_text())["step"]
    assert 0 < step < AE["steps"], "the run was not killed mid-way"
    assert not (root / "cut" / "autoencoder.safetensors").exists()
    output = _run([*args, "--resume"])
    assert output.count("autoencoder trained for 12 steps") == 1  # the main process reports
    resumed = load_weights(root / "cut" / "autoencoder.safetensors")
    straight = load_weights(root / "ae2" / "autoencoder.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    _synchronised(_card(root / "cut"), per_process=2, grad_accum=1)


def test_two_process_generation_writes_the_bytes_one_process_writes(runs):
    root, _, _ = runs
    request = ["--n", "10", "--balanced", "grid", "--seed", "3", "--batch-size", "3"]
    _run(["generate", "--model", str(root / "model1"), *request, "--out", str(root / "set2")])
    with one_thread():
        generate_set(
            load_model(root / "model1"),
            root / "set1",
            SetRequest(10, {}, 3, "grid"),
            Sampling(batch_size=3),
            show_progress=False,
        )
    files = sorted(p.relative_to(root / "set1") for p in (root / "set1").rglob("*") if p.is_file())
    assert len([f for f in files if f.parts[0] == "images"]) == 10
    for name in files:
        assert (root / "set1" / name).read_bytes() == (root / "set2" / name).read_bytes(), name
