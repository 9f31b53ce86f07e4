"""`radsynth run`: the main job. The whole chain through `dvc repro`, then where to look."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "run", help="the main job: ingest -> train -> generate -> audit -> evaluate -> release"
    )
    parser.add_argument(
        "--source", help="dataset folder to start from (sets ingest.source in params.yaml)"
    )
    parser.add_argument("--profile", help="smoke, demo or full (sets profile in params.yaml)")
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument(
        "--no-push", action="store_true", help="do not push the release to the DVC remote"
    )
    parser.set_defaults(func=run)


def set_params(path: Path, source: str | None, profile: str | None) -> bool:
    """Write the requested source/profile into params.yaml, keeping its comments; True if changed."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(path.read_text(encoding="utf-8"))
    changed = False
    if profile is not None and data.get("profile") != profile:
        if profile not in data.get("profiles", {}):
            raise ValueError(
                f"{path}: unknown profile {profile!r}; defined: {', '.join(data['profiles'])}"
            )
        data["profile"] = profile
        changed = True
    if source is not None:
        resolved = os.path.relpath(Path(source).resolve(), path.resolve().parent)
        if data["ingest"].get("source") != resolved:
            if not Path(source).exists():
                raise FileNotFoundError(f"{source}: source dataset folder not found")
            data["ingest"]["source"] = resolved
            changed = True
    if changed:
        from conditioning.dataset import atomic_open

        with atomic_open(path) as handle:
            yaml.dump(data, handle)
    return changed


def _dvc(*args: str) -> None:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    print("+ dvc " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "dvc", *args], check=True, env=env)


def run(args) -> int:
    from ..stages import PATHS, load_params

    params_path = Path(args.params)
    if set_params(params_path, args.source, args.profile):
        print(f"updated {params_path}: profile / ingest.source")
    params = load_params(params_path)
    if not Path(".dvc").is_dir():
        _dvc("init", "--no-scm" if not Path(".git").exists() else "-q")
    try:
        _dvc("repro")
        if not args.no_push:
            _dvc("push", "release")
    except subprocess.CalledProcessError as exc:
        print(f"radsynth run: {' '.join(exc.cmd[2:4])} failed (exit {exc.returncode}); "
              "finished stages are cached, `dvc repro` resumes from the failed one", file=sys.stderr)  # fmt: skip
        return exc.returncode or 1
    release = Path(PATHS["releases"]) / str(params["release"]["name"])
    print(f"\nRadSynth main job done (profile {params['profile']}):")
    print(
        f"  release:      {release}/  (datasheet.md, lineage.json, manifest.csv, datalist.json, dicom/)"
    )
    print(
        f"  audit report: {PATHS['audit']}/report.html  (auditors only: it shows training images)"
    )
    print(
        f"                {release}/audit/report-public.html  (the image-free copy in the release)"
    )
    print(f"  sample grid:  {release}/sample_grid.png")
    print(f"  metrics:      {PATHS['evaluation']}/metrics.json  (dvc metrics show)")
    return 0
