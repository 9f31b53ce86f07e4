"""The README's two commands: `python3 -m pipelines.bootstrap main|test`.

Standard library only, so it runs on a fresh machine: creates `.venv/` at the repository root
when missing, installs RadSynth into it (a CPU build of torch where no CUDA GPU is present)
whenever `pyproject.toml` changed, then runs the main job or the test suite inside it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".radsynth-installed"
CPU_TORCH = "torch==2.13.0"
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "kermany-pediatric-cxr"


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kwargs)


def ensure_environment() -> Path:
    """Create and fill `.venv` if needed; returns its python."""
    python = BIN / "python"
    if not python.exists():
        _run([sys.executable, "-m", "venv", VENV])
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text().strip() != wanted:
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        has_cuda = shutil.which("nvidia-smi") is not None
        if not has_cuda:
            _run([*pip, CPU_TORCH])  # pins the CPU build before anything can pull a CUDA one
        _run([*pip, "-e", f"{ROOT}[dev,dicom-codecs]"])
        STAMP.write_text(wanted + "\n")
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m pipelines.bootstrap", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    job = sub.add_parser("main", help="the main job on a real dataset")
    job.add_argument("--source", default=str(DEFAULT_SOURCE), help="dataset folder to start from")
    job.add_argument("--profile", default="demo", help="params.yaml profile (smoke, demo, full)")
    tests = sub.add_parser("test", help="lint and the test suite")
    tests.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args(argv)

    python = ensure_environment()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    try:
        if args.what == "test":
            _run([python, "-m", "ruff", "check", "."], env=env)
            _run([python, "-m", "pytest", "-q", *args.pytest_args], env=env)
        else:
            _run(
                [BIN / "radsynth", "run", "--source", args.source, "--profile", args.profile],
                env=env,
            )
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
