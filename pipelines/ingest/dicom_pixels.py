"""One DICOM object's pixels in the units a radiologist reads: decoded, passed through the
Modality LUT (rescale slope/intercept), a VOI LUT table where the file has one, MONOCHROME1
inverted and colour turned grey, so every source reaches the common steps as plain intensities.

Window center/width is not burnt in: it is returned as a (low, high) window in the same units,
so `--intensity window` can use it while `percentile`/`minmax` still see the full range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
# Colour spaces whose first channel is already the luminance (Y = 0.299 R + 0.587 G + 0.114 B).
LUMA_FIRST = ("YBR_FULL", "YBR_FULL_422")
# Objects that carry PixelData but are not images to learn from (masks, dose grids, ...).
NOT_IMAGES = {
    "SEG": "segmentation object (a mask, not an image)",
    "RTDOSE": "RT dose grid, not an image",
    "RTSTRUCT": "RT structure set, not an image",
    "RTPLAN": "RT plan, not an image",
    "SR": "structured report, not an image",
    "PR": "presentation state, not an image",
    "KO": "key object selection, not an image",
    "REG": "registration object, not an image",
    "DOC": "encapsulated document, not an image",
}


class UnusableDicom(Exception):
    """This file cannot give an image; the message is the per-file skip reason."""


@dataclass
class Decoded:
    """Frames of one file, float32 (F, H, W), and the window the file prescribes, if any."""

    frames: np.ndarray
    window: tuple[float, float] | None


def _decoder(uid):
    from pydicom.pixels import get_decoder

    return get_decoder(uid)


def check_decodable(ds) -> None:
    """Raise UnusableDicom when the file has no image or no installed decoder for it."""
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NOT_IMAGES:
        raise UnusableDicom(f"not an image: {NOT_IMAGES[modality]}")
    if not any(k in ds for k in PIXEL_KEYWORDS):
        meta = getattr(ds, "file_meta", None)
        sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
        kind = f" ({sop.name})" if sop is not None and hasattr(sop, "name") else ""
        raise UnusableDicom(f"no pixel data{kind}")
    missing = [k for k in ("Rows", "Columns") if not ds.get(k)]
    if missing:
        raise UnusableDicom(f"image header lacks {' and '.join(missing)}")
    if "PixelData" not in ds:
        return  # float pixel data is always native
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        raise UnusableDicom("no transfer syntax in the file meta information")
    try:
        decoder = _decoder(uid)
    except NotImplementedError:
        raise UnusableDicom(f"unsupported transfer syntax {uid.name} ({uid})") from None
    if not decoder.is_available:
        raise UnusableDicom(
            f"no decoder for transfer syntax {uid.name} ({uid}); install radsynth[dicom-codecs]"
        )


def _grey(frames: np.ndarray, ds) -> np.ndarray:
    """Colour frames (..., 3) to luminance; palette colour through its LUT first."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frames = apply_color_lut(frames, ds).astype(np.float32)
        top = frames.max()
        samples = 3
        if top > 0:
            frames = frames / top
    if samples == 3 and frames.shape[-1] == 3:
        weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
        return frames.astype(np.float32) @ weights
    return frames


def _luma(ds) -> np.ndarray:
    """The Y channel of YBR_FULL pixels, decoded without colour conversion."""
    from pydicom.pixels import pixel_array

    return np.asarray(pixel_array(ds, raw=True)[..., 0], dtype=np.float32)


def _rescale_source(ds, index: int):
    """The dataset holding the Modality LUT for frame `index` (enhanced multi-frame files keep it
    in functional groups)."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
        return ds
    for groups, i in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        seq = ds.get(groups)
        if seq and len(seq) > i and "PixelValueTransformationSequence" in seq[i]:
            return seq[i].PixelValueTransformationSequence[0]
    return ds


def _voi_source(ds):
    """The dataset holding the VOI LUT or window (top level, else enhanced shared groups)."""
    if any(k in ds for k in ("VOILUTSequence", "WindowCenter")):
        return ds
    seq = ds.get("SharedFunctionalGroupsSequence")
    if seq and "FrameVOILUTSequence" in seq[0]:
        return seq[0].FrameVOILUTSequence[0]
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    if seq and "FrameVOILUTSequence" in seq[0]:
        return seq[0].FrameVOILUTSequence[0]
    return None


def _has_voi_table(voi) -> bool:
    seq = voi.get("VOILUTSequence") if voi is not None else None
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window(voi) -> tuple[float, float] | None:
    """DICOM linear window (PS3.3 C.11.2.1.2.1) as the (low, high) range it maps to 0..1."""
    if voi is None or "WindowCenter" not in voi or "WindowWidth" not in voi:
        return None
    try:
        center, width = _first(voi.WindowCenter), _first(voi.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    if not np.isfinite(center) or not np.isfinite(width) or width < 1:
        return None
    return (center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2)


def _stored_range(ds, rescale) -> tuple[float, float]:
    """The modality-unit range the stored bits can hold: the reference MONOCHROME1 flips about."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        raw = np.asarray([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        raw = np.asarray([0, 2**bits - 1])
    out = np.asarray(apply_modality_lut(raw, rescale), dtype=np.float64)
    return float(out.min()), float(out.max())


def decode(ds) -> Decoded:
    """Pixels of one file (already checked with `check_decodable`) as float32 (F, H, W)."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in LUMA_FIRST and int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        # Y of YBR_FULL is the luminance grey wants: skip the (slow) conversion to RGB
        frames = _luma(ds)
        return Decoded(frames[None] if frames.ndim == 2 else frames, None)
    array = ds.pixel_array  # pydicom converts other colour spaces to RGB
    frames_n = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames_n == 1:
        array = array[None]
    elif samples == 1 and array.ndim == 2:
        array = array[None]
    if samples == 3 or photometric == "PALETTE COLOR" or photometric in COLOUR:
        # colour images have no modality/VOI LUT: luminance is the intensity
        return Decoded(_grey(array, ds).astype(np.float32), None)
    if "PixelData" not in ds:  # float pixel data: already in real-world units
        return Decoded(array.astype(np.float32), None)
    voi = _voi_source(ds)
    out = np.empty(array.shape, dtype=np.float32)
    for i in range(array.shape[0]):
        rescale = _rescale_source(ds, i)
        frame = np.asarray(apply_modality_lut(array[i], rescale), dtype=np.float32)
        out[i] = frame
    window = _window(voi)
    table = _has_voi_table(voi)
    if table:
        # a table VOI LUT cannot be expressed as a window: apply it (it wins over a window)
        out = np.asarray(apply_voi(np.rint(out).astype(np.int64), voi), dtype=np.float32)
        window = None
    if photometric == "MONOCHROME1":
        low, high = (
            (float(out.min()), float(out.max()))
            if table
            else _stored_range(ds, _rescale_source(ds, 0))
        )
        out = (low + high) - out
        if window is not None:
            window = ((low + high) - window[1], (low + high) - window[0])
    return Decoded(out, window)
