"""`radsynth app`: start the Streamlit app (apps/app.py) on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "apps" / "app.py"


def register(sub) -> None:
    parser = sub.add_parser(
        "app", help="start the Streamlit app (generate, reader study, audit reports)"
    )
    parser.add_argument(
        "--data-root",
        help="the only folder the app reads models, datasets and reports from "
        "(default: RADSYNTH_DATA_ROOT or the repository)",
    )
    parser.add_argument(
        "--auditor",
        action="store_true",
        help="auditor access: show audit galleries, which contain training images",
    )
    parser.add_argument("--reader-db", help="SQLite file of reader-study ratings")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on")
    parser.set_defaults(func=run)


def command(args) -> list[str]:
    """The `streamlit run` command line for these options."""
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.port",
        str(args.port),
        "--server.address",
        args.address,
        "--browser.gatherUsageStats",
        "false",
        "--",
    ]
    if args.data_root:
        root = Path(args.data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: data root is not a directory")
        argv += ["--data-root", str(root.resolve())]
    if args.reader_db:
        argv += ["--reader-db", str(Path(args.reader_db).resolve())]
    if args.auditor:
        argv.append("--auditor")
    return argv


def run(args) -> int:
    argv = command(args)
    print(f"RadSynth app on http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    try:
        return subprocess.call(argv, env=os.environ.copy())
    except KeyboardInterrupt:
        return 130
