"""Benchmarks of the audit: how fast the nearest-neighbour search scales (synthetic data), and
the known-answer copy-detection measurement on a real dataset (altered training copies mixed
with real held-out images the calibration never saw)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from conditioning.precision import effective_bf16

from . import stats
from .nets import bf16_inference
from .report import to_json


def benchmark_search(
    n_query: int = 10_000,
    n_train: int = 5_000,
    size: int = 64,
    k: int = 5,
    seed: int = 0,
    copy_share: float = 0.1,
    repeats: int = 1,
    bf16: bool = False,
) -> dict:
    """Seconds for: embedding (an untrained encoder of the audit's shape, images/s), the
    blockwise top-k search by patient alone, and the whole copy-detection pass of the queries
    (embedding, search, coarse and fine alignment, the pair verifier on each query's strongest
    pair; untrained networks of the audit's shapes). Random images stand in for real ones, and
    `copy_share` of the queries are training images shifted by a pixel, with noise: what runs
    only for pairs that look like copies (register._detail_near) is in the figure too (on the
    Kermany films it runs for 40 pairs of the 536 `val` images; docs/privacy-audit.md).
    The pass and the former FFT-NCC method take turns `repeats` times (0: the search alone),
    each figure the median, its runs listed beside it when more than one (`..._runs`): on a
    shared host one run drifts by a fifth. `bf16`: the detector's networks in bf16 where the
    CPU runs it natively (nets.bf16_inference; the former method as it was)."""
    from .encoder import CopyEncoder, EncoderParams, embed
    from .search import topk_by_patient

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    out: dict = {
        "n_query": n_query,
        "n_train": n_train,
        "size": size,
        "k": k,
        "threads": torch.get_num_threads(),
        "bf16": effective_bf16(bf16, "cpu"),
    }
    shape = EncoderParams()
    model, dim = CopyEncoder(shape.width, shape.dim).eval(), shape.dim
    sample = rng.random((min(2048, n_query + n_train), size, size), dtype=np.float32)
    tick = time.perf_counter()
    embed(model, sample, min(size, 64))
    per_image = (time.perf_counter() - tick) / len(sample)
    out["embed_images_per_second"] = round(1 / per_image, 1)
    out["embed_seconds_estimated"] = round(per_image * (n_query + n_train), 2)
    queries = torch.nn.functional.normalize(torch.randn(n_query, dim), dim=1)
    refs = torch.nn.functional.normalize(torch.randn(n_train, dim), dim=1)
    groups = rng.integers(0, n_train // 2, n_train)  # about two images per patient
    tick = time.perf_counter()
    topk_by_patient(queries, refs, groups, k)
    out["search_seconds"] = round(time.perf_counter() - tick, 4)
    if repeats > 0:  # the whole copy-detection pass: embedding, search, alignment; both methods
        train_images = rng.random((n_train, size, size), dtype=np.float32)
        query_images = rng.random((n_query, size, size), dtype=np.float32)
        copies = round(copy_share * n_query)
        sources = train_images[rng.integers(0, n_train, copies)]
        noise = rng.normal(0, 0.02, sources.shape).astype(np.float32)
        query_images[:copies] = np.roll(sources, 1, axis=-1) + noise
        out["copy_queries"] = copies
        groups_str = [f"p{g}" for g in groups]
        images = (train_images, query_images)
        out.update(_time_detection(model, images, groups_str, k, repeats, out["bf16"]))
    return out


def _time_detection(model, images, groups: list[str], k: int, repeats: int, bf16: bool) -> dict:
    """benchmark_search's copy-detection figures (`images`: the training images and the
    queries): the detector (registration, the pair verifier at the detail's and at the
    aligner's alignment) and the former method, taking turns `repeats` times; medians (and
    runs). `bf16`: the detector's turn in bf16 (nets.bf16_inference)."""
    out: dict = {}
    runs: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, legacy in (("", False), ("legacy_", True)):  # registration, former FFT-NCC
            with bf16_inference(bf16 and not legacy):
                nb = _one_turn(model, images, groups, k, legacy, runs)
            out[f"{name}candidates_per_query"] = nb.index.shape[1]
    for key, values in runs.items():
        out[key] = round(float(np.median(values)), 2)
        if repeats > 1:
            out[f"{key}_runs"] = [round(v, 2) for v in values]
    return out


def _one_turn(model, images, groups: list[str], k: int, legacy: bool, runs: dict):
    """One method's turn (`legacy`: the former one): its reference preparation and its copy
    detection of the queries, wall and CPU seconds appended to `runs`; its neighbours."""
    from .aligner import Aligner
    from .copies import build_reference, find_neighbours
    from .verifier import PairVerifier, score_aligned, score_pairs

    train_images, query_images = images
    name, size = "legacy_" if legacy else "", min(train_images.shape[-1], 64)
    tick, cpu = time.perf_counter(), time.process_time()
    reference = build_reference(model, train_images, groups, groups, size, legacy=legacy)
    runs[f"{name}reference_prepare_seconds"].append(time.perf_counter() - tick)
    runs[f"{name}reference_prepare_cpu_seconds"].append(time.process_time() - cpu)
    tick, cpu = time.perf_counter(), time.process_time()
    nb = find_neighbours(model, reference, query_images, size, k, legacy=legacy)
    if not legacy:  # the former method had no verifier
        verifier = PairVerifier().eval()
        score_pairs(verifier, reference, query_images, nb)
        score_aligned(verifier, Aligner().eval(), reference, query_images, nb)
    runs[f"{name}copy_detection_seconds"].append(time.perf_counter() - tick)
    # CPU seconds of this process: on a shared machine, what the pass costs uncontended
    runs[f"{name}copy_detection_cpu_seconds"].append(time.process_time() - cpu)
    return nb


def measure_copy_detection(
    dataset_dir: str | Path,
    out_dir: str | Path,
    config,
    n_copies: int = 1000,
    fresh_split: str = "test",
    seed: int = 0,
) -> dict:
    """Audit a set of `n_copies` altered training copies plus every `fresh_split` image (real,
    never trained on, not the calibration split), as it is and altered photometrically
    (challenge.altered_fresh); return the flag rates with 95% intervals, overall, per
    alteration and per alteration strength. The truth, with what each alteration drew and each
    image's score, goes to OUT_DIR/planted.csv (beside the set, not in it: the set must look
    like any other)."""
    from conditioning.dataset import load_dataset

    from .audit import run_audit
    from .challenge import altered_fresh, planted_copies, write_challenge_set, write_planted

    if fresh_split in (config.train_split, config.holdout_split):
        raise ValueError(f"fresh split {fresh_split!r} must differ from train and holdout splits")
    dataset = load_dataset(dataset_dir)
    train, fresh = dataset.split(config.train_split), dataset.split(fresh_split)
    if not fresh:
        raise ValueError(f"{dataset.root}: split {fresh_split!r} holds no image")
    rng = np.random.default_rng(seed)
    fresh_images = [dataset.load_image(r) for r in fresh]
    planted = planted_copies(
        lambda i: dataset.load_image(train[i]), len(train), fresh_images, n_copies, rng
    )
    # its own stream, so the copies and their places in the set are those drawn without it
    fresh_altered, fresh_kinds = altered_fresh(fresh_images, np.random.default_rng([seed, 1]))
    out_dir = Path(out_dir)
    truth = write_challenge_set(
        out_dir / "set", planted.copies, fresh_images, seed=seed, fresh_altered=fresh_altered
    )
    report = run_audit(out_dir / "set", dataset_dir, out_dir / "report", config)
    samples = {s.file: (s.score, s.flagged) for s in report.samples}
    sources = [train[i].id for i in planted.sources]
    write_planted(out_dir / "planted.csv", truth, planted, sources, samples, fresh_kinds)
    return {
        **_flag_rates(truth, planted, {f: flag for f, (_, flag) in samples.items()}),
        "threshold": report.thresholds.copy.threshold,
        "quantile": report.thresholds.copy.quantile,
        "timings": to_json(report.timings),
        "report": str(out_dir / "report"),
        "planted": str(out_dir / "planted.csv"),
    }


def measure_copy_detection_sets(
    dataset_dir: str | Path,
    out_dir: str | Path,
    config,
    n_copies: int = 1000,
    fresh_split: str = "test",
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
) -> dict:
    """measure_copy_detection on one planted set per seed (OUT_DIR/seed-N each, with its own
    copy-detection.json), and the copies' flag rates pooled over them: one set of 1,000 copies
    moves by 3-8 copies from seed to seed (on the Kermany films, 981-991 of 1,000 flagged by one
    detector; docs/privacy-audit.md), so a change is judged on several. The networks are
    trained for the first set and reused (they depend on the training split alone). Every set
    mixes in the same real `fresh_split` films, so their count is per set, not pooled: the
    pooled figure is the largest; the altered fresh films, drawn per seed, are pooled."""
    from conditioning.dataset import write_json_atomic

    if not seeds:
        raise ValueError("no seed: at least one planted set is needed")
    out_dir = Path(out_dir)
    results = []
    for seed in seeds:
        result = measure_copy_detection(
            dataset_dir, out_dir / f"seed-{seed}", config, n_copies, fresh_split, seed
        )
        write_json_atomic(out_dir / f"seed-{seed}" / "copy-detection.json", result)
        results.append(result)
    sets = [_set_summary(seed, r) for seed, r in zip(seeds, results, strict=True)]
    return {"sets": sets, **_pooled(results)}


def _set_summary(seed: int, result: dict) -> dict:
    keys = ("copies", "copies_flagged", "fresh_flagged", "fresh_altered_flagged", "threshold")
    return {"seed": seed, **{k: result[k] for k in keys}, "report": result["report"]}


def _pooled(results: list[dict]) -> dict:
    """The copies and altered fresh films summed over the sets (Wilson intervals), per group of
    copies too; the fresh films (the same in every set) the largest count of any set."""
    copies, flagged = (sum(r[k] for r in results) for k in ("copies", "copies_flagged"))
    altered, altered_flagged = (
        sum(r[k] for r in results) for k in ("fresh_altered", "fresh_altered_flagged")
    )
    groups = {}
    for name in results[0]["flagged_by_group"]:
        n = sum(r["flagged_by_group"][name]["copies"] for r in results)
        m = sum(r["flagged_by_group"][name]["flagged"] for r in results)
        groups[name] = {"copies": n, "flagged": m, "ci95": stats.wilson_interval(m, n)}
    fresh_flagged = max(r["fresh_flagged"] for r in results)
    return {
        "copies": copies,
        "copies_flagged": flagged,
        "copies_flagged_rate": flagged / copies,
        "copies_flagged_ci95": stats.wilson_interval(flagged, copies),
        "fresh": results[0]["fresh"],
        "fresh_flagged": fresh_flagged,
        "fresh_flagged_rate": fresh_flagged / results[0]["fresh"],
        "fresh_altered": altered,
        "fresh_altered_flagged": altered_flagged,
        "fresh_altered_flagged_ci95": stats.wilson_interval(altered_flagged, altered),
        "flagged_by_group": groups,
    }


def _flag_rates(truth: dict[str, tuple[str, int]], planted, flagged: dict[str, bool]) -> dict:
    """Copies and fresh images flagged (with Wilson intervals), per alteration, per group of
    copies (challenge.copy_group) and per alteration strength."""
    from .challenge import flagged_by_group, flagged_by_strength

    copies = sorted((i, f) for f, (t, i) in truth.items() if t == "copy")
    copy_flags = [flagged[f] for _, f in copies]
    fresh_flags = [flagged[f] for f, (t, _) in truth.items() if t == "fresh"]
    altered_flags = [flagged[f] for f, (t, _) in truth.items() if t == "fresh_altered"]
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for (i, _), flag in zip(copies, copy_flags, strict=True):
        for name in planted.kinds[i]:
            by_kind[name].append(flag)
    n_copy, n_fresh = sum(copy_flags), sum(fresh_flags)
    return {
        "copies": len(copy_flags),
        "copies_flagged": n_copy,
        "copies_flagged_rate": n_copy / len(copy_flags),
        "copies_flagged_ci95": stats.wilson_interval(n_copy, len(copy_flags)),
        "fresh": len(fresh_flags),
        "fresh_flagged": n_fresh,
        "fresh_flagged_rate": n_fresh / len(fresh_flags),
        "fresh_flagged_ci95": stats.wilson_interval(n_fresh, len(fresh_flags)),
        "fresh_altered": len(altered_flags),
        "fresh_altered_flagged": sum(altered_flags),
        "fresh_altered_flagged_ci95": stats.wilson_interval(sum(altered_flags), len(altered_flags)),
        "flagged_rate_by_alteration": {
            k: round(float(np.mean(v)), 4) for k, v in sorted(by_kind.items())
        },
        "flagged_by_group": flagged_by_group(copy_flags, [planted.kinds[i] for i, _ in copies]),
        "flagged_by_strength": flagged_by_strength(
            copy_flags, [planted.drawn[i] for i, _ in copies]
        ),
    }
