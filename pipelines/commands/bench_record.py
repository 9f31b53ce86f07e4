"""What every `radsynth bench` section shares: the document and its marked sections, the
provenance lines (machine, date, command), and the rows file an interrupted run resumes from."""

from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

DOC = Path("docs") / "BENCHMARKS.md"


def exact_command(args) -> str:
    """The command line as typed (cli.main keeps argv), so the document says how to redo it."""
    return shlex.join(["radsynth", *getattr(args, "argv", [])])


HEADER = """# Benchmarks

Written by `radsynth bench` (do not edit by hand: each section is replaced by the command named in
it). `radsynth bench all` runs every section; `radsynth bench speed` and `radsynth bench utility`
run one. Numbers depend on the machine and on what else runs on it."""


def write_section(doc: Path, name: str, body: str) -> None:
    if not doc.is_file():
        from conditioning.dataset import write_text_atomic

        doc.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(doc, HEADER + "\n")
    replace_section(doc, name, body)


def publish(doc, name: str, heading: str, intro: str, result: dict, table: str, written: list,
             shared: bool = False) -> None:  # fmt: skip
    """Write one benchmark section (heading, intro, provenance, table) into `doc`; print it."""
    body = "\n".join([heading, "", intro, "", *provenance(result, shared), "", table])
    write_section(Path(doc), name, body)
    print(table)
    print("written: " + ", ".join(str(p) for p in [*written, doc]))


def provenance(result: dict, shared: bool = False) -> list[str]:
    """The machine, date, wall time and command lines every benchmark section starts with."""
    note = " (shared machine: other jobs ran at the same time)" if shared else ""
    return [
        f"- machine: {result['machine']}",
        f"- date: {result['date']}; wall time {result['seconds']:.0f} s{note}",
        f"- command: `{result['command']}`",
    ]


def machine_description(threads: int | None = None) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({threads or torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def replace_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the part of `doc` between `<!-- name:start -->` and `<!-- name:end -->`."""
    from conditioning.dataset import write_text_atomic

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_text_atomic(doc, text)


def synthetic_id(directory: str | None) -> str | None:
    """A synthetic set is identified by the hash of its manifest (ids, files, conditions, seeds,
    model hash)."""
    if not directory:
        return None
    import hashlib

    return hashlib.sha256((Path(directory) / "manifest.csv").read_bytes()).hexdigest()


def read_rows(path: Path) -> list[dict]:
    """Finished rows of earlier runs (a torn last line from an interruption is skipped)."""
    entries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("row"), dict)]
