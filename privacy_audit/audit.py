"""`run_audit`: the whole privacy audit of one synthetic set against the dataset its model was
trained on, written atomically as REPORT_DIR/report.json + report.html + audit.log."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from conditioning.dataset import SyntheticSet, replace_directory, staging_dir
from conditioning.logfile import attach_log_file
from conditioning.precision import effective_bf16

from . import membership, stats
from .aligner import AlignerParams, aligner_key, load_aligner, save_aligner, train_aligner
from .config import AuditSettings
from .copies import (
    LOCAL_SCORES,
    Neighbours,
    Reference,
    Standardiser,
    build_reference,
    find_neighbours,
    query_scores,
)
from .encoder import (
    EncoderParams,
    base_params,
    load_encoder,
    save_encoder,
    train_encoder,
    training_key,
)
from .errors import AuditError
from .imageset import load_images, open_set, set_sha256, write_filtered_copy
from .metadata import FAIL, Forbidden, scan_set
from .nets import bf16_inference
from .report import (
    AUDIT_LOG,
    PUBLIC_HTML,
    REPORT_HTML,
    Attack,
    AuditReport,
    Check,
    CopyDetection,
    CopyThresholds,
    DatasetInfo,
    Dcr,
    DcrThresholds,
    EncoderInfo,
    FilteredAudit,
    MembershipThresholds,
    MetadataFinding,
    MetadataSummary,
    MetadataThresholds,
    ModelMembership,
    Nearest,
    ReportFiles,
    Sample,
    SetInfo,
    Summary,
    Thresholds,
    Timings,
    Transform,
    section_from_json,
    write_report,
)
from .verifier import (
    VerifierParams,
    load_verifier,
    make_pairs,
    save_verifier,
    score_aligned,
    score_pairs,
    train_verifier,
    verifier_key,
)

log = logging.getLogger(__name__)
ENCODER_DIR = "encoder"


_SETTINGS = AuditSettings()  # the defaults' home (privacy_audit/config.py, the fields' notes)


@dataclass
class AuditConfig:
    """Everything that decides an audit's outcome besides its inputs: the settings a profile
    or `radsynth audit` gives (`AuditSettings.audit_config`) and those only code sets."""

    train_split: str = _SETTINGS.train_split
    holdout_split: str = _SETTINGS.holdout_split
    quantile: float = _SETTINGS.quantile
    neighbours: int = 5  # nearest training patients re-scored by aligned NCC
    seed: int = _SETTINGS.seed
    encoder: EncoderParams = field(default_factory=EncoderParams)
    verifier: VerifierParams = field(default_factory=VerifierParams)
    aligner: AlignerParams = field(default_factory=AlignerParams)
    encoder_cache: str | None = _SETTINGS.encoder_cache
    bf16: bool = _SETTINGS.bf16  # the networks' inference (nets.bf16_inference)
    forbidden: list[str] = field(default_factory=list)  # extra strings, e.g. source file names
    mia_samples: int = _SETTINGS.mia_samples
    mia_timesteps: list[int] | None = None
    dcr_limit: float = _SETTINGS.dcr_limit
    auc_limit: float = _SETTINGS.auc_limit
    tpr_limit: float = _SETTINGS.tpr_limit
    n_boot: int = 500
    progress: bool = True


def _default_cache(key: str) -> Path:
    base = os.environ.get("RADSYNTH_CACHE") or Path.home() / ".cache" / "radsynth"
    return Path(base) / "audit-encoders" / key[:20]


def _dedup_train(records):
    """One record per distinct pixel hash: exact duplicates count once."""
    seen: set[str] = set()
    kept = []
    for r in records:
        if r.sha256 not in seen:
            seen.add(r.sha256)
            kept.append(r)
    return kept


def _forbidden(dataset, train, extra: list[str]) -> Forbidden:
    forbidden = Forbidden()
    for pid in sorted({r.patient_id for r in dataset.records}):
        forbidden.add(pid, f"a patient_id of the dataset ({pid[:4]}...)")
    for r in train:
        # the full path only: a bare id like img000123 could be any tool's file name
        forbidden.add(r.file, f"training image path {r.file}", stems=False)
    forbidden.add(str(Path(dataset.root).resolve()), "the dataset's absolute path")
    for i, value in enumerate(extra, start=1):
        forbidden.add(value, f"forbidden string no. {i} given by the caller")
    return forbidden


def _cache_places(config: AuditConfig, encoder_key: str, old_report: Path) -> list[Path]:
    """Where a trained encoder (and the verifier beside it) may be found: the cache, where it
    is also written, then the previous report in the output folder."""
    cache = Path(config.encoder_cache) if config.encoder_cache else _default_cache(encoder_key)
    return [cache, old_report / ENCODER_DIR]


def _first_cached(places: list[Path], load):
    """`load(place)` of the first of `places` that holds the network (model, record), or None."""
    for place in places:
        found = load(place)
        if found is not None:
            return found
    return None


def _cached_or_trained(what: str, places: list[Path], load, save, train, report_stage: Path):
    """The network `what` from the first of `places` holding it for its key (`load(place)`),
    else `train()`ed and cached in the first; either way a copy goes into the report. Returns
    (model, record, reused)."""
    found = _first_cached(places, load)
    if found is not None:
        log.info("%s reused from cache (key %s)", what, found[1]["key"][:12])
        save(found[0], report_stage / ENCODER_DIR, found[1])
        return (*found, True)
    model, meta = train()
    save(model, report_stage / ENCODER_DIR, meta)
    try:
        save(model, places[0], meta)
    except OSError as exc:
        log.warning("could not cache the %s in %s (%s)", what, places[0], exc)
    return model, meta, False


def _get_encoder(config: AuditConfig, train_images, train, report_stage: Path, old_report: Path):
    params = config.encoder
    key = training_key([r.sha256 for r in train], params)

    places = _cache_places(config, key, old_report)

    def train_it():
        start, done = _base_encoder(params, [r.sha256 for r in train], places)
        model, train_stats = train_encoder(
            train_images, [r.patient_id for r in train], params, config.progress, start, done
        )
        return model, {
            "key": key,
            "params": asdict(params),
            "trained_by": "this project (radsynth audit), on the deduplicated training split "
            "only; no pretrained weights",
            "objective": "SimCLR NT-Xent over copy augmentations (mirror, shift, crop+resize, "
            "rotation, gamma/contrast/brightness, blur, JPEG-like recompression, noise; in one "
            "of the two views, half the images blended or pasted into another patient's image), "
            "then on batches of look-alike films of different patients (hard negatives), "
            f"{params.hard_partial:.0%} of those views blended or pasted",
            **train_stats,
        }

    load = lambda place: load_encoder(place, key)  # noqa: E731
    return _cached_or_trained("copy encoder", places, load, save_encoder, train_it, report_stage)


def _base_encoder(params, train_hashes: list[str], places: list[Path]):
    """The furthest-trained encoder cached on the way to `params` (after fewer of its hard
    rounds, or its first phase alone: one trained before the hard phase or its rounds existed),
    which training takes further instead of starting over, and the rounds it has done; else
    (None, 0)."""
    for done in range(params.rounds - 1, -1, -1):
        key = training_key(train_hashes, base_params(params, done))
        found = _first_cached(places, lambda place, key=key: load_encoder(place, key))
        if found is not None:
            log.info(
                "copy encoder after %d of its hard rounds reused (key %s): trained on",
                done,
                key[:12],
            )
            return found[0], done
    return None, 0


def _get_verifier(config: AuditConfig, train_images, train, encoder, encoder_key: str, paths):
    """The pair verifier for this encoder and training set: from the cache beside the encoder,
    else trained (verifier.py) and cached there. `paths`: the report's stage and old folder."""
    report_stage, old_report = paths
    params = config.verifier
    key = verifier_key(encoder_key, params)

    def train_it():
        patients = [r.patient_id for r in train]
        size, progress = config.encoder.input_size, config.progress
        pairs = make_pairs(encoder, train_images, patients, size, params, progress)
        model, train_stats = train_verifier(pairs, params, progress)
        return model, {
            "key": key,
            "params": asdict(params),
            "trained_by": "this project (radsynth audit), on pairs made from the deduplicated "
            "training split only (its patients in two halves, each in turn the reference); no "
            "pretrained weights",
            "objective": "binary cross-entropy: an altered copy (the encoder's augmentations, "
            "most blended or pasted into the other half's films) registered against its source, "
            "against the other half's films, as they are and altered alike, registered against "
            "their nearest candidates",
            **train_stats,
        }

    places = _cache_places(config, encoder_key, old_report)
    load = lambda place: load_verifier(place, key)  # noqa: E731
    return _cached_or_trained("pair verifier", places, load, save_verifier, train_it, report_stage)


def _get_aligner(config: AuditConfig, train_images, train, encoder_key: str, paths):
    """The aligner for this training set: from the cache beside the encoder, else trained
    (aligner.py) and cached there. `paths`: the report's stage and old folder."""
    report_stage, old_report = paths
    params = config.aligner
    key = aligner_key([r.sha256 for r in train], params)

    def train_it():
        patients = [r.patient_id for r in train]
        model, train_stats = train_aligner(train_images, patients, params, config.progress)
        return model, {
            "key": key,
            "params": asdict(params),
            "trained_by": "this project (radsynth audit), on the deduplicated training split "
            "only; no pretrained weights",
            "objective": "the transform that undoes a known one (mirror, rotation, scaling, "
            "crop+resize, shift) of a training film, most blended or pasted into another "
            "patient's film and changed in contrast, blur, recompression and noise: the "
            "mirror's cross-entropy plus the squared error of the affine map; the fine stage "
            "the squared error of what is left after a small random error of the coarse one",
            **train_stats,
        }

    places = _cache_places(config, encoder_key, old_report)
    load = lambda place: load_aligner(place, key)  # noqa: E731
    return _cached_or_trained("aligner", places, load, save_aligner, train_it, report_stage)


def _nearest(copies: _Copies, row: int, size: int, top: int = 3) -> list[Nearest]:
    """A synthetic image's best candidates, one per training patient, best first; each with the
    score that decided its combined score and the alignment that score was measured at."""
    reference, nb = copies.reference, copies.syn_nb
    out, patients = [], set()
    for j in copies.order[row]:
        idx = int(nb.index[row, j])
        if idx < 0 or int(reference.groups[idx]) in patients:
            continue  # one image per training patient: the best one
        if len(out) == top:
            break
        patients.add(int(reference.groups[idx]))
        local = {}
        for name in LOCAL_SCORES:
            values = getattr(nb, name)
            value = None if values is None else float(values[row, j])
            local[name] = round(value, 4) if value is not None and np.isfinite(value) else None
        decided_by = copies.decided_by(row, int(j))
        found = nb.alignment(row, int(j), decided_by)
        transform = None
        if found is not None:  # registered finely: how the query sits on the training image
            transform = section_from_json(Transform, found.to_json(size), "the registration")
        entry = Nearest(
            id=reference.ids[idx],
            score=round(float(copies.syn_combined[row, j]), 4),
            embedding_cosine=round(float(nb.cosine[row, j]), 4),
            ncc=round(float(nb.ncc[row, j]), 4),
            **local,
            decided_by=decided_by,
            transform=transform,
        )
        out.append(entry)
    return out


def _split_half_fpr(holdout_scores: np.ndarray, quantile: float, seed: int) -> float | None:
    """Calibrate on a random half of the holdout, count flags on the other half (20 times):
    an honest estimate of how often a new patient's image gets flagged."""
    rng = np.random.default_rng(seed)
    n = len(holdout_scores)
    rates = []
    for _ in range(20):
        perm = rng.permutation(n)
        a, b = holdout_scores[perm[: n // 2]], holdout_scores[perm[n // 2 :]]
        try:
            threshold = stats.conformal_threshold(a, quantile)
        except AuditError:
            return None
        rates.append(float(np.mean(b > threshold)))
    return float(np.mean(rates))


def _quantiles(values: np.ndarray) -> dict:
    qs = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
    return {str(q): round(float(v), 4) for q, v in zip(qs, np.quantile(values, qs), strict=True)}


@dataclass(frozen=True)
class _Inputs:
    """What one audit compares, opened and checked before anything is written."""

    synthetic: SyntheticSet
    dataset: Any
    train: list  # the train split, one record per distinct pixel hash
    holdout: list
    shape: tuple
    config: AuditConfig  # the encoder's input size capped at the images' size


@dataclass(frozen=True)
class _ModelSide:
    """Where the model attack comes from: run with `probe`, or `reused` from the audit of the
    unfiltered set (same model); `info` describes the model in the report."""

    probe: membership.DiffusionModelProbe | None = None
    info: dict | None = None
    reused: ModelMembership | None = None


@dataclass(frozen=True)
class _Images:
    """The pixels read once and shared by every step."""

    set_hash: str
    synthetic: np.ndarray
    train: np.ndarray
    holdout: np.ndarray


@dataclass(frozen=True)
class _Copies:
    """Copy detection's outcome: neighbours, scores and flags of the held-out and the set."""

    reference: Reference
    hold_nb: Neighbours
    syn_nb: Neighbours
    std: Standardiser
    hold_scores: np.ndarray
    syn_scores: np.ndarray
    order: np.ndarray  # per synthetic image, its candidates best first
    syn_combined: np.ndarray
    syn_deciding: np.ndarray  # (Q, k) index into Standardiser.COMPONENTS
    threshold: float
    flagged: np.ndarray
    pvalues: np.ndarray

    def decided_by(self, row: int, col: int) -> str:
        """The name of the term that gives a synthetic image's candidate its combined score."""
        return Standardiser.COMPONENTS[int(self.syn_deciding[row, col])]


@dataclass(frozen=True)
class _Results:
    """Everything measured, for the report to assemble."""

    images: _Images
    copies: _Copies
    encoder: EncoderInfo
    dcr: Dcr
    domias: Attack
    model_mia: ModelMembership | None
    forbidden: Forbidden
    findings: list


@contextmanager
def _timed(timings: dict[str, float], key: str):
    """Record a step's wall time under `key` (only when it finishes)."""
    tick = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - tick, 2)


def run_audit(
    set_dir: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path,
    config: AuditConfig | None = None,
    probe: membership.DiffusionModelProbe | None = None,
    model_info: dict | None = None,
    filtered_out: str | Path | None = None,
    filtered_report: str | Path | None = None,
) -> AuditReport:
    """Audit the set; write the report directory atomically; return the report.

    `filtered_out` also writes the set without its flagged images; `filtered_report` then
    audits that copy at once (same encoder and calibration, the model attack reused: the
    model has not changed) and the returned report holds its verdict in `filtered`."""
    if filtered_report is not None and filtered_out is None:
        raise ValueError("a filtered report needs filtered_out (--filtered-out DIR2)")
    config = config or AuditConfig()
    report, synthetic = _audit_into(
        set_dir, dataset_dir, out_dir, config, _ModelSide(probe, model_info)
    )
    if filtered_out is not None:
        drop = set(report.flagged_files())
        write_filtered_copy(synthetic, drop, filtered_out)
        log.info("filtered copy without %d flagged image(s): %s", len(drop), filtered_out)
    if filtered_report is not None:
        reused = report.summary.model_membership if probe is not None else None
        again, _ = _audit_into(
            filtered_out, dataset_dir, filtered_report, config, _ModelSide(reused=reused)
        )
        filtered = FilteredAudit(
            set=str(filtered_out),
            report=str(filtered_report),
            verdict=again.verdict,
            reasons=again.reasons,
            images=again.set.images,
        )
        report = replace(report, filtered=filtered)
    return report


def _open_inputs(set_dir: Path, dataset_dir, out_dir: Path, config: AuditConfig) -> _Inputs:
    """Refuse unusable inputs (by name) before any work or any file is written."""
    from conditioning.dataset import load_dataset

    synthetic = open_set(set_dir)
    if set_dir.resolve() in out_dir.parents or out_dir == set_dir.resolve():
        raise AuditError(out_dir, "the report directory must not be inside the audited set")
    dataset = load_dataset(dataset_dir)
    if dataset.dimensionality != "2D":
        raise AuditError(dataset.root, "the audit handles 2D datasets only")
    train_all = dataset.split(config.train_split)
    holdout = dataset.split(config.holdout_split)
    for split, rows in ((config.train_split, train_all), (config.holdout_split, holdout)):
        if not rows:
            raise AuditError(dataset.root, f"split {split!r} holds no image")
    shape = tuple(dataset.image_size)
    if max(shape) < config.encoder.input_size:  # small images: no upsampling for the encoder
        config = replace(config, encoder=replace(config.encoder, input_size=max(shape)))
    return _Inputs(synthetic, dataset, _dedup_train(train_all), holdout, shape, config)


def _audit_into(set_dir, dataset_dir, out_dir, config: AuditConfig, side: _ModelSide):
    """One audit written to `out_dir` through a staging directory (its log included), so a
    failed audit leaves no partial report; returns the report and the set it read."""
    from .report_html import write_html, write_public_html

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    set_dir, out_dir = Path(set_dir), Path(out_dir).resolve()
    inputs = _open_inputs(set_dir, dataset_dir, out_dir, config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(out_dir)
    handler = attach_log_file(stage / AUDIT_LOG)
    try:
        results = _audit(inputs, side, stage, out_dir, timings)
        report = _report(inputs, results, timings, t0)
        arrays = _arrays(inputs, results)
        write_report(stage, report)
        write_html(stage / REPORT_HTML, report, arrays)
        scores = (arrays["holdout_scores"], arrays["synthetic_scores"])
        write_public_html(stage / PUBLIC_HTML, report, *scores)  # scores, no image
        log.info("verdict %s; report written to %s", report.verdict, out_dir)
    except BaseException:
        _detach(handler)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _detach(handler)
    replace_directory(stage, out_dir)
    return report, inputs.synthetic


def _detach(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def _load(dataset, records, progress: bool, desc: str) -> np.ndarray:
    from tqdm import tqdm

    return np.stack([dataset.load_image(r) for r in tqdm(records, desc=desc, disable=not progress)])


def _audit(
    inputs: _Inputs, side: _ModelSide, stage: Path, out_dir: Path, timings: dict
) -> _Results:
    """Every measurement in turn, for the report and its pages."""
    config, train = inputs.config, inputs.train
    images = _read_images(inputs, timings)
    with _timed(timings, "encoder_seconds"):
        model, encoder_meta, reused = _get_encoder(config, images.train, train, stage, out_dir)
    paths, key = (stage, out_dir), encoder_meta["key"]
    with _timed(timings, "verifier_seconds"):
        verifier, *verifier_meta = _get_verifier(config, images.train, train, model, key, paths)
        aligner, *aligner_meta = _get_aligner(config, images.train, train, key, paths)
    records = {
        name: {**meta, "reused_from_cache": reused_it}
        for name, (meta, reused_it) in (("verifier", verifier_meta), ("aligner", aligner_meta))
    }
    encoder = section_from_json(
        EncoderInfo,
        {
            **encoder_meta,
            **records,
            "reused_from_cache": reused,
            "stored_in": ENCODER_DIR,
            "inference": "bf16" if effective_bf16(config.bf16, "cpu") else "fp32",
        },
        "the copy encoder's record",
    )
    copies = _detect_copies(inputs, (model, verifier, aligner), images, timings)
    with _timed(timings, "data_attack_seconds"):
        dcr, domias = _data_attacks(copies, config)
    model_mia = _model_membership(inputs, side, images, timings)
    with _timed(timings, "metadata_seconds"):
        forbidden = _forbidden(inputs.dataset, train, config.forbidden)
        synthetic = inputs.synthetic
        findings = scan_set(synthetic.root, forbidden, config.progress, synthetic.files)
    return _Results(images, copies, encoder, dcr, domias, model_mia, forbidden, findings)


def _read_images(inputs: _Inputs, timings: dict) -> _Images:
    """All pixels, with the set's hash taken before and checked after: a set that changes
    while it is read is refused."""
    synthetic, progress = inputs.synthetic, inputs.config.progress
    with _timed(timings, "read_seconds"):
        set_hash = set_sha256(synthetic.root)
        syn_images = load_images(synthetic, inputs.shape, progress)
        train_images = _load(inputs.dataset, inputs.train, progress, "read train")
        holdout_images = _load(inputs.dataset, inputs.holdout, progress, "read holdout")
    if set_sha256(synthetic.root) != set_hash:
        raise AuditError(synthetic.root, "the set changed while it was being audited")
    if synthetic.incomplete:
        log.warning("%s: %s", synthetic.root, synthetic.incomplete)
    return _Images(set_hash, syn_images, train_images, holdout_images)


def _detect_copies(inputs: _Inputs, models, images: _Images, timings: dict) -> _Copies:
    """Neighbours of the held-out and the synthetic images (`models`: the encoder, the pair
    verifier and the aligner); the held-out ones calibrate the score and the conformal
    threshold the set is
    flagged by."""
    config, train = inputs.config, inputs.train
    size, k, progress = config.encoder.input_size, config.neighbours, config.progress
    model, verifier, aligner = models
    with _timed(timings, "copy_detection_seconds"), bf16_inference(config.bf16):
        ids, patients = [r.id for r in train], [r.patient_id for r in train]
        reference = build_reference(model, images.train, ids, patients, size, progress)
        hold_nb = find_neighbours(model, reference, images.holdout, size, k, progress, "holdout")
        hold_nb.verifier = score_pairs(verifier, reference, images.holdout, hold_nb)
        found = score_aligned(verifier, aligner, reference, images.holdout, hold_nb)
        hold_nb.aligned, hold_nb.aligned_at = found
        syn_nb = find_neighbours(model, reference, images.synthetic, size, k, progress, "synthetic")
        syn_nb.verifier = score_pairs(verifier, reference, images.synthetic, syn_nb)
        found = score_aligned(verifier, aligner, reference, images.synthetic, syn_nb)
        syn_nb.aligned, syn_nb.aligned_at = found
    std = Standardiser.fit(hold_nb)
    hold_scores, _ = query_scores(std.combined(hold_nb))
    syn_combined = std.combined(syn_nb)
    syn_scores, order = query_scores(syn_combined)
    syn_deciding = std.deciding(syn_nb)
    threshold = stats.conformal_threshold(hold_scores, config.quantile)
    flagged = syn_scores > threshold
    pvalues = stats.conformal_pvalues(hold_scores, syn_scores)
    return _Copies(
        reference,
        hold_nb,
        syn_nb,
        std,
        hold_scores,
        syn_scores,
        order,
        syn_combined,
        syn_deciding,
        threshold,
        flagged,
        pvalues,
    )


def _data_attacks(copies: _Copies, config: AuditConfig) -> tuple[Dcr, Attack]:
    """DCR and DOMIAS on the released set, in the copy-detection embedding."""
    embeddings = (copies.syn_nb.embeddings, copies.reference.embeddings)
    held = copies.hold_nb.embeddings
    dcr = membership.dcr(*embeddings, held, seed=config.seed, n_boot=config.n_boot)
    domias = membership.domias(*embeddings, held, seed=config.seed, n_boot=config.n_boot)
    return (
        section_from_json(Dcr, dcr, "the DCR measure"),
        section_from_json(Attack, domias, "the DOMIAS attack"),
    )


def _model_membership(
    inputs: _Inputs, side: _ModelSide, images: _Images, timings: dict
) -> ModelMembership | None:
    """The attack on the model: reused when given, run when there is a probe, else None."""
    if side.reused is not None and side.reused.ran:
        return replace(side.reused, reused="from the audit of the unfiltered set (same model)")
    if side.probe is None:
        return None
    with _timed(timings, "model_mia_seconds"):
        model_mia = _model_mia(side.probe, inputs, images)
    if side.info:
        model_mia["model"] = side.info
    return section_from_json(ModelMembership, model_mia, "the attack on the model")


def _copy_summary(copies: _Copies, config: AuditConfig) -> CopyDetection:
    flagged, syn_nb, order = copies.flagged, copies.syn_nb, copies.order
    alpha = 1.0 - config.quantile
    n_flag, n_syn = int(flagged.sum()), len(copies.syn_scores)
    matched_patients = {
        int(copies.reference.groups[syn_nb.index[i, order[i, 0]]]) for i in np.nonzero(flagged)[0]
    }
    discoveries = int(stats.benjamini_hochberg(copies.pvalues, alpha).sum())
    return CopyDetection(
        synthetic_images=n_syn,
        flagged=n_flag,
        flagged_rate=n_flag / n_syn,
        flagged_rate_ci95=stats.wilson_interval(n_flag, n_syn),
        expected_rate_without_copies=alpha,
        distinct_training_patients_matched=len(matched_patients),
        benjamini_hochberg_discoveries=discoveries,
        holdout_flag_rate_split_half=_split_half_fpr(
            copies.hold_scores, config.quantile, config.seed
        ),
        synthetic_score_quantiles=_quantiles(copies.syn_scores),
        holdout_score_quantiles=_quantiles(copies.hold_scores),
    )


def _report(inputs: _Inputs, res: _Results, timings: dict, t0: float) -> AuditReport:
    """The report, section by section; `timings` gets the total seconds since `t0` last."""
    config, synthetic = inputs.config, inputs.synthetic
    copy_summary = _copy_summary(res.copies, config)
    checks = _checks(copy_summary, config, res)
    failed = [c for c in checks if not c.passed]
    set_info = SetInfo(
        name=synthetic.root.name,
        kind=synthetic.kind,
        images=copy_summary.synthetic_images,
        incomplete=synthetic.incomplete,
    )
    dataset, thresholds = _dataset_section(inputs), _thresholds_section(inputs, res)
    summary = _summary_section(inputs, res, copy_summary)
    findings = tuple(MetadataFinding(**f.to_json()) for f in res.findings)
    samples = _samples(inputs, res.copies)
    timings["total_seconds"] = round(time.perf_counter() - t0, 2)
    return AuditReport(
        tool="radsynth audit",
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        verdict="fail" if failed else "pass",
        reasons=tuple(
            ([c.detail for c in failed] or ["all checks passed"])
            + ([f"warning: {synthetic.incomplete}"] if synthetic.incomplete else [])
        ),
        checks=tuple(checks),
        set_sha256=res.images.set_hash,
        files=ReportFiles(auditor_html=REPORT_HTML, public_html=PUBLIC_HTML, log=AUDIT_LOG),
        set=set_info,
        dataset=dataset,
        encoder=res.encoder,
        thresholds=thresholds,
        summary=summary,
        metadata_findings=findings,
        samples=samples,
        timings=section_from_json(Timings, timings, "the audit's timings"),
    )


def _samples(inputs: _Inputs, copies: _Copies) -> tuple[Sample, ...]:
    """Per synthetic image: its flag, score, p-value and nearest training images."""
    samples = []
    for i, rel in enumerate(inputs.synthetic.image_files):
        nearest = _nearest(copies, i, inputs.shape[-1])
        samples.append(
            Sample(
                file=rel,
                flagged=bool(copies.flagged[i]),
                score=round(float(copies.syn_scores[i]), 4),
                p_value=round(float(copies.pvalues[i]), 5),
                nearest=tuple(nearest),
            )
        )
    return tuple(samples)


def _dataset_section(inputs: _Inputs) -> DatasetInfo:
    dataset, config, train, holdout = inputs.dataset, inputs.config, inputs.train, inputs.holdout
    return DatasetInfo(
        name=dataset.name,
        content_hash=dataset.content_hash(),
        image_size=tuple(inputs.shape),
        train_split=config.train_split,
        holdout_split=config.holdout_split,
        train_images=len(dataset.split(config.train_split)),
        train_images_deduplicated=len(train),
        train_patients=len({r.patient_id for r in train}),
        holdout_images=len(holdout),
        holdout_patients=len({r.patient_id for r in holdout}),
    )


_SYMBOLS = {  # each term of Standardiser.COMPONENTS as the report's formula names it
    "ncc": "zN = z(-log(1-registered NCC))",
    "patch": "zP = the same of the patch NCC",
    "detail": "zD = of the detail NCC",
    "detail_patch": "zDP = of the detail-patch NCC",
    "detail_local": "zDL = of the detail-local NCC",
    "verifier": "zV = z(the pair verifier's logit) for each image's candidate with the "
    "strongest detail score, at the detail's alignment",
    "aligned": "zA = z(the verifier's logit) for each image's nearest candidate by the encoder, "
    "at the learned aligner's alignment (coarse, then fine)",
}


def _copy_score() -> str:
    """The score's formula, from the terms the score has (a term without a symbol fails here,
    not silently in an auditor's reading)."""
    terms = [_SYMBOLS[name] for name in Standardiser.COMPONENTS]
    names = ", ".join(t.split(" = ")[0] for t in terms)
    return (
        "max over candidate training images (nearest patients by the encoder, by coarse "
        f"pixels and by band-passed detail) of max({names}): {'; '.join(terms)} (the verifier "
        "and the aligner are small CNNs the audit trains on the training split); the "
        "embedding's cosine finds candidates and is no term; z scaled so 0 is the held-out "
        "images' median best match and 1 their 95th percentile"
    )


_COPY_ALIGNMENT = (
    "registration of every candidate on band-passed images "
    "(difference of Gaussians, sigma 0.5 and 2 px at 32x32): normalised "
    "cross-correlation maximised over mirror, rotations of -6..6 degrees, scales "
    "0.94..1.22 and shifts of up to 4 px of a 64x64 image at 16x16, then for each "
    "image's best candidate by it and each candidate route's nearest around that at 32x32 "
    "(1.5 degree, 3% and half-pixel steps); there "
    "the patch score is the best NCC of 12x12 windows (a copied region inside a new "
    "image); the score uses the larger of zN and zP = z(-log(1-patch NCC))"
)
_COPY_DETAIL = (
    "for the same candidates at the alignment found, at (at most) 64x64: "
    "difference of Gaussians (sigma 1 and 3 px), the training windows' leading "
    "principal components (the anatomy chest films share) projected out, best "
    "whole-pixel shift within 2 px; detail = NCC of the whole window, detail_patch "
    "= the best NCC of 36x36 windows, detail_local = the same with the leading 60 "
    "components projected out of each of 9 windows alone, for each query's candidate with "
    "the strongest detail score also at the similarity transform its 16x16 blocks agree on "
    "(each block found within 6 px, RANSAC), the larger kept; each enters the score as "
    "z(-log(1-NCC))"
)


def _thresholds_section(inputs: _Inputs, res: _Results) -> Thresholds:
    """Each check's rule and limit, and how it was set."""
    config, copies = inputs.config, res.copies
    alpha = 1.0 - config.quantile
    copy = CopyThresholds(
        score=_copy_score(),
        alignment=_COPY_ALIGNMENT,
        detail=_COPY_DETAIL,
        rule=f"flag when the score exceeds the held-out images' conformal "
        f"{config.quantile} quantile (equivalently conformal p-value <= {alpha:.4g})",
        quantile=config.quantile,
        threshold=round(copies.threshold, 4),
        holdout_images=len(inputs.holdout),
        how_set=f"calibrated on split {config.holdout_split!r}: patients never "
        "used in training, each compared with the training split",
        standardiser=copies.std.to_json(),
    )
    return Thresholds(
        copy=copy,
        dcr=DcrThresholds(
            limit=config.dcr_limit,
            rule="fail when the lower 95% bound of the share closer to train exceeds the limit",
            how_set="policy default",
        ),
        membership=MembershipThresholds(
            auc_limit=config.auc_limit,
            tpr_at_1pct_fpr_limit=config.tpr_limit,
            rule="fail when an attack's lower 95% bound exceeds a limit",
            how_set="policy default",
        ),
        metadata=MetadataThresholds(
            rule="any finding of severity 'fail' fails the verdict",
            forbidden_strings=len(res.forbidden),
            forbidden_strings_too_short_to_search=res.forbidden.too_short,
        ),
    )


def _summary_section(inputs: _Inputs, res: _Results, copy_summary: CopyDetection) -> Summary:
    findings = res.findings
    return Summary(
        copy_detection=copy_summary,
        dcr=res.dcr,
        domias=res.domias,
        model_membership=res.model_mia
        if res.model_mia is not None
        else ModelMembership(skipped="no --model given"),
        metadata=MetadataSummary(
            files_scanned=len(inputs.synthetic.files),
            failures=sum(f.severity == FAIL for f in findings),
            warnings=sum(f.severity != FAIL for f in findings),
        ),
    )


def _arrays(inputs: _Inputs, res: _Results) -> dict:
    """What the HTML pages draw besides the report: scores, pixels, transforms found."""
    copies, syn_nb = res.copies, res.copies.syn_nb
    return {
        "holdout_scores": copies.hold_scores,
        "synthetic_scores": copies.syn_scores,
        "synthetic_images": res.images.synthetic,
        "train_images": res.images.train,
        "train_index": {r.id: i for i, r in enumerate(inputs.train)},
        "transforms": {  # (sample, training id) -> where its deciding score was measured
            (i, copies.reference.ids[syn_nb.index[i, j]]): syn_nb.alignment(
                i, j, copies.decided_by(i, j)
            )
            for i, j in syn_nb.transforms
        },
    }


def _model_mia(probe, inputs: _Inputs, images: _Images) -> dict:
    """The model attack on equal random samples of train and holdout images."""
    config, train, holdout = inputs.config, inputs.train, inputs.holdout
    rng = np.random.default_rng(config.seed)
    n = min(config.mia_samples, len(train), len(holdout))
    mi = np.sort(rng.choice(len(train), n, replace=False))
    ni = np.sort(rng.choice(len(holdout), n, replace=False))
    schedule = getattr(probe, "schedule", None)
    total = int(
        getattr(probe, "num_train_timesteps", None)
        or (schedule.get("num_train_timesteps") if isinstance(schedule, dict) else None)
        or 1000
    )
    timesteps = config.mia_timesteps or sorted(
        {max(1, min(total - 1, round(f * total))) for f in membership.DEFAULT_TIMESTEP_FRACTIONS}
    )
    return membership.model_attack(
        probe,
        images.train[mi],
        [dict(train[i].conditions) for i in mi],
        images.holdout[ni],
        [dict(holdout[i].conditions) for i in ni],
        timesteps,
        membership.AttackSettings(config.seed, config.n_boot, progress=config.progress),
    )


def _checks(copy: CopyDetection, config: AuditConfig, res: _Results) -> list[Check]:
    """Every check of the verdict, with its outcome in words."""
    checks, threshold = [], res.copies.threshold

    n, f = copy.synthetic_images, copy.flagged
    lo, hi = copy.flagged_rate_ci95
    checks.append(
        Check(
            name="copy_detection",
            passed=f == 0,
            detail=(
                f"{f} of {n} synthetic images ({100 * f / n:.2f}%, 95% CI "
                f"{100 * lo:.2f}-{100 * hi:.2f}%) are closer to a training image than the "
                f"held-out {config.quantile} quantile (score > {threshold:.3f}); remove them "
                "(--filtered-out) and audit again"
            )
            if f
            else f"no synthetic image exceeds the held-out {config.quantile} quantile ({threshold:.3f})",
        )
    )
    fails = [x for x in res.findings if x.severity == FAIL]
    checks.append(
        Check(
            name="metadata",
            passed=not fails,
            detail=(
                "metadata leakage: "
                + "; ".join(f"{x.file}: {x.detail}" for x in fails[:10])
                + (f"; and {len(fails) - 10} more" if len(fails) > 10 else "")
            )
            if fails
            else "no identifying metadata or forbidden string found",
        )
    )
    dcr = res.dcr
    share_lo, share_hi = dcr.share_ci95
    checks.append(
        Check(
            name="dcr",
            passed=share_lo <= config.dcr_limit,
            detail=f"share of synthetic images closer to train than to holdout "
            f"{dcr.share_closer_to_train:.3f} (95% CI {share_lo:.3f}-{share_hi:.3f}; "
            f"limit {config.dcr_limit})",
        )
    )
    return checks + _attack_checks(config, res.domias, res.model_mia)


def _attack_checks(
    config: AuditConfig, domias: Attack, model_mia: ModelMembership | None
) -> list[Check]:
    """The membership checks: DOMIAS on the set, and each attack on the model that ran."""
    attacks = [("domias", "DOMIAS density-ratio attack on the set", domias)]
    if model_mia is not None and model_mia.attacks is not None:
        attacks += [(f"model_{k}", f"model {k} attack", v) for k, v in model_mia.attacks.items()]
    checks = []
    for name, label, entry in attacks:
        auc_lo, tpr_lo = entry.auc_ci95[0], entry.tpr_at_1pct_fpr_ci95[0]
        decides = membership.tpr_decides(entry.nonmembers)
        ok = auc_lo <= config.auc_limit and (tpr_lo <= config.tpr_limit or not decides)
        limit = (
            f"limit {config.tpr_limit}"
            if decides
            else f"not decisive: {entry.nonmembers} non-members, fewer than "
            f"{membership.TPR_NONMEMBERS}"
        )
        checks.append(
            Check(
                name=f"membership_{name}",
                passed=ok,
                detail=f"{label}: AUC {entry.auc:.3f} (95% CI {auc_lo:.3f}-"
                f"{entry.auc_ci95[1]:.3f}; limit {config.auc_limit}), TPR at 1% FPR "
                f"{entry.tpr_at_1pct_fpr:.3f} (lower bound {tpr_lo:.3f}; {limit})",
            )
        )
    return checks
