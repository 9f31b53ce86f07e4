"""Versioning a release: `dvc add` + `dvc push` to the configured remote (a local one by
default, see .dvc/config), then a git commit of the .dvc pointer and a tag."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


class VersioningError(RuntimeError):
    """DVC or git refused; the release itself is complete on disk."""


def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise VersioningError(f"{' '.join(cmd)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def find_root(start: Path, marker: str) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / marker).exists():
            return folder
    return None


def version_release(release_dir: Path, remote: str | None = None, tag: bool = True) -> dict:
    """Track `release_dir` with DVC, push it, and commit + tag its pointer in git.

    Returns what was done. Outside a DVC project nothing is versioned (reported, not an error).
    """
    release_dir = release_dir.resolve()
    done: dict = {"dvc": None, "pushed_to": None, "git_tag": None}
    dvc_root = find_root(release_dir.parent, ".dvc")
    if dvc_root is None:
        log.warning("%s is not inside a DVC project: release not versioned", release_dir.name)
        return done
    rel = release_dir.relative_to(dvc_root).as_posix()
    _run(["dvc", "add", rel], dvc_root)
    pointer = f"{rel}.dvc"
    done["dvc"] = pointer
    push = ["dvc", "push", pointer] + (["-r", remote] if remote else [])
    _run(push, dvc_root)
    done["pushed_to"] = remote or _run(["dvc", "remote", "default"], dvc_root).strip() or "default"
    if tag and find_root(dvc_root, ".git") is not None:
        gitignore = (release_dir.parent / ".gitignore").relative_to(dvc_root).as_posix()
        paths = [pointer] + ([gitignore] if (dvc_root / gitignore).exists() else [])
        _run(["git", "add", "--", *paths], dvc_root)
        _run(
            ["git", "commit", "-m", f"Release {release_dir.name}", "--only", "--", *paths], dvc_root
        )
        name = f"release/{release_dir.name}"
        _run(["git", "tag", "-a", name, "-m", f"RadSynth release {release_dir.name}"], dvc_root)
        done["git_tag"] = name
    return done
