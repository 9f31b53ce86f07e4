"""`radsynth stage NAME`: one stage of dvc.yaml, configured from params.yaml.

Training and generation stages run under `accelerate launch` when RADSYNTH_ACCELERATE_ARGS
is set (e.g. "--multi_gpu --num_processes 4 --mixed_precision bf16"): the same stage, on as
many GPUs as asked, without touching dvc.yaml.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

LAUNCHABLE = ("train_autoencoder", "train_diffusion", "generate")
ACCELERATE_ENV = "RADSYNTH_ACCELERATE_ARGS"


def register(sub) -> None:
    from ..stages import STAGES

    parser = sub.add_parser("stage", help="run one pipeline stage as dvc.yaml does")
    parser.add_argument("name", choices=STAGES)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.set_defaults(func=run)


def launch_command(name: str, argv: list[str], environ: dict[str, str]) -> list[str] | None:
    """The `accelerate launch` command for a stage, or None to run it in this process."""
    extra = environ.get(ACCELERATE_ENV, "").strip()
    if name not in LAUNCHABLE or not extra:
        return None
    return [sys.executable, "-m", "accelerate.commands.launch", *shlex.split(extra),
            "-m", "pipelines.cli", *argv]  # fmt: skip


def run(args) -> int:
    from .. import cli
    from ..stages import load_params, stage_argv

    argv = stage_argv(args.name, load_params(args.params), args.params)
    launch = launch_command(args.name, argv, dict(os.environ))
    if launch is not None:
        print(" ".join(launch), flush=True)
        return subprocess.run(launch).returncode
    print("radsynth " + " ".join(argv), flush=True)
    return cli.main(argv)
