"""NIfTI source for `radsynth ingest`: a .nii/.nii.gz file, or a folder of them, with masks.

Orientation: every image is first turned to the closest canonical (RAS+) orientation with
nibabel, then yielded as a (D, H, W) volume in radiological display order:
    D = superior -> inferior, H = anterior -> posterior, W = patient right -> left.
So whatever the file's own orientation, `IngestOptions.slice_axis` of the yielded volume means
0 = axial, 1 = coronal, 2 = sagittal, and each 2D slice the core cuts along it is displayed the
usual way (anterior or superior at the top, patient's right on the image's left).
`spacing` is (D, H, W) in mm. A volume one voxel deep is yielded as a 2D image.

Masks pair with images by name: `X_label`, `X_mask`, `X_seg` (also `X_labels`, `X_masks`)
beside `X` or `X_image`/`X_img`, or a file of the same name in a `labels/` or `masks/` folder
beside the image (or beside its `images/` folder). The mask is binarised (> 0) and must have the
image's shape and lie on its grid, else the pair is skipped with the reason. 4D images give
their first volume, with a note.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .source import IngestError, IngestOptions, IngestReport, SourceImage

MASK_SUFFIXES = ("_label", "_labels", "_mask", "_masks", "_seg")
IMAGE_SUFFIXES = ("_image", "_img")
MASK_FOLDERS = {"labels", "label", "masks", "mask", "labelstr", "labelsts"}
IMAGE_FOLDERS = {"images", "image", "imagestr", "imagests"}
AFFINE_TOLERANCE = 1e-2  # mm / direction cosine: a mask must lie on its image's grid


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _strip(name: str, suffixes: tuple[str, ...]) -> tuple[str, bool]:
    lowered = name.lower()
    for suffix in suffixes:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], True
    return name, False


def _home(path: Path) -> Path:
    """The folder an image and its mask share: labels/, masks/ and images/ count as their
    parent."""
    parent = path.parent
    if parent.name.lower() in MASK_FOLDERS | IMAGE_FOLDERS:
        return parent.parent
    return parent


def _is_mask(path: Path) -> bool:
    return path.parent.name.lower() in MASK_FOLDERS or _strip(stem(path), MASK_SUFFIXES)[1]


def _key(path: Path) -> tuple[Path, str]:
    """(shared folder, base name): equal for an image and its mask."""
    suffixes = MASK_SUFFIXES if _is_mask(path) else IMAGE_SUFFIXES
    base, _ = _strip(stem(path), suffixes)
    return _home(path), base.lower()


def nifti_files(source: Path) -> list[Path]:
    if source.is_file():
        if not is_nifti(source):
            raise IngestError(f"{source}: not a NIfTI file (.nii or .nii.gz)")
        return [source]
    if not source.is_dir():
        raise IngestError(f"{source}: no such file or folder")
    return sorted(
        p
        for p in source.rglob("*")
        if p.is_file()
        and is_nifti(p)
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )


def pair_masks(files: list[Path], report: IngestReport) -> list[tuple[Path, Path | None]]:
    """Images with their mask (or None), in file order; masks without an image are skipped."""
    images = [p for p in files if not _is_mask(p)]
    masks: dict[tuple[Path, str], list[Path]] = {}
    for path in files:
        if _is_mask(path):
            masks.setdefault(_key(path), []).append(path)
    pairs, used = [], set()
    for image in images:
        found = masks.get(_key(image), [])
        if len(found) > 1:
            for extra in found[1:]:
                report.skip(extra, "more than one mask for one image (the first by name is used)")
        mask = found[0] if found else None
        if found:
            used.update(found)
        pairs.append((image, mask))
    for group in masks.values():
        for mask in group:
            if mask not in used:
                report.skip(mask, "mask without a matching image")
    return pairs


def _display_order(image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A RAS-canonical image as (D, H, W) = (S->I, A->P, R->L) float32 and its spacing."""
    import nibabel as nib

    canonical = nib.as_closest_canonical(image)
    data = np.asarray(canonical.get_fdata(dtype=np.float32))
    volume = np.ascontiguousarray(data[::-1, ::-1, ::-1].transpose(2, 1, 0))
    zooms = [float(z) for z in canonical.header.get_zooms()[:3]]
    return volume, (zooms[2], zooms[1], zooms[0])


def _load(path: Path, report: IngestReport, what: str):
    """A 3D nibabel image (first volume of a 4D one), or None after recording why not."""
    import nibabel as nib

    report.files_read += 1
    try:
        image = nib.load(path)
        shape = image.shape
    except Exception as exc:  # nibabel raises many types for damaged files
        report.skip(path, f"unreadable NIfTI {what} ({type(exc).__name__})")
        return None
    if len(shape) == 2:
        image = nib.Nifti1Image(np.asarray(image.dataobj)[..., None], image.affine, image.header)
    elif len(shape) == 4 or (len(shape) > 4 and all(s == 1 for s in shape[4:])):
        frames = shape[3]
        if frames > 1:
            report.notes.append(f"a 4D NIfTI {what} ({frames} volumes) gave its first volume")
        image = image.slicer[..., 0] if len(shape) == 4 else image.slicer[:, :, :, 0]
    elif len(shape) != 3:
        report.skip(path, f"NIfTI {what} has {len(shape)} dimensions; 2, 3 or 4 are supported")
        return None
    return image


def _pair_problem(image, mask) -> str | None:
    if mask.shape[:3] != image.shape[:3]:
        return (
            f"mask shape {tuple(mask.shape[:3])} differs from image shape {tuple(image.shape[:3])}"
        )
    if not np.allclose(mask.affine, image.affine, atol=AFFINE_TOLERANCE):
        return "mask does not lie on the image's voxel grid (affines differ)"
    return None


def _read_pair(image_path: Path, mask_path: Path | None, report: IngestReport, root: Path):
    image = _load(image_path, report, "image")
    if image is None:
        if mask_path is not None:
            report.skip(mask_path, "its image cannot be read")
        return None
    mask_volume = None
    if mask_path is not None:
        mask = _load(mask_path, report, "mask")
        if mask is None:
            report.skip(image_path, "its mask cannot be read")
            return None
        problem = _pair_problem(image, mask)
        if problem:
            report.skip(image_path, problem)
            report.skip(mask_path, problem)
            return None
        mask_volume = (_display_order(mask)[0] > 0).astype(np.uint8)
    try:
        volume, spacing = _display_order(image)
    except Exception as exc:
        report.skip(image_path, f"NIfTI image data cannot be read ({type(exc).__name__})")
        return None
    if not np.all(np.isfinite(volume)):
        report.skip(image_path, "NIfTI image holds NaN or infinite values")
        return None
    if volume.shape[0] == 1:  # one slice deep: a 2D image
        volume, spacing = volume[0], spacing[1:]
        mask_volume = None if mask_volume is None else mask_volume[0]
    home, base = _key(image_path)
    try:
        rel = home.relative_to(root).as_posix()
    except ValueError:
        rel = ""
    return SourceImage(
        pixels=volume,
        patient_key=f"nifti:{rel}/{base}",
        mask=mask_volume,
        spacing=tuple(spacing),
    )


def read_nifti(source: Path, options: IngestOptions, report: IngestReport) -> Iterator[SourceImage]:
    """Yield each NIfTI image (with its mask when one pairs with it); see the module docstring.
    `options` is not needed: the volume's axes are fixed, the core slices along slice_axis."""
    del options
    source = Path(source)
    files = nifti_files(source)
    root = source if source.is_dir() else source.parent
    if source.is_file():
        if _is_mask(source):
            raise IngestError(f"{source}: is a mask; pass its image (the mask is found by name)")
        # one image: its mask is found beside it, or in a labels/ or masks/ folder nearby
        nearby = [m for m in nifti_files(_home(source)) if _is_mask(m) and _key(m) == _key(source)]
        pairs = [(source, nearby[0] if nearby else None)]
    else:
        pairs = pair_masks(files, report)
    for image_path, mask_path in pairs:
        image = _read_pair(image_path, mask_path, report, root)
        if image is not None:
            yield image
