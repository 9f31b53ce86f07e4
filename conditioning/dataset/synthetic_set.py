"""Reading a synthetic image set: what `radsynth generate` writes (images/ + manifest.csv) or a
plain folder of PNG files. The audit, its content hash, the release gate, the release itself,
evaluation and the app all read sets through here, so "the files of a set" has one meaning.

Layout of a generated set:
  images/<id>.png            8- or 16-bit greyscale
  masks/<id>.png             optional, paired by the manifest's `mask_file`
  manifest.csv               id, file, <condition columns...>, seed, sampler, steps, guidance,
                             model_hash[, mask_file]
  generation.json            the request; its `n` tells a complete set from an interrupted one

A set holds regular files only: a hidden name or a symbolic link anywhere inside is refused, so
what is hashed, audited and released can never differ (the set folder itself may be a link).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .pixels import read_png, to_unit_range

SET_MANIFEST = "manifest.csv"
GENERATION_REQUEST = "generation.json"
GENERATION_COLUMNS = ("seed", "sampler", "steps", "guidance", "model_hash")
FILE_COLUMNS = ("file", "path", "image")  # the first present names each row's image


@dataclass
class SyntheticImage:
    id: str
    file: str
    conditions: dict[str, str] = field(default_factory=dict)
    generation: dict[str, str] = field(default_factory=dict)
    mask_file: str | None = None
    row: dict[str, str] = field(default_factory=dict)  # the manifest row as written


@dataclass
class SyntheticSet:
    root: Path
    images: list[SyntheticImage]
    condition_names: list[str]
    has_manifest: bool
    files: list[str] = field(default_factory=list)  # every file of the set: what the hash covers
    manifest_columns: list[str] = field(default_factory=list)
    incomplete: str | None = None  # why the set is known to be unfinished, else None

    @property
    def kind(self) -> str:
        return "generated" if self.has_manifest else "folder"

    @property
    def image_files(self) -> list[str]:
        return [item.file for item in self.images]

    def load_image(self, item: SyntheticImage) -> np.ndarray:
        """Float32 in [0, 1], (H, W)."""
        return to_unit_range(read_png(self.root / item.file))

    def load_all(self) -> np.ndarray:
        """All images as (N, H, W) float32; every image must have the same size."""
        arrays = [self.load_image(item) for item in self.images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DatasetError(self.root, f"images differ in size: {sorted(shapes)}")
        return np.stack(arrays)

    def load_mask(self, item: SyntheticImage) -> np.ndarray | None:
        if item.mask_file is None:
            return None
        return (read_png(self.root / item.mask_file) > 0).astype(np.uint8)


def set_files(root: str | Path) -> list[str]:
    """Every file of the set (sorted relative POSIX paths). Hidden names, symbolic links and
    special files are refused: they are how a set's hashed and released content could differ."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "synthetic set directory does not exist")
    files: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(folder) / name
            if name.startswith("."):
                raise DatasetError(
                    path,
                    "hidden file in a synthetic set (a leftover of an interrupted write?): "
                    "sets hold visible files only; remove it and audit again",
                )
            if path.is_symlink():
                raise DatasetError(
                    path,
                    "symbolic link in a synthetic set: sets hold real files only (what is "
                    "audited must be what is released); copy the target in instead",
                )
            if name in names and not path.is_file():
                raise DatasetError(path, "not a regular file")
        files += [(Path(folder) / n).relative_to(root).as_posix() for n in names]
    return sorted(files)


def _feed(digest, rel: str, data: bytes) -> None:
    digest.update(rel.encode() + b"\0" + data + b"\0")


def read_file_bytes(path: Path) -> bytes:
    """A file's bytes, refusing a symbolic link put in its place since the set was listed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise DatasetError(path, f"cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def snapshot_set(path: str | Path) -> tuple[dict[str, bytes], str]:
    """Every file's bytes, read once, and the set's content hash over exactly those bytes: the
    release writes what it hashed, never a second read that a swap could change."""
    root = Path(path)
    digest = hashlib.sha256()
    content: dict[str, bytes] = {}
    for rel in set_files(root):
        content[rel] = read_file_bytes(root / rel)
        _feed(digest, rel, content[rel])
    return content, digest.hexdigest()


def set_sha256(path: str | Path) -> str:
    """The set's content hash (sorted relative paths and bytes of every file), as recorded by
    the audit and compared by the release gate."""
    root = Path(path)
    digest = hashlib.sha256()
    for rel in set_files(root):
        _feed(digest, rel, read_file_bytes(root / rel))
    return digest.hexdigest()


def folder_image_id(rel: str) -> str:
    """A plain folder's image id: its path without `.png` and without a leading `images/`,
    sub-folders joined by '_' (release writes `images/<id>.png`)."""
    stem = rel[: -len(".png")]
    if stem.startswith("images/"):
        stem = stem[len("images/") :]
    return stem.replace("/", "_")


def _incomplete(root: Path, count: int) -> str | None:
    """A folder with `generation.json` but no manifest: `radsynth generate` writes the manifest
    last, so its generation was interrupted."""
    request = root / GENERATION_REQUEST
    if not request.is_file():
        return None
    try:
        wanted = json.loads(request.read_text(encoding="utf-8")).get("n", "?")
    except (OSError, ValueError, AttributeError):
        wanted = "?"
    return (
        f"incomplete set: no {SET_MANIFEST} beside its {GENERATION_REQUEST}, so its generation "
        f"was interrupted ({count} of {wanted} images); re-run the same `radsynth generate` "
        "command to complete it"
    )


def load_synthetic_set(path: str | Path) -> SyntheticSet:
    """Read a generated set (with manifest) or a plain PNG folder; errors name the file."""
    root = Path(path)
    files = set_files(root)
    manifest = root / SET_MANIFEST
    if SET_MANIFEST not in files:
        pngs = [f for f in files if f.endswith(".png")]
        if not pngs:
            raise DatasetError(root, "holds no PNG image and no manifest.csv: empty synthetic set")
        images = [SyntheticImage(folder_image_id(f), f) for f in pngs]
        _unique_ids(root, images)
        return SyntheticSet(root, images, [], False, files, [], _incomplete(root, len(images)))
    images, columns, condition_names = _read_manifest(root, manifest, set(files))
    unlisted = sorted(
        f
        for f in files
        if f.startswith("images/") and f.endswith(".png") and f not in {i.file for i in images}
    )
    if unlisted:
        hint = (
            " (an interrupted generation: re-run the same `radsynth generate` command)"
            if GENERATION_REQUEST in files
            else ""
        )
        raise DatasetError(root / unlisted[0], f"image not listed in {SET_MANIFEST}{hint}")
    if not images:
        raise DatasetError(manifest, "lists no image: empty synthetic set")
    return SyntheticSet(root, images, condition_names, True, files, columns)


def _read_manifest(root: Path, manifest: Path, files: set[str]):
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(manifest, f"unreadable manifest ({exc})") from None
    column = next((c for c in FILE_COLUMNS if c in header), None)
    if column is None:
        raise DatasetError(manifest, f"missing column 'file' (columns: {', '.join(header)})")
    reserved = {"id", *FILE_COLUMNS, "mask_file", "origin", *GENERATION_COLUMNS}
    condition_names = [c for c in header if c not in reserved]
    images: list[SyntheticImage] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        rel = _inside(manifest, line, column, row.get(column))
        found = next((c for c in (rel, f"images/{rel}") if c in files), None)
        if found is None:
            raise DatasetError(root / rel, f"listed in {SET_MANIFEST} line {line} but missing")
        if found in seen:
            raise DatasetError(manifest, f"line {line}: {rel!r} is listed twice")
        seen.add(found)
        mask = row.get("mask_file") or None
        if mask is not None:
            mask = _inside(manifest, line, "mask_file", mask)
            if mask not in files:
                raise DatasetError(root / mask, f"listed in {SET_MANIFEST} line {line} but missing")
        images.append(
            SyntheticImage(
                (row.get("id") or "").strip() or folder_image_id(found),
                found,
                {c: row[c] for c in condition_names},
                {c: row[c] for c in GENERATION_COLUMNS if c in row},
                mask,
                row,
            )
        )
    _unique_ids(manifest, images)
    return images, header, condition_names


def _inside(manifest: Path, line: int, column: str, value: str | None) -> str:
    raw = (value or "").strip()
    rel = Path(raw)
    if not raw or rel.is_absolute() or ".." in rel.parts:
        raise DatasetError(
            manifest, f"line {line}: {column} {raw!r} must be a relative path inside the set"
        )
    return rel.as_posix()


def _unique_ids(where: Path, images: list[SyntheticImage]) -> None:
    seen: set[str] = set()
    for item in images:
        if item.id in seen or not item.id or "/" in item.id or item.id.startswith("."):
            raise DatasetError(where, f"image id {item.id!r} is empty, repeated or not a name")
        seen.add(item.id)
