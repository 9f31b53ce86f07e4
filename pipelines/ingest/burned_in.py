"""Text burned into pixels (names, ids, dates): no header scrub removes it, so ingest refuses
DICOM that declares or usually carries it, blanks the regions the user names, and screens every
2D image for text-like marks near its borders (an OCR-free heuristic that warns, never decides).
"""

from __future__ import annotations

import numpy as np

# secondary capture (screenshots, scanned documents): text is the rule, not the exception
SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}
USUALLY_ANNOTATED = {"US": "ultrasound", "SC": "secondary capture", "XC": "photograph"}
BORDER = 0.2  # the outer fifth of each side: where scanners print patient data
MIN_GLYPHS_IN_A_LINE = 5


def burned_in_risk(ds) -> str | None:
    """Why this DICOM object may show patient text in its pixels, or None. An explicit
    BurnedInAnnotation = NO is trusted; YES, ultrasound and secondary capture are not."""
    declared = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if declared == "YES":
        return "burned-in annotation (BurnedInAnnotation = YES)"
    if declared == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in USUALLY_ANNOTATED:
        return f"{USUALLY_ANNOTATED[modality]} ({modality}): usually carries burned-in text"
    if str(ds.get("SOPClassUID", "") or "") in SECONDARY_CAPTURE:
        return "secondary capture: usually carries burned-in text"
    return None


def parse_box(text: str) -> tuple[int, int, int, int]:
    """'x0,y0,x1,y1' in source pixels (x1, y1 exclusive)."""
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--scrub-burned-in {text!r}: expected x0,y0,x1,y1 in pixels") from None
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"--scrub-burned-in {text!r}: need 0 <= x0 < x1 and 0 <= y0 < y1")
    return x0, y0, x1, y1


def scrub(pixels: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A copy with every box (of each slice, for a volume) set to the image's minimum."""
    out = np.array(pixels, copy=True)
    for x0, y0, x1, y1 in boxes:
        out[..., y0:y1, x0:x1] = out.min()
    return out


def looks_like_text(pixels: np.ndarray) -> bool:
    """True when the border bands of a 2D image hold a line of small, bright, separate marks of
    glyph size (at least MIN_GLYPHS_IN_A_LINE side by side): the shape of printed text."""
    from scipy import ndimage

    h, w = pixels.shape
    if min(h, w) < 64:
        return False
    low, high = float(np.median(pixels)), float(pixels.max())
    if high <= low:
        return False
    bright = pixels >= low + 0.5 * (high - low)
    frame = np.zeros_like(bright)
    bh, bw = int(h * BORDER), int(w * BORDER)
    frame[:bh], frame[-bh:], frame[:, :bw], frame[:, -bw:] = True, True, True, True
    labels, count = ndimage.label(bright & frame, structure=np.ones((3, 3)))
    if count < MIN_GLYPHS_IN_A_LINE:
        return False
    glyphs = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        gh, gw = box[0].stop - box[0].start, box[1].stop - box[1].start
        if not (5 <= gh <= max(6, 0.08 * h) and gw <= 1.5 * gh):
            continue
        fill = float((labels[box] == index).sum()) / (gh * gw)
        if fill >= 0.1:
            glyphs.append(((box[0].start + box[0].stop) / 2, box[1].start, gh))
    return _longest_line(glyphs) >= MIN_GLYPHS_IN_A_LINE


def _longest_line(glyphs: list[tuple[float, int, int]]) -> int:
    """Most glyphs sharing a text line: centres within half a glyph height, neighbours less
    than three glyph heights apart."""
    best = 0
    for y, _, gh in glyphs:
        row = sorted(x for yy, x, _ in glyphs if abs(yy - y) <= gh / 2)
        run = 1
        for a, b in zip(row, row[1:], strict=False):
            run = run + 1 if b - a <= 3 * gh else 1
            best = max(best, run)
    return best
