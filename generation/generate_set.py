"""`radsynth generate`: a synthetic set on disk (images/, masks/, manifest.csv).

The plan (which conditions image i gets) depends only on the request, so re-running the same
command completes the missing images only, and a larger --n grows the set where the first
images keep their conditions (image i depends only on the seed, i and its conditions). Each PNG
is written atomically as soon as its batch is done, and the manifest is rebuilt from the images
present at the end. Under
`accelerate launch` the batches of missing images are split between processes. A masked model draws its own
masks, or takes given ones (`masks=`): image i is generated to fit mask i mod M, and the given
mask is what is written beside it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conditioning.dataset import (
    CATEGORICAL,
    ConditionSchema,
    DatasetError,
    atomic_open,
    quantize,
    write_json_atomic,
)
from conditioning.dataset.pixels import read_stored, write_nifti, write_png
from conditioning.dataset.synthetic_set import GENERATION_REQUEST

from .config import BALANCED
from .sampling import Sampling

log = logging.getLogger("radsynth.generate")
REQUEST = GENERATION_REQUEST


def read_masks(directory: str | Path, image_size: list[int]) -> tuple[np.ndarray, str]:
    """Every mask file in `directory` (sorted by name; .png 2D or .nii.gz 3D, nonzero = inside) as
    (M, *image_size) uint8 in {0, 1}, and a digest of their pixels: the request records the digest,
    never the file names (they may carry patient identifiers)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(directory, "--masks must be a directory of mask files")
    files = sorted(
        f for f in directory.iterdir() if f.is_file() and f.name.endswith((".png", ".nii.gz"))
    )
    if not files:
        raise DatasetError(directory, "no mask file (.png or .nii.gz) in this directory")
    masks, digest = [], hashlib.sha256()
    for path in files:
        mask = read_stored(path)
        # an RGB(A) PNG: the masks we write are grey, painted ones may not be
        if mask.ndim == 3 and len(image_size) == 2 and mask.shape[-1] in (3, 4):
            mask = mask[..., 0]
        if list(mask.shape) != list(image_size):
            raise DatasetError(
                path, f"mask is {list(mask.shape)}, the model makes {list(image_size)} images"
            )
        binary = (mask > 0).astype(np.uint8)
        if not binary.any():
            raise DatasetError(path, "mask is empty (no nonzero pixel)")
        digest.update(binary.tobytes())
        masks.append(binary)
    return np.stack(masks), digest.hexdigest()


def image_id(index: int) -> str:
    return f"syn{index:06d}"


def plan_conditions(
    schema: ConditionSchema,
    n: int,
    fixed: dict[str, Any],
    balanced: str | None,
    seed: int,
    training: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The condition dict of each of the n images.

    Fixed attributes are the same for all; a continuous one given as a range `LO:HI` is drawn
    uniformly in it for every image (a scarce band, e.g. age_months=0:36), or, with `match`,
    from the training distribution within it. `grid`: the other categorical attributes cycle
    through every combination of their values (N spread evenly) and the other continuous ones are
    drawn uniformly over their range. `match`: the free attributes follow the training
    distribution recorded in the model (categorical combinations in proportion, continuous
    values by the training quantiles)."""
    fixed, ranges = requested_conditions(schema, fixed)
    rng = np.random.default_rng([seed, 7])
    if balanced is None:
        plan = [dict(fixed) for _ in range(n)]
        for name, (low, high) in ranges.items():
            _draw_uniform(plan, name, low, high, rng)
        return plan
    if balanced not in BALANCED:
        raise ValueError(f"--balanced must be one of {', '.join(BALANCED)}, got {balanced!r}")
    free = [a for a in schema.attributes if a.name not in fixed]
    categorical = [a for a in free if a.kind == CATEGORICAL]
    continuous = [a for a in free if a.kind != CATEGORICAL]
    if balanced == "grid":
        combos = [
            dict(zip([a.name for a in categorical], values, strict=True))
            for values in itertools.product(*(a.values for a in categorical))
        ]
        plan = [{**fixed, **combos[i % len(combos)]} for i in range(n)]
        for a in continuous:
            _draw_uniform(plan, a.name, *ranges.get(a.name, (a.minimum, a.maximum)), rng)
        return plan
    if not training:
        raise ValueError("this model records no training distribution; use --balanced grid")
    combos = [(dict(c["values"]), c["count"]) for c in training["combinations"]]
    combos = [(c, k) for c, k in combos if all(c.get(f) in (None, v) for f, v in fixed.items())]
    if not combos:
        raise ValueError(f"no training image matches {fixed}: nothing to match")
    weights = np.array([k for _, k in combos], dtype=float)
    quota = np.floor(weights / weights.sum() * n).astype(int)
    for i in np.argsort(-(weights / weights.sum() * n - quota), kind="stable")[: n - quota.sum()]:
        quota[i] += 1
    plan = []
    for (combo, _), count in zip(combos, quota, strict=True):
        chosen = {k: v for k, v in combo.items() if k in {a.name for a in categorical}}
        plan += [{**fixed, **chosen} for _ in range(count)]
    order = rng.permutation(len(plan))
    plan = [plan[i] for i in order]
    for a in continuous:
        quantiles = training["quantiles"].get(a.name)
        levels = np.linspace(0, 1, len(quantiles or [0]))
        low, high = 0.0, 1.0
        if quantiles and a.name in ranges:  # inverse-CDF sampling between the range's ends
            low, high = np.interp(ranges[a.name], quantiles, levels)
        for row in plan:
            if quantiles:
                value = np.interp(rng.uniform(low, high), levels, quantiles)
                row[a.name] = float(round(value, 2))
            elif a.name in ranges:
                row[a.name] = float(round(rng.uniform(*ranges[a.name]), 2))
    return plan


def _draw_uniform(plan: list[dict], name: str, low: float, high: float, rng) -> None:
    """Attribute `name` of every planned image drawn uniformly in [low, high], 2 decimals."""
    for row, value in zip(plan, rng.uniform(low, high, len(plan)), strict=True):
        row[name] = float(round(value, 2))


def requested_conditions(
    schema: ConditionSchema, conditions: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    """The fixed conditions (checked by the schema) and the `LO:HI` ranges of continuous ones."""
    ranges: dict[str, tuple[float, float]] = {}
    values = dict(conditions)
    for name, raw in conditions.items():
        if not (isinstance(raw, str) and ":" in raw) or name not in schema:
            continue
        attribute = schema[name]
        if attribute.kind == CATEGORICAL:
            raise ValueError(f"{name}={raw!r}: a LO:HI range needs a continuous attribute")
        low, high = (attribute.parse(part) for part in raw.split(":", 1))
        if low is None or high is None or not low < high:
            raise ValueError(f"{name}={raw!r}: a range is LO:HI with LO < HI")
        ranges[name] = (low, high)
        del values[name]
    fixed = {k: v for k, v in schema.validate_request(values).items() if v is not None}
    return fixed, ranges


def training_distribution(schema: ConditionSchema, conditions: list[dict[str, Any]]) -> dict:
    """Aggregate condition statistics of a training set (counts of categorical combinations,
    21 quantiles per continuous attribute): what `--balanced match` samples from."""
    names = [a.name for a in schema.attributes if a.kind == CATEGORICAL]
    counts: dict[str, int] = {}
    for c in conditions:
        key = json.dumps([[n, c.get(n)] for n in names])
        counts[key] = counts.get(key, 0) + 1
    quantiles = {}
    for a in schema.attributes:
        if a.kind != CATEGORICAL:
            values = [c[a.name] for c in conditions if c.get(a.name) is not None]
            if values:
                quantiles[a.name] = [float(q) for q in np.quantile(values, np.linspace(0, 1, 21))]
    combinations = [{"values": json.loads(k), "count": v} for k, v in sorted(counts.items())]
    return {"combinations": combinations, "quantiles": quantiles}


@dataclass(frozen=True)
class SetRequest:
    """Which images a set holds: how many, the conditions of every image (a continuous one may
    be a `LO:HI` range), the run seed, how the free attributes are spread (None, grid, match)
    and a directory of masks for a masked model to fit (image i gets mask i mod M)."""

    n: int
    conditions: dict[str, Any]
    seed: int
    balanced: str | None = None
    masks: str | Path | None = None


def generate_set(
    model,
    out: str | Path,
    asked: SetRequest,
    how: Sampling | None = None,
    *,
    accelerator=None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write (or complete) the synthetic set `asked` for, sampled `how` (unset options: the
    model's defaults); returns a summary."""
    n, conditions = asked.n, asked.conditions
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    given, masks_digest = None, None
    if asked.masks is not None:
        if not model.has_masks:
            raise ValueError("--masks: this model was trained without masks")
        given, masks_digest = read_masks(asked.masks, model.image_size)
    requested = _request_conditions(model.schema, conditions)
    training = model.config.get("training_conditions")
    plan = plan_conditions(model.schema, n, conditions, asked.balanced, asked.seed, training)
    how = (how or Sampling()).resolve(model.defaults, model.device)
    request = {
        "model_hash": model.model_hash,
        "n": n,
        "conditions": requested,
        "balanced": asked.balanced,
        "seed": asked.seed,
        "sampler": how.sampler,
        "steps": how.steps,
        "guidance": how.guidance,
    }
    if masks_digest is not None:
        request["masks"] = {"count": len(given), "sha256": masks_digest}
    out = Path(out)
    main = accelerator is None or accelerator.is_main_process
    if main:
        _record_request(out, request, plan, model, conditions)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    ext = ".png" if len(model.image_size) == 2 else ".nii.gz"
    missing = [i for i in range(n) if not _complete(out, i, model.has_masks, ext)]
    chunks = _my_chunks(missing, how.batch_size, accelerator)
    show = show_progress and main
    _write_chunks(model, SetJob(out, ext, plan, request, how, given, show), chunks)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if main:
        write_manifest(out, plan, request, model.schema, model.has_masks, ext)
        log.info("%s: %d images (%d already present)", out, n, n - len(missing))
    return {
        "out": str(out), "n": n, "generated": len(missing), "already_present": n - len(missing)
    }  # fmt: skip


@dataclass(frozen=True)
class SetJob:
    """What the images of a set are written from: its directory and file extension, the plan
    and request, the resolved sampling options, the given masks and whether to show progress."""

    out: Path
    ext: str
    plan: list[dict[str, Any]]
    request: dict[str, Any]
    how: Sampling
    given: np.ndarray | None
    show_progress: bool


def _record_request(out: Path, request: dict, plan, model, conditions) -> None:
    """generation.json: checked against the request of a set already there, then (re)written."""
    previous = out / REQUEST
    if previous.is_file():
        old = json.loads(previous.read_text(encoding="utf-8"))
        check_same_request(previous, old, request, plan, model, conditions)
    write_json_atomic(previous, request)


def _my_chunks(missing: list[int], batch: int, accelerator) -> list[list[int]]:
    """This process's batches of missing images. Whole batches are shared out, so each image is
    computed in the batch it would be in under one process: kernels may round differently for
    other batch shapes."""
    mine = [missing[start : start + batch] for start in range(0, len(missing), batch)]
    if accelerator is not None:
        with accelerator.split_between_processes(mine) as share:
            mine = list(share)
    return mine


def _write_chunks(model, job: SetJob, chunks: list[list[int]]) -> None:
    """Generate each batch and write its images (and masks) as soon as it is done."""
    from tqdm import tqdm

    request = job.request
    bar = tqdm(
        total=sum(map(len, chunks)), desc="generating", unit="img", disable=not job.show_progress
    )
    for chunk in chunks:
        fit = None if job.given is None else job.given[[i % len(job.given) for i in chunk]]
        images, masks = model.generate(
            [job.plan[i] for i in chunk],
            request["seed"],
            job.how,
            indices=chunk,
            masks=fit,
            return_masks=True,
        )
        if fit is not None:  # the pair is the image and the mask it was asked to fit
            masks = fit
        for k, index in enumerate(chunk):
            if masks is not None:
                _write(
                    job.out / "masks" / image_file(index, job.ext), masks[k].astype(np.uint8) * 255
                )
            _write(job.out / "images" / image_file(index, job.ext), quantize(images[k], 8))
        bar.update(len(chunk))
    bar.close()


def _request_conditions(schema: ConditionSchema, conditions: dict[str, Any]) -> dict[str, Any]:
    fixed, ranges = requested_conditions(schema, conditions)
    return {**fixed, **{name: list(bounds) for name, bounds in ranges.items()}}


def check_same_request(previous: Path, old: dict, request: dict, plan, model, conditions) -> None:
    """A set on disk may be completed, or grown to a larger --n when its first images keep their
    conditions (fixed conditions; a grid over categorical values); anything else is an error."""
    if old == request:
        return
    changed = sorted(k for k in request if old.get(k) != request[k])
    if changed == ["n"]:
        n_old = int(old["n"])
        if n_old > request["n"]:
            raise ValueError(
                f"{previous}: {previous.parent} already holds a set of {n_old}; "
                f"--n {request['n']} would shrink it: choose another --out"
            )
        before = plan_conditions(
            model.schema,
            n_old,
            conditions,
            old["balanced"],
            old["seed"],
            model.config.get("training_conditions"),
        )
        if before == plan[:n_old]:
            return
        raise ValueError(
            f"{previous}: growing this set from {n_old} to {request['n']} images would change the "
            f"conditions of images it holds (--balanced {old['balanced']} plans depend on --n); "
            "choose another --out"
        )
    raise ValueError(
        f"{previous}: {previous.parent} was generated with a different {', '.join(changed)}; "
        "choose another --out"
    )


def image_file(index: int, ext: str) -> str:
    return f"{image_id(index)}{ext}"


def _write(path: Path, pixels: np.ndarray) -> None:
    """8-bit PNG for 2D images, NIfTI for 3D volumes; both written atomically."""
    if pixels.ndim == 2:
        write_png(path, pixels)
    else:
        write_nifti(path, pixels)


def _complete(out: Path, index: int, has_masks: bool, ext: str) -> bool:
    if not (out / "images" / image_file(index, ext)).is_file():
        return False
    return not has_masks or (out / "masks" / image_file(index, ext)).is_file()


def write_manifest(
    out: Path, plan, request, schema: ConditionSchema, has_masks: bool, ext: str = ".png"
) -> None:
    """manifest.csv from the images present (atomically)."""
    columns = ["id", "file", *schema.names, "seed", "sampler", "steps", "guidance", "model_hash"]
    if has_masks:
        columns.append("mask_file")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for index, conditions in enumerate(plan):
        if not _complete(out, index, has_masks, ext):
            continue
        name = image_id(index)
        values = ["" if conditions.get(a) is None else _fmt(conditions[a]) for a in schema.names]
        row = [
            name,
            f"images/{name}{ext}",
            *values,
            request["seed"],
            request["sampler"],
            request["steps"],
            request["guidance"],
            request["model_hash"],
        ]
        if has_masks:
            row.append(f"masks/{name}{ext}")
        writer.writerow(row)
    with atomic_open(out / "manifest.csv", newline="") as handle:
        handle.write(buffer.getvalue())


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
