"""Where the app may read from and who is looking: one frozen object built from the environment
(or `streamlit run apps/app.py -- --data-root DIR --auditor --reader-db FILE`).

The data root bounds everything the app opens; auditor access is off unless switched on by the
operator, because audit galleries show training images that clinicians must not see.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_DATA_ROOT = "RADSYNTH_DATA_ROOT"
ENV_AUDITOR = "RADSYNTH_AUDITOR"
ENV_READER_DB = "RADSYNTH_READER_DB"
ENV_THREADS = "RADSYNTH_TORCH_THREADS"
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AppConfig:
    data_root: Path  # resolved; the only tree the app reads models, datasets and reports from
    auditor: bool  # True: audit galleries (training images) may be shown
    reader_db: Path  # SQLite file of reader-study ratings
    torch_threads: int = 0  # 0: chosen from the machine's load at each request

    @property
    def role(self) -> str:
        return "auditor" if self.auditor else "clinician"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="apps/app.py", add_help=False)
    parser.add_argument("--data-root")
    parser.add_argument("--reader-db")
    parser.add_argument("--auditor", action="store_true")
    parser.add_argument("--threads", type=int)
    args, _ = parser.parse_known_args(argv)
    return args


def load_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> AppConfig:
    """Command-line flags (after `--`) win over the environment; defaults: the repository root,
    clinician view, `<data root>/runs/reader-study.sqlite`."""
    env = dict(os.environ if env is None else env)
    args = _parse_args(list(argv or []))
    raw_root = args.data_root or env.get(ENV_DATA_ROOT) or str(REPO_ROOT)
    root = Path(raw_root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data root {raw_root!r} ({ENV_DATA_ROOT}) is not a directory")
    root = root.resolve(strict=True)
    auditor = args.auditor or env.get(ENV_AUDITOR, "").strip().lower() in TRUE
    raw_db = args.reader_db or env.get(ENV_READER_DB)
    reader_db = Path(raw_db).expanduser() if raw_db else root / "runs" / "reader-study.sqlite"
    raw_threads = args.threads if args.threads is not None else env.get(ENV_THREADS, "0")
    try:
        threads = max(0, int(raw_threads))
    except ValueError:
        raise ValueError(f"{ENV_THREADS}={raw_threads!r} is not a whole number") from None
    return AppConfig(root, auditor, reader_db, threads)


def torch_threads(config: AppConfig) -> int:
    """Threads for one generation request. On a busy machine (load average at or above the
    core count) one thread: oversubscribed OpenMP threads spin and run many times slower
    (measured: 16 images of 64x64, 20 steps, 5 s with 1 thread vs 49 s with 2 at load 9 on 2
    cores)."""
    if config.torch_threads:
        return config.torch_threads
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return 1 if load >= cores - 0.5 else min(cores, 4)
