"""`radsynth ingest SOURCE --out DIR`: turn a folder, label table, DICOM series, NIfTI volumes or
a MedMNIST archive into a validated RadSynth dataset (docs/dataset-format.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.ingest.burned_in import parse_box
from pipelines.ingest.raster import DEFAULT_MAX_PIXELS


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.rpartition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LEFT=RIGHT")
    return name, value


def register(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="build a dataset from a folder, CSV table, DICOM, NIfTI or MedMNIST source",
        description="Resize, normalise, deduplicate, split by patient and pseudonymise a source "
        "into a RadSynth dataset. Skipped files are listed on the console, never in the dataset.",
    )
    _source_options(p)
    _image_options(p)
    _dataset_options(p)
    _label_options(p)
    _safety_options(p)
    p.set_defaults(func=run)


def _source_options(p) -> None:
    """What is read and where the dataset goes."""
    from pipelines.ingest.detect import KINDS

    p.add_argument("source", type=Path, help="source folder or file")
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--kind", choices=KINDS, help="source kind (default: detected)")
    p.add_argument("--labels", type=Path, help="label CSV of a table source (default: the one CSV)")


def _image_options(p) -> None:
    """How every image is shaped and normalised."""
    p.add_argument("--dimensionality", choices=("2D", "3D"), default="2D")
    p.add_argument(
        "--slice-axis",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="axis of (D, H, W) volumes that 2D slicing walks (default 0)",
    )
    p.add_argument("--depth", type=int, help="3D: resample every volume to D slices")
    p.add_argument("--aspect", choices=("pad", "crop", "stretch"), default="pad")
    p.add_argument(
        "--intensity",
        choices=("percentile", "minmax", "window"),
        default="percentile",
        help="normalisation to [0, 1] (default percentile 0.5..99.5)",
    )
    p.add_argument("--bit-depth", type=int, choices=(8, 16), default=8)


def _dataset_options(p) -> None:
    """The patient split and what the dataset records."""
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split")
    p.add_argument("--val-fraction", type=float, default=0.1, help="of patients (default 0.1)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="of patients, when the source has no test split (default 0.1)",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first unusable file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument(
        "--key-file",
        type=Path,
        help="pseudonym key (default $RADSYNTH_PSEUDONYM_KEY_FILE or "
        "~/.config/radsynth/pseudonym.key, created if missing)",
    )
    p.add_argument("--name", help="dataset name (default: the --out folder name)")
    p.add_argument("--modality", help="DICOM modality code to record (e.g. DX, CR, MR)")


def _label_options(p) -> None:
    """Where the conditions come from, per source kind (folder, table, MedMNIST)."""
    p.add_argument(
        "--preset", default="auto", help="folder label preset: auto (detect), none, kermany"
    )
    p.add_argument("--label-attribute", help="folder: attribute the labels fill (default label)")
    p.add_argument(
        "--label-pattern",
        type=_pair,
        action="append",
        default=[],
        metavar="REGEX=VALUE",
        help="folder: file names matching REGEX get VALUE",
    )
    p.add_argument(
        "--patient-pattern", metavar="REGEX", help="folder: patient id from the file name (group 1)"
    )
    p.add_argument("--id-column", help="table: column naming the image file")
    p.add_argument(
        "--column",
        type=_pair,
        action="append",
        default=[],
        metavar="ATTRIBUTE=COLUMN",
        help="table: a condition attribute from a column (patient=COL, split=COL too)",
    )
    p.add_argument("--label-names", help="medmnist: comma-separated names of label 0, 1, ...")


def _safety_options(p) -> None:
    """Limits and burned-in text: what an image must pass to be ingested."""
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"skip PNG/JPEG/... images larger than this many pixels (default {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument(
        "--scrub-burned-in",
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="blank this box (source pixels) in every image before resizing, and ingest DICOM "
        "flagged for burned-in text (repeatable)",
    )
    p.add_argument(
        "--accept-burned-in",
        action="store_true",
        help="ingest DICOM flagged for burned-in text (BurnedInAnnotation YES, ultrasound, "
        "secondary capture) without blanking: only for pixels known to be free of text",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from pipelines.ingest.pipeline import ingest
    from pipelines.ingest.source import IngestOptions

    options = IngestOptions(
        size=args.size,
        dimensionality=args.dimensionality,
        slice_axis=args.slice_axis,
        depth=args.depth,
        aspect=args.aspect,
        intensity=args.intensity,
        bit_depth=args.bit_depth,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        strict=args.strict,
        name=args.name,
        modality=args.modality,
        preset=args.preset,
        label_attribute=args.label_attribute,
        label_patterns=list(args.label_pattern),
        patient_pattern=args.patient_pattern,
        labels=args.labels,
        id_column=args.id_column,
        columns=dict(args.column),
        label_names=[n.strip() for n in args.label_names.split(",")] if args.label_names else None,
        max_pixels=args.max_pixels,
        accept_burned_in=args.accept_burned_in,
        scrub_boxes=[parse_box(b) for b in args.scrub_burned_in],
    )
    dataset = ingest(
        args.source,
        args.out,
        options,
        kind=args.kind,
        key_file=args.key_file,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    report = dataset.info["ingest_report"]
    counts = dataset.info["counts"]
    per_split = ", ".join(f"{s} {counts[s]['images']}" for s in counts)
    total = sum(counts[s]["images"] for s in counts)
    print(
        f"{dataset.root}: {total} images ({per_split}); "
        f"{report['files_skipped']} file(s) skipped, "
        f"{report['duplicates_removed']} duplicate(s) removed"
    )
    return 0
