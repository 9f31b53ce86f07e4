"""Acceptance of copy detection on tiny data: altered copies of training images are flagged,
fresh images of new patients are not, and the filtered set re-audits clean."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from conditioning.dataset import load_dataset
from privacy_audit.aligner import AlignerParams
from privacy_audit.audit import AuditConfig, run_audit
from privacy_audit.challenge import ALTERATIONS, planted_copies, write_challenge_set
from privacy_audit.copies import Standardiser
from privacy_audit.encoder import EncoderParams
from privacy_audit.errors import GateError
from privacy_audit.gate import check_release
from privacy_audit.verifier import VerifierParams

from .audit_data import (  # noqa: F401
    ALIGNER_STEPS,
    ENCODER_STEPS,
    VERIFIER_STEPS,
    encoder_cache,
    make_patient_dataset,
)

FRESH = 200  # new patients' films: at most 1% of them may be flagged, so no fewer than 100 (with
# 80 the test allowed none, where the calibration promises at most 0.5% on average)


def audit_config(cache) -> AuditConfig:
    return AuditConfig(
        quantile=0.995,
        # one hard round: on these 160 training films a second one separates them enough in the
        # embedding that the data attacks (DCR, DOMIAS) run in, that DOMIAS on the filtered set
        # of new patients' films alone reaches TPR 0.17 at 1% FPR (lower bound 0.12, limit 0.05;
        # 0.05 with one round) and fails the set (on the Kermany films' full arm of `bench
        # memorization`, two rounds: AUC 0.56, TPR 0.02; docs/privacy-audit.md)
        encoder=EncoderParams(steps=ENCODER_STEPS, hard_rounds=1),
        verifier=VerifierParams(steps=VERIFIER_STEPS),
        aligner=AlignerParams(steps=ALIGNER_STEPS),
        encoder_cache=str(cache),
        n_boot=100,
        progress=False,
    )


@pytest.fixture(scope="module")
def challenge(tmp_path_factory, one_thread, encoder_cache):  # noqa: F811
    root = tmp_path_factory.mktemp("audit-copies")
    data = make_patient_dataset(root / "data", test=FRESH)
    (root / "cache").symlink_to(encoder_cache)  # trained once per session
    ds = load_dataset(data)
    train, test = ds.split("train"), ds.split("test")
    rng = np.random.default_rng(5)
    fresh = [ds.load_image(r) for r in test]
    planted = planted_copies(lambda i: ds.load_image(train[i]), len(train), fresh, 120, rng)
    truth = write_challenge_set(root / "set", planted.copies, fresh, seed=1)
    sources = {f: train[planted.sources[i]].id for f, (kind, i) in truth.items() if kind == "copy"}
    report = run_audit(
        root / "set",
        data,
        root / "report",
        audit_config(root / "cache"),
        filtered_out=root / "filtered",
        filtered_report=root / "report2",
    )
    return root, data, truth, report, sources


def test_copies_flagged_and_fresh_images_not(challenge):
    """At least 99% of the copies flagged, at most 1% of the fresh images; counted in whole
    images. The margins (each side's nearest score to the threshold, in the score's z units) go
    into the message: on this fixture they are wide, so no CPU's rounding (AVX2, AVX512, AMX)
    moves an image across the threshold."""
    _, _, truth, report, _ = challenge
    threshold = report.thresholds.copy.threshold
    samples = {s.file: s for s in report.samples}
    copies = sorted(f for f, (kind, _) in truth.items() if kind == "copy")
    fresh = sorted(f for f, (kind, _) in truth.items() if kind == "fresh")
    copy_scores = sorted(samples[f].score for f in copies)
    fresh_scores = sorted(samples[f].score for f in fresh)
    missed = sum(not samples[f].flagged for f in copies)
    false = sum(samples[f].flagged for f in fresh)
    margins = (
        f"threshold {threshold:.3f}; lowest copy scores {copy_scores[:3]}, "
        f"highest fresh scores {fresh_scores[-3:]}"
    )
    assert missed <= len(copies) // 100, f"{missed} of {len(copies)} copies missed; {margins}"
    assert false <= len(fresh) // 100, f"{false} of {len(fresh)} fresh images flagged; {margins}"
    assert report.verdict == "fail"
    assert any("closer to a training image" in r for r in report.reasons)
    assert len(ALTERATIONS) == 12  # every alteration appears alone among the copies


def test_flagged_copy_points_at_the_training_image_it_copies(challenge):
    _, data, truth, report, sources = challenge
    ds = load_dataset(data)
    by_id = {r.id: r for r in ds.records}
    same_patient, deciding = 0, Counter()
    for sample in report.samples:
        if truth[sample.file][0] == "copy":
            nearest = sample.nearest[0]
            assert by_id[nearest.id].split == "train"
            same_patient += by_id[nearest.id].patient_id == by_id[sources[sample.file]].patient_id
            assert max(nearest.ncc, nearest.patch) > 0.8
            if sample.flagged:  # the report says why, and how the copy was aligned
                assert nearest.transform is not None and len(nearest.transform.shift_px) == 2
                assert nearest.decided_by in Standardiser.COMPONENTS
                deciding[nearest.decided_by] += 1
    assert same_patient == len(sources)
    assert deciding["detail"] + deciding["detail_patch"] > 0, deciding  # both alignments shown
    assert deciding["ncc"] + deciding["patch"] > 0, deciding
    # the rule an auditor reads names the terms the score is the largest of, and no other
    terms = report.thresholds.copy.score.split("max(")[1].split(")")[0].split(", ")
    assert len(terms) == len(Standardiser.COMPONENTS) and "zE" not in terms, terms


def test_filtered_copy_reaudits_clean_and_passes_the_gate(challenge):
    root, data, truth, report, _ = challenge
    kept = sorted(
        p.relative_to(root / "filtered").as_posix()
        for p in (root / "filtered" / "images").glob("*.png")
    )
    assert kept == sorted(s.file for s in report.samples if not s.flagged)
    manifest = (root / "filtered" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == len(kept) + 1
    assert report.filtered.verdict == "pass", report.filtered.reasons
    assert report.filtered.images == len(kept)
    again = json.loads((root / "report2" / "report.json").read_text())
    assert again["encoder"]["reused_from_cache"]
    assert again["encoder"]["inference"] == "fp32"  # the networks' precision is on the record
    assert again["summary"]["copy_detection"]["flagged"] == 0
    check_release(root / "filtered", root / "report2")
    with pytest.raises(GateError, match="failed"):
        check_release(root / "set", root / "report")


def test_audit_bench_copies_measures_flag_rates(challenge, tmp_path, capsys):
    from pipelines.cli import main as radsynth

    root, data, _, _, _ = challenge
    code = radsynth(
        [
            "audit-bench",
            "copies",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "b"),
            "--copies",
            "30",
            "--encoder-steps",
            str(ENCODER_STEPS),
            "--verifier-steps",
            str(VERIFIER_STEPS),
            "--encoder-cache",
            str(root / "cache"),
            "--threads",
            "1",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "b" / "copy-detection.json").read_text())
    assert result["copies"] == 30 and result["fresh"] == result["fresh_altered"] == FRESH
    assert result["copies_flagged_rate"] == 1.0 and result["fresh_flagged_rate"] <= 0.01
    assert result["fresh_altered_flagged"] <= FRESH // 100
    assert set(result["flagged_rate_by_alteration"]) == set(ALTERATIONS)
    groups = result["flagged_by_group"]
    assert sum(g["copies"] for g in groups.values()) == 30
    assert all(g["flagged"] == g["copies"] for g in groups.values())  # every copy flagged
    assert json.loads(capsys.readouterr().out)["copies"] == 30


def test_encoder_training_is_deterministic():
    import torch

    from privacy_audit.encoder import train_encoder

    images = np.random.default_rng(0).random((40, 16, 16), dtype=np.float32)
    groups = [f"p{i // 2}" for i in range(40)]
    params = EncoderParams(input_size=16, steps=3, batch=8)
    first, _ = train_encoder(images, groups, params, progress=False)
    second, _ = train_encoder(images, groups, params, progress=False)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_the_report_shows_the_alignment_the_deciding_score_was_measured_at():
    """The combined score is its largest term; the report names that term and aligns the pair
    where it was measured: the detail scores' own alignment for them (they may be taken a step
    around the registration's, the local one where the pair's blocks agree), the
    registration's for the others."""
    import torch

    from privacy_audit.copies import Neighbours
    from privacy_audit.register import Transform

    registration, whole, window, blocks = (Transform(False, a, 1.0) for a in (3.0, 0.0, 1.5, 2.2))
    typical = np.full((2, 1), 0.2, dtype=np.float32)  # the calibration's median
    nb = Neighbours(
        index=np.zeros((2, 1), dtype=np.int64),
        cosine=typical,
        ncc=np.array([[0.99], [0.2]], dtype=np.float32),  # query 0: a registered copy
        embeddings=torch.zeros(2, 4),
        patch=typical,
        transforms={(0, 0): registration, (1, 0): registration},
        detail=np.array([[0.1], [0.3]], dtype=np.float32),
        detail_patch=np.array([[0.1], [0.9]], dtype=np.float32),  # query 1: a pasted region
        detail_at={(0, 0): (whole, window, blocks), (1, 0): (whole, window, blocks)},
    )
    spread = np.array([[0.1], [0.2], [0.3]], dtype=np.float32)  # held-out images' best
    fit = Neighbours(np.zeros((3, 1), dtype=np.int64), spread, spread, torch.zeros(3, 4))
    fit.patch = fit.detail = fit.detail_patch = spread
    std = Standardiser.fit(fit)
    names = [Standardiser.COMPONENTS[i] for i in std.deciding(nb)[:, 0]]
    assert names == ["ncc", "detail_patch"]
    assert np.array_equal(std.combined(nb), std.components(nb).max(0))
    assert nb.alignment(0, 0, names[0]) == registration
    assert nb.alignment(1, 0, names[1]) == window
    assert nb.alignment(1, 0, "detail") == whole
    assert nb.alignment(1, 0, "detail_local") == blocks  # where the blocks agreed (blockmatch)


def test_audit_bench_copies_pools_several_planted_sets(challenge, tmp_path):
    """`--sets 2`: one planted set per seed, each with its own result, and the copies pooled;
    the real fresh films, the same in both, are not counted twice."""
    from pipelines.cli import main as radsynth

    root, data, _, _, _ = challenge
    args = ["audit-bench", "copies", "--data", str(data), "--out", str(tmp_path / "b")]
    args += ["--copies", "10", "--sets", "2", "--seed", "3", "--threads", "1"]
    args += ["--encoder-steps", str(ENCODER_STEPS), "--verifier-steps", str(VERIFIER_STEPS)]
    assert radsynth([*args, "--encoder-cache", str(root / "cache")]) == 0
    result = json.loads((tmp_path / "b" / "copy-detection.json").read_text())
    sets = result["sets"]
    assert [s["seed"] for s in sets] == [3, 4]
    for s in sets:
        own = json.loads((tmp_path / "b" / f"seed-{s['seed']}" / "copy-detection.json").read_text())
        assert own["copies"] == s["copies"] == 10 and own["copies_flagged"] == s["copies_flagged"]
    assert sets[0]["threshold"] == sets[1]["threshold"]  # the same networks and calibration
    assert result["copies"] == 20
    assert result["copies_flagged"] == sum(s["copies_flagged"] for s in sets)
    assert result["fresh"] == FRESH and result["fresh_altered"] == 2 * FRESH
    assert result["fresh_flagged"] == max(s["fresh_flagged"] for s in sets)
    assert sum(g["copies"] for g in result["flagged_by_group"].values()) == 20
