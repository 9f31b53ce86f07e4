"""The synthetic set under audit: a generated set (`images/*.png` + `manifest.csv`) or a plain
folder of PNGs; its content hash (what the release gate compares) and its filtered copy."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conditioning.dataset import directory_sha256, replace_directory, staging_dir

from .errors import AuditError

MANIFEST = "manifest.csv"


@dataclass
class SyntheticSet:
    """The images of a set, in a fixed order, with their manifest rows when there is one."""

    root: Path
    files: list[str]  # relative POSIX paths of the images, sorted
    kind: str  # "generated" (has manifest.csv) or "folder"
    rows: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> manifest row
    manifest_columns: list[str] = field(default_factory=list)
    manifest_file_column: str = "file"


def set_sha256(set_dir: str | Path) -> str:
    """The set's content hash, as recorded by the audit and compared by the release gate."""
    root = Path(set_dir)
    if not root.is_dir():
        raise AuditError(root, "synthetic set directory does not exist")
    return directory_sha256(root)


def _manifest_rows(root: Path) -> tuple[list[str], dict[str, dict[str, str]], str]:
    path = root / MANIFEST
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AuditError(path, f"unreadable manifest ({exc})") from None
    column = next((c for c in ("file", "path", "image") if c in columns), None)
    if column is None:
        raise AuditError(path, f"no 'file' column (columns: {', '.join(columns) or 'none'})")
    by_file: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        raw = (row.get(column) or "").strip()
        if not raw:
            raise AuditError(path, f"line {line}: empty {column!r}")
        rel = Path(raw)
        if rel.is_absolute() or ".." in rel.parts:
            raise AuditError(path, f"line {line}: {raw!r} must be a relative path inside the set")
        candidates = [rel.as_posix(), (Path("images") / rel).as_posix()]
        found = next((c for c in candidates if (root / c).is_file()), None)
        if found is None:
            raise AuditError(root / raw, f"listed in {MANIFEST} line {line} but missing")
        if found in by_file:
            raise AuditError(path, f"line {line}: {raw!r} is listed twice")
        by_file[found] = row
    return columns, by_file, column


def open_set(set_dir: str | Path) -> SyntheticSet:
    """Find the images of a set; a generated set must list exactly its images in manifest.csv."""
    root = Path(set_dir)
    if not root.is_dir():
        raise AuditError(root, "synthetic set directory does not exist")
    if (root / MANIFEST).is_file():
        columns, rows, column = _manifest_rows(root)
        on_disk = {p.relative_to(root).as_posix() for p in (root / "images").rglob("*.png")}
        unlisted = sorted(on_disk - set(rows))
        if unlisted:
            raise AuditError(root / unlisted[0], f"image not listed in {MANIFEST}")
        files = sorted(rows)
        kind = "generated"
    else:
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
        columns, rows, column, kind = [], {}, "file", "folder"
    if not files:
        raise AuditError(root, "holds no PNG image (expected images/*.png + manifest.csv or *.png)")
    return SyntheticSet(root, files, kind, rows, columns, column)


def read_image01(path: Path) -> np.ndarray:
    """One PNG as float32 (H, W) in [0, 1]; colour is converted to grey (luma)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "L":
                return np.asarray(image, dtype=np.float32) / 255.0
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image).astype(np.float32)
                return np.clip(array / 65535.0, 0.0, 1.0)
            if image.mode in ("RGB", "RGBA", "LA", "P", "1"):
                return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            raise AuditError(path, f"unsupported PNG mode {image.mode}")
    except FileNotFoundError:
        raise AuditError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(path, f"unreadable image ({exc})") from None


def load_images(
    synthetic: SyntheticSet, expected_shape: tuple[int, int], progress: bool = True
) -> np.ndarray:
    """All images of the set as (N, H, W) float32; a size that differs from the dataset's fails."""
    from tqdm import tqdm

    out = np.empty((len(synthetic.files), *expected_shape), dtype=np.float32)
    for i, rel in enumerate(tqdm(synthetic.files, desc="read set", disable=not progress)):
        image = read_image01(synthetic.root / rel)
        if image.shape != tuple(expected_shape):
            raise AuditError(
                synthetic.root / rel,
                f"image size {image.shape[1]}x{image.shape[0]} differs from the dataset's "
                f"{expected_shape[1]}x{expected_shape[0]}",
            )
        out[i] = image
    return out


def write_filtered_copy(synthetic: SyntheticSet, drop: set[str], out: str | Path) -> Path:
    """Copy the set without the images in `drop` (and their manifest rows), atomically."""
    out = Path(out).resolve()
    if out == synthetic.root.resolve() or synthetic.root.resolve() in out.parents:
        raise AuditError(out, "the filtered copy must not be inside the audited set")
    out.parent.mkdir(parents=True, exist_ok=True)
    drop = set(drop)
    for rel in list(drop):  # a dropped image's other files (e.g. its mask_file) go too
        for value in synthetic.rows.get(rel, {}).values():
            value = (value or "").strip()
            if value and not Path(value).is_absolute() and ".." not in Path(value).parts:
                if (synthetic.root / value).is_file() and value != MANIFEST:
                    drop.add(Path(value).as_posix())
    stage = staging_dir(out)
    try:
        for path in sorted(synthetic.root.rglob("*")):
            rel = path.relative_to(synthetic.root).as_posix()
            if path.is_dir() or rel in drop or rel == MANIFEST:
                continue
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        if synthetic.kind == "generated":
            with (stage / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=synthetic.manifest_columns)
                writer.writeheader()
                for rel, row in synthetic.rows.items():  # the manifest's own order
                    if rel not in drop:
                        writer.writerow(row)
        if not any(stage.rglob("*.png")):
            raise AuditError(out, "every image was flagged: the filtered copy would be empty")
        replace_directory(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return out
