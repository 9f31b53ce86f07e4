"""`radsynth`: one sub-command per module in `pipelines.commands` (each has `register`)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Sub-command modules, in the order `radsynth --help` lists them.
COMMANDS = (
    "ingest",
    "validate",
    "subset",
    "train",
    "generate",
    "bench_sampling",
    "evaluate",
    "bench",
    "run",
    "stage",
    "audit",
    "audit_bench",
    "release",
    "augment",
    "app",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radsynth",
        description="Synthetic radiology images: ingest, train, generate, audit, release.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on the console")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, for outputs that say how to reproduce them
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from conditioning.dataset import DatasetError

    try:
        return int(args.func(args) or 0)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"radsynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radsynth {args.command}: interrupted; finished outputs are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
