"""The audit end to end: report schema and HTML, the release gate, bad inputs named clearly,
planted identifiers failing the verdict, and the `radsynth audit` command."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from conditioning.dataset import load_dataset
from pipelines.cli import main as radsynth
from privacy_audit.aligner import AlignerParams
from privacy_audit.audit import AuditConfig, run_audit
from privacy_audit.encoder import EncoderParams
from privacy_audit.errors import AuditError, GateError
from privacy_audit.gate import check_release
from privacy_audit.metadata import Forbidden, scan_set
from privacy_audit.report import MetadataFinding, read_report
from privacy_audit.verifier import VerifierParams

from .audit_data import (  # noqa: F401
    ALIGNER_STEPS,
    ENCODER_STEPS,
    VERIFIER_STEPS,
    encoder_cache,
    make_patient_dataset,
    save_png,
    unflagged,
)

REQUIRED = {
    "schema_version",
    "verdict",
    "reasons",
    "checks",
    "set_sha256",
    "set",
    "dataset",
    "encoder",
    "thresholds",
    "summary",
    "metadata_findings",
    "samples",
    "timings",
}


POOL = 48  # new patients' films audited to make the clean set of CLEAN from
CLEAN = 40


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoder_cache):  # noqa: F811
    """A dataset, a clean set of fresh (held-out test) images, and a shared encoder cache.

    The clean set is the first CLEAN films of POOL new patients that an audit of the pool does
    not flag. At quantile 0.99 a new patient's film is flagged with probability up to 1%, so 40
    such films all pass only about two times in three, and on which side a CPU's numerics
    (AVX2, AVX512, AMX) land varies: on an AVX2-only host one of the first 40 scored 2.07
    against a threshold of 1.81. The tests below need a set that passes; the pool's false flags
    are held to the calibration's rate, loosely (at most 4 of 48: about 0.5 expected)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audit-report")
    data = make_patient_dataset(root / "data")
    (root / "cache").symlink_to(encoder_cache)  # trained once per session
    ds = load_dataset(data)
    films = [ds.load_image(record) for record in ds.split("test")[:POOL]]
    _write_set(root / "pool", films)
    pool = run_audit(root / "pool", data, root / "pool-report", config(root))
    kept = unflagged(pool, films, limit=4)
    clean = root / "clean"
    _write_set(clean, kept[:CLEAN])
    yield root, data, clean
    torch.set_num_threads(threads)


def _write_set(root, images) -> None:
    """A synthetic set of `images`: images/synNNNNNN.png and a manifest.csv."""
    for i, image in enumerate(images):
        save_png(root / "images" / f"syn{i:06d}.png", image)
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "file", "pathology", "seed"])
        for i in range(len(images)):
            writer.writerow([f"syn{i:06d}", f"images/syn{i:06d}.png", "normal", i])


def config(root, **kw) -> AuditConfig:
    return AuditConfig(
        quantile=0.99,
        encoder=EncoderParams(steps=ENCODER_STEPS),
        verifier=VerifierParams(steps=VERIFIER_STEPS),
        aligner=AlignerParams(steps=ALIGNER_STEPS),
        encoder_cache=str(root / "cache"),
        n_boot=100,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def clean_report(world):
    root, data, clean = world
    return run_audit(clean, data, root / "clean-report", config(root))


def test_report_schema_html_and_log(world, clean_report):
    root, _, clean = world
    report = json.loads((root / "clean-report" / "report.json").read_text())
    assert REQUIRED <= set(report)
    assert read_report(root / "clean-report") == clean_report  # what run_audit returned
    assert report["verdict"] == "pass", report["reasons"]
    assert len(report["samples"]) == 40
    sample = report["samples"][0]
    assert {"file", "flagged", "score", "p_value", "nearest"} <= set(sample)
    assert sample["file"].startswith("images/syn") and sample["nearest"][0]["id"].startswith("img")
    copy = report["thresholds"]["copy"]
    assert {"rule", "quantile", "threshold", "how_set"} <= set(copy)
    summary = report["summary"]["copy_detection"]
    assert summary["flagged"] == 0 and summary["flagged_rate_ci95"][0] == 0.0
    assert "share_closer_to_train" in report["summary"]["dcr"]
    assert report["summary"]["model_membership"] == {"skipped": "no --model given"}
    assert "trained_by" in report["encoder"] and "this project" in report["encoder"]["trained_by"]
    assert (root / "clean-report" / "encoder" / "encoder.safetensors").is_file()
    page = (root / "clean-report" / "report.html").read_text()
    assert page.index("Verdict: PASS") < page.index("Copy detection")
    assert page.count("data:image/png;base64,") >= 3  # score plot, ROC plot, gallery images
    public = (root / "clean-report" / "report-public.html").read_text()
    assert "Verdict: PASS" in public and "data:image/png;base64," in public  # plots only
    assert "class='gallery'" in page and "class='gallery'" not in public
    assert "verdict pass" in (root / "clean-report" / "audit.log").read_text()
    assert not list(root.glob(".clean-report.*"))  # no staging directory left behind


SRC = re.compile(r"""(?:src|href)=["']([^"']*)["']""")


def _png_mode(uri: str) -> str:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).mode


def test_public_page_references_no_image_but_its_two_plots(world, clean_report):
    """report-public.html of a real audit: its only src/href are the score and ROC plots
    (colour figures), none of the gallery's greyscale images of the auditor's page, and no
    training image path."""
    root, data, _ = world
    page = (root / "clean-report" / "report.html").read_text()
    public = (root / "clean-report" / "report-public.html").read_text()
    shown = SRC.findall(public)
    assert len(shown) == 2 and all(u.startswith("data:image/png;base64,") for u in shown)
    assert {_png_mode(u) for u in shown} == {"RGBA"}  # matplotlib figures
    gallery = [u for u in SRC.findall(page) if _png_mode(u) == "L"]
    assert len(gallery) >= 8  # the auditor's page shows training and synthetic images
    assert not set(gallery) & set(shown) and not any(u in public for u in gallery)
    assert not any(r.file in public for r in load_dataset(data).split("train"))


def test_report_values_are_escaped_and_flagged_images_stay_off_the_public_page(clean_report):
    """Both pages escape every value (autoescape); a flagged image with its nearest training
    images is a gallery on the auditor's page and a row of text on the public one."""
    from privacy_audit.report_html import _png, render, render_public

    attack = "<script>alert(1)</script>"
    first = clean_report.samples[0]
    nearest = (replace(first.nearest[0], id=f"img{attack}"), *first.nearest[1:])
    sample = replace(first, flagged=True, file=f"images/{attack}.png", nearest=nearest)
    report = replace(
        clean_report,
        set=replace(clean_report.set, name=attack),
        reasons=(f"reason {attack}",),
        checks=(replace(clean_report.checks[0], detail=attack), *clean_report.checks[1:]),
        metadata_findings=(
            MetadataFinding(file="manifest.csv", severity="fail", kind=attack, detail=attack),
        ),
        samples=(sample, *clean_report.samples[1:]),
    )
    rng = np.random.default_rng(0)
    ids = sorted({n.id for s in report.samples for n in s.nearest})
    arrays = {
        "holdout_scores": rng.normal(size=50),
        "synthetic_scores": rng.normal(size=len(report.samples)),
        "synthetic_images": rng.uniform(size=(len(report.samples), 8, 8)),
        "train_images": rng.uniform(size=(len(ids), 8, 8)),
        "train_index": {k: i for i, k in enumerate(ids)},
    }
    page = render(report, arrays)
    public = render_public(report, arrays["holdout_scores"], arrays["synthetic_scores"])
    for html in (page, public):
        assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "Flagged images" in html
    nearest = arrays["train_images"][arrays["train_index"][sample.nearest[0].id]]
    assert _png(nearest) in page and _png(nearest) not in public
    assert _png(arrays["synthetic_images"][0]) in page
    assert not any(_png(image) in public for image in arrays["train_images"])
    assert "class='gallery'" not in public and len(SRC.findall(public)) == 2
    assert "<td>images/&lt;script&gt;alert(1)&lt;/script&gt;.png</td>" in public  # the table row


def test_gate_passes_the_audited_set_and_refuses_a_changed_one(world, clean_report, tmp_path):
    root, _, clean = world
    check_release(clean, root / "clean-report")
    changed = tmp_path / "changed"
    shutil.copytree(clean, changed)
    check_release(changed, root / "clean-report")  # same content elsewhere is the same set
    (changed / "images" / "syn000000.png").write_bytes(
        (changed / "images" / "syn000001.png").read_bytes()
    )
    with pytest.raises(GateError, match="changed since it was audited"):
        check_release(changed, root / "clean-report")
    with pytest.raises(GateError, match="report.json: missing"):
        check_release(clean, tmp_path / "no-report")


def test_gate_refuses_a_failed_verdict(world, clean_report, tmp_path):
    root, _, clean = world
    failed = tmp_path / "failed-report"
    shutil.copytree(root / "clean-report", failed)
    report = json.loads((failed / "report.json").read_text())
    report["verdict"], report["reasons"] = "fail", ["3 of 40 synthetic images are copies"]
    (failed / "report.json").write_text(json.dumps(report))
    with pytest.raises(GateError, match="audit .* failed .*3 of 40"):
        check_release(clean, failed)


def test_planted_identifiers_fail_the_verdict_and_are_named(world, tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    root, data, clean = world
    ds = load_dataset(data)
    train = ds.split("train")
    leaky = tmp_path / "leaky"
    shutil.copytree(clean, leaky)
    rows = list(csv.reader((leaky / "manifest.csv").open()))
    rows[0].append("source")
    rows[1].append(train[7].file)  # a training image path
    for row in rows[2:]:
        row.append("")
    rows[3][-1] = f"from {train[9].patient_id}"  # a patient id in free text
    with (leaky / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dcm = pydicom.Dataset()
    dcm.file_meta = meta
    dcm.PatientName = "Doe^Jane"
    dcm.Modality = "DX"
    (leaky / "export").mkdir()
    dcm.save_as(leaky / "export" / "syn000000.dcm", enforce_file_format=True)
    report = run_audit(leaky, data, tmp_path / "leaky-report", config(root))
    assert report.verdict == "fail"
    found = {(f.file, f.severity): f.detail for f in report.metadata_findings}
    assert "training image path" in found[("manifest.csv", "fail")] or any(
        f.file == "manifest.csv" and "training image path" in f.detail
        for f in report.metadata_findings
    )
    details = " | ".join(f"{f.file}: {f.detail}" for f in report.metadata_findings)
    assert "manifest.csv: content holds a patient_id of the dataset" in details
    assert "export/syn000000.dcm: identifying attribute (0010,0010) PatientName" in details
    assert "Doe^Jane" not in json.dumps(report.to_json())  # the value itself is never echoed
    assert "Doe^Jane" not in (tmp_path / "leaky-report" / "report.json").read_text()
    reasons = " ".join(report.reasons)
    assert "metadata leakage" in reasons and "PatientName" in reasons


def test_scan_finds_png_text_chunk_and_forbidden_file_names(tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "scan of person1234_virus_77.jpeg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png", pnginfo=info)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "person1234_virus_77.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "clean.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img000007.png")
    (tmp_path / "notes.csv").write_text("file,origin\nx.png,images/train/img000007.png\n")
    forbidden = Forbidden()
    forbidden.add("person1234_virus_77.jpeg", "source file no. 1")
    forbidden.add("images/train/img000007.png", "training image path", stems=False)
    findings = scan_set(tmp_path, forbidden)
    named = {(f.file, f.kind) for f in findings if f.severity == "fail"}
    assert ("a.png", "forbidden-string") in named
    assert ("person1234_virus_77.png", "file-name") in named
    assert ("notes.csv", "forbidden-string") in named
    assert not [f for f in findings if f.file in ("clean.png", "img000007.png")]


def test_bad_inputs_name_the_file(world, tmp_path):
    root, data, clean = world
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AuditError, match="empty: holds no PNG image"):
        run_audit(empty, data, tmp_path / "r1", config(root))
    wrong = tmp_path / "wrong-size"
    save_png(wrong / "a.png", np.zeros((48, 48)))
    with pytest.raises(AuditError, match=r"a\.png: image size 48x48 differs .* 32x32"):
        run_audit(wrong, data, tmp_path / "r2", config(root))
    broken = tmp_path / "broken"
    save_png(broken / "ok.png", np.zeros((32, 32)))
    (broken / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(AuditError, match=r"bad\.png: unreadable image"):
        run_audit(broken, data, tmp_path / "r3", config(root))
    listed = tmp_path / "listed"
    shutil.copytree(clean, listed)
    (listed / "images" / "syn000003.png").unlink()
    with pytest.raises(AuditError, match="syn000003.png: listed in manifest.csv line 5"):
        run_audit(listed, data, tmp_path / "r4", config(root))
    with pytest.raises(AuditError, match="must not be inside the audited set"):
        run_audit(clean, data, clean / "report", config(root))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()


def test_cli_audit_and_clear_errors(world, tmp_path, capsys, monkeypatch):
    root, data, clean = world
    monkeypatch.setenv("RADSYNTH_CACHE", str(tmp_path / "cache"))
    args = [
        "audit",
        "--synthetic",
        str(clean),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "cli-report"),
        "--quantile",
        "0.99",
        "--encoder-steps",
        str(ENCODER_STEPS),
        "--verifier-steps",
        str(VERIFIER_STEPS),
        "--encoder-cache",
        str(root / "cache"),
        "--no-progress",
    ]
    assert radsynth(args) == 0
    assert "verdict: pass" in capsys.readouterr().out
    check_release(clean, tmp_path / "cli-report")
    code = radsynth([*args[:2], str(tmp_path / "nowhere"), *args[3:]])
    assert code == 2
    assert "nowhere: synthetic set directory does not exist" in capsys.readouterr().err
    import generation

    monkeypatch.delattr(generation, "load_model", raising=False)
    assert radsynth([*args, "--model", str(tmp_path / "run")]) == 2
    assert "no generation.load_model" in capsys.readouterr().err


def test_cli_attacks_the_model_given_and_fails_a_memorising_one(
    world, tmp_path, capsys, monkeypatch
):
    import generation

    from .test_audit_mia import StepwiseProbe

    root, data, clean = world
    ds = load_dataset(data)
    remembered = np.stack([ds.load_image(r) for r in ds.split("train")])
    loaded = []

    def load_model(run_dir):
        loaded.append(run_dir)
        return StepwiseProbe(remembered, strength=0.5)

    monkeypatch.setattr(generation, "load_model", load_model, raising=False)
    out = tmp_path / "model-report"
    code = radsynth(
        [
            "audit",
            "--synthetic",
            str(clean),
            "--data",
            str(data),
            "--out",
            str(out),
            "--quantile",
            "0.99",
            "--encoder-steps",
            str(ENCODER_STEPS),
            "--verifier-steps",
            str(VERIFIER_STEPS),
            "--encoder-cache",
            str(root / "cache"),
            "--model",
            str(tmp_path / "run"),
            "--mia-samples",
            "100",
            "--filtered-out",
            str(tmp_path / "kept"),
            "--filtered-report",
            str(tmp_path / "kept-report"),
            "--no-progress",
        ]
    )
    assert code == 1 and loaded == [str(tmp_path / "run")]
    report = json.loads((out / "report.json").read_text())
    attacks = report["summary"]["model_membership"]["attacks"]
    assert set(attacks) == {"loss", "stepwise"} and attacks["loss"]["members"] == 100
    assert attacks["loss"]["auc"] > 0.9
    assert report["summary"]["model_membership"]["timesteps"] == [2, 5, 10, 20, 30]
    assert any("model loss attack" in r for r in report["reasons"])
    assert "model stepwise" in (out / "report.html").read_text()
    with pytest.raises(GateError, match="failed"):
        check_release(clean, out)
    # the filtered copy's audit reuses the model attack (same model) and fails with it
    again = json.loads((tmp_path / "kept-report" / "report.json").read_text())
    assert "reused" in again["summary"]["model_membership"]
    assert (
        again["verdict"] == "fail"
        and "filtered copy audited: verdict fail" in capsys.readouterr().out
    )


def test_filtered_copy_drops_the_flagged_images_masks_and_rows(tmp_path):
    from privacy_audit.imageset import open_set, write_filtered_copy

    root = tmp_path / "set"
    for i in range(3):
        save_png(root / "images" / f"syn{i:06d}.png", np.full((8, 8), i / 3))
        save_png(root / "masks" / f"syn{i:06d}.png", np.zeros((8, 8)))
    (root / "manifest.csv").write_text(
        "id,file,mask_file\n"
        + "".join(f"syn{i:06d},images/syn{i:06d}.png,masks/syn{i:06d}.png\n" for i in range(3))
    )
    (root / "generation.json").write_text("{}")
    out = write_filtered_copy(open_set(root), {"images/syn000001.png"}, tmp_path / "kept")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "generation.json",
        "images/syn000000.png",
        "images/syn000002.png",
        "manifest.csv",
        "masks/syn000000.png",
        "masks/syn000002.png",
    ]
    assert "syn000001" not in (out / "manifest.csv").read_text()
    assert open_set(out).image_files == ["images/syn000000.png", "images/syn000002.png"]
