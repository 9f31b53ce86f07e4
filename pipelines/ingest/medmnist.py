"""A MedMNIST archive (.npz with train/val/test `_images` and `_labels`): the splits are kept,
label indices become a categorical `label` (named with --label-names); each image is its own
patient (MedMNIST has no patient ids). The archive is read without unpickling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from conditioning.dataset import CATEGORICAL, Attribute

from .raster import to_grey
from .source import IngestOptions, IngestReport, SourceImage

SPLITS = ("train", "val", "test")


def _names(count: int, options: IngestOptions) -> list[str]:
    if options.label_names is None:
        return [str(i) for i in range(count)]
    names = list(options.label_names)
    if len(names) < count:
        raise ValueError(
            f"--label-names gives {len(names)} name(s) but the labels go up to index {count - 1}"
        )
    return names


def read_medmnist(
    source: Path, options: IngestOptions, report: IngestReport
) -> Iterator[SourceImage]:
    """Yield every image of every split in the archive."""
    if source.is_dir():
        archives = sorted(source.glob("*.npz"))
        if len(archives) != 1:
            raise ValueError(f"{source}: expected one .npz archive, found {len(archives)}")
        source = archives[0]
    report.files_read += 1
    try:
        archive = np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{source}: not a readable .npz archive ({exc})") from None
    with archive:
        present = [s for s in SPLITS if f"{s}_images" in archive.files]
        if not present:
            raise ValueError(f"{source}: no train_images/val_images/test_images arrays")
        try:
            arrays = {s: (archive[f"{s}_images"], archive[f"{s}_labels"]) for s in present}
        except KeyError as exc:
            raise ValueError(f"{source}: {exc.args[0]} is missing") from None
        except ValueError as exc:  # object arrays would need unpickling
            raise ValueError(f"{source}: unreadable array ({exc})") from None
    for split, (images, labels) in list(arrays.items()):
        if len(images) != len(labels):
            raise ValueError(f"{source}: {split}_images and {split}_labels differ in length")
        if labels.dtype.kind not in "iub":
            raise ValueError(f"{source}: {split}_labels must hold integer class indices")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{source}: {split}_labels holds negative class indices")
        arrays[split] = (images, labels.reshape(len(labels), -1).astype(np.int64))
    width = max(labels.shape[1] for _, labels in arrays.values())
    top = max((int(labels.max()) + 1 for _, labels in arrays.values() if labels.size), default=0)
    multi = width > 1
    if width == 1:
        names = _names(top, options)
        report.attributes["label"] = Attribute("label", CATEGORICAL, tuple(names[:top]))
    elif multi:  # multi-label (e.g. ChestMNIST): one present/absent attribute per finding
        if top > 2:
            raise ValueError(f"{source}: multi-label arrays must hold 0/1 values")
        names = _names(width, options)
        for name in names[:width]:
            report.attributes[name] = Attribute(name, CATEGORICAL, ("0", "1"))
    report.notes.append("MedMNIST has no patient ids: each image is its own patient")
    for split, (images, labels) in arrays.items():
        rgb = images.ndim == 4 and images.shape[-1] == 3
        for index in range(len(images)):
            pixels = images[index]
            pixels = to_grey(pixels) if rgb else pixels.astype(np.float32)
            row = labels[index]
            if multi:
                conditions = {names[k]: str(int(row[k])) for k in range(width)}
            elif width == 1:
                conditions = {"label": names[int(row[0])]}
            else:
                conditions = {}
            yield SourceImage(pixels, f"{split}:{index}", conditions, split=split)
