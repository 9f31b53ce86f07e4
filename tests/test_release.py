"""`radsynth release`: the gate, atomicity, export round-trips and the datasheet."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.release.exports import WRITTEN_ON_PURPOSE
from privacy_audit.aligner import AlignerParams
from privacy_audit.audit import AuditConfig, run_audit
from privacy_audit.encoder import EncoderParams
from privacy_audit.phi import identifying_elements
from privacy_audit.verifier import VerifierParams
from tests.audit_data import _patient_image, make_patient_dataset, unflagged
from tests.conftest import make_tiny_dataset
from tests.synthetic_sets import write_synthetic_set

POOL = 16  # new images audited to make the set of 12 from: each is flagged with probability up to
# 1 - quantile, so 12 of them all pass only by the luck of a CPU's numerics
# (tests/test_audit_report.py's world)


def _fresh_set(out: Path, images: list[np.ndarray], seed: int = 99) -> Path:
    """A set of new images (not copies of anyone)."""
    n = len(images)
    write_synthetic_set(out, ["normal", "viral"] * (n // 2), size=32, seed=seed,
                        extra={"age_months": [str(12 + 7 * i) for i in range(n)]})  # fmt: skip
    from conditioning.dataset.pixels import quantize, write_png

    for i, image in enumerate(images):
        write_png(out / "images" / f"syn{i:06d}.png", quantize(image, 8))
    return out


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> dict[str, Path]:
    """A set of 12 new images that passes the audit: the first 12 of POOL that an audit of them
    does not flag (at most 2 may be, about 0.1 expected)."""
    root = tmp_path_factory.mktemp("release")
    data = make_patient_dataset(root / "data", train=200, val=200, test=10)
    config = AuditConfig(encoder=EncoderParams(steps=20, batch=64), verifier=VerifierParams(steps=40),
                         aligner=AlignerParams(steps=40),
                         encoder_cache=str(root / "cache"),
                         n_boot=50, progress=False)  # fmt: skip
    rng = np.random.default_rng(99)
    images = [_patient_image(rng, 32) for _ in range(POOL)]
    pool = run_audit(_fresh_set(root / "pool", images), data, root / "pool-report", config)
    kept = unflagged(pool, images, limit=2)
    synthetic = _fresh_set(root / "set", kept[:12])
    report = run_audit(synthetic, data, root / "report", config)
    assert report.verdict == "pass", report.reasons
    return {"root": root, "data": data, "set": synthetic, "report": root / "report"}


def _release(audited, out: Path, name: str = "r1", *extra: str) -> int:
    return main(["release", "--set", str(audited["set"]), "--report", str(audited["report"]),
                 "--name", name, "--out", str(out), "--data", str(audited["data"]),
                 "--version-control", "none", *extra])  # fmt: skip


def test_release_contents_and_exports(audited, tmp_path: Path) -> None:
    import pydicom
    from monai.data import load_decathlon_datalist

    assert _release(audited, tmp_path, "r1", "--export", "datalist", "--export", "dicom",
                    "--export", "nifti") == 0  # fmt: skip
    release = tmp_path / "r1"
    names = {p.name for p in release.iterdir()}
    assert {"images", "manifest.csv", "datalist.json", "dicom", "nifti", "audit", "datasheet.md",
            "lineage.json", "sample_grid.png"} <= names  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the auditor's HTML shows training images: only the image-free report travels
    assert sorted(p.name for p in (release / "audit").iterdir()) == [
        "report-public.html",
        "report.json",
    ]

    items = load_decathlon_datalist(
        release / "datalist.json", is_segmentation=False, base_dir=release
    )
    assert len(items) == 12
    assert all(Path(i["image"]).is_file() and i["label"] in (0, 1) for i in items)
    assert {i["pathology"] for i in items} == {"normal", "viral"}

    files = sorted((release / "dicom").glob("*.dcm"))
    assert len(files) == 12
    for file in files:
        ds = pydicom.dcmread(file)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert list(ds.ImageType)[:1] == ["DERIVED"] and ds.SyntheticData == "YES"
        assert "SYNTHETIC" in ds.DerivationDescription
        assert identifying_elements(ds, allow=WRITTEN_ON_PURPOSE) == []
        assert not ds.PatientName and not ds.PatientID and not ds.get("PatientBirthDate")
        assert ds.PhotometricInterpretation == "MONOCHROME2"  # higher values are brighter
        # the dataset records no pixel spacing: the export claims none
        assert "PixelSpacing" not in ds and "ImagerPixelSpacing" not in ds
        png = np.asarray(
            __import__("PIL.Image", fromlist=["Image"]).open(
                release / "images" / f"{file.stem}.png"
            )
        )
        assert np.array_equal(ds.pixel_array, png)
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in files}) == 12

    import nibabel as nib

    nifti = nib.load(release / "nifti" / "syn000000.nii.gz").get_fdata()
    assert nifti.shape == (32, 32)

    lineage = json.loads((release / "lineage.json").read_text())
    assert lineage["audit"]["verdict"] == "pass"
    assert len(lineage["dataset"]["content_sha256"]) == 64
    assert lineage["code"]["git_commit"] is None or len(lineage["code"]["git_commit"]) == 40
    sheet = (release / "datasheet.md").read_text()
    for phrase in ("synthetic", "Intended use", "Known biases", "verdict: **pass**", "audit-tiny",
                   "`pathology`: normal 6 (50.0%), viral 6 (50.0%)", "12-36 months"):  # fmt: skip
        assert phrase in sheet


def test_gate_refuses_failed_report_and_modified_set(audited, tmp_path: Path, capsys) -> None:
    changed = tmp_path / "set"
    shutil.copytree(audited["set"], changed)
    from conditioning.dataset.pixels import write_png

    write_png(changed / "images" / "syn000003.png", np.zeros((32, 32), np.uint8))
    code = main(["release", "--set", str(changed), "--report", str(audited["report"]), "--name", "x",
                 "--out", str(tmp_path / "rel"), "--version-control", "none"])  # fmt: skip
    assert code == 3 and "changed since it was audited" in capsys.readouterr().err
    assert not (tmp_path / "rel" / "x").exists()

    failing = tmp_path / "failing"
    shutil.copytree(audited["report"], failing)
    report = json.loads((failing / "report.json").read_text())
    report["verdict"] = "fail"
    report["reasons"] = ["3 images are near-copies of training images"]
    (failing / "report.json").write_text(json.dumps(report))
    code = main(["release", "--set", str(audited["set"]), "--report", str(failing), "--name", "y",
                 "--out", str(tmp_path / "rel"), "--version-control", "none"])  # fmt: skip
    assert code == 3 and "near-copies" in capsys.readouterr().err
    assert not (tmp_path / "rel" / "y").exists()


def test_killed_release_leaves_previous_intact(audited, tmp_path: Path) -> None:
    out = tmp_path / "rel"
    assert _release(audited, out, "r") == 0
    before = sorted(p.relative_to(out).as_posix() for p in (out / "r").rglob("*"))
    lineage_before = (out / "r" / "lineage.json").read_bytes()
    # a slowed-down DICOM export gives the test time to kill -9 the process mid-release
    slow = (
        "import sys, time\n"
        "import pipelines.release.build as b\n"
        "real = b.write_secondary_capture\n"
        "def slow(*a, **k):\n"
        "    time.sleep(0.2)\n"
        "    return real(*a, **k)\n"
        "b.write_secondary_capture = slow\n"
        "from pipelines.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", slow, "release", "--set", str(audited["set"]), "--report",
           str(audited["report"]), "--name", "r", "--out", str(out), "--overwrite", "--version-control",
           "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # a busy machine starts the subprocess slowly
    while time.time() < deadline and not list(out.glob(".r.*.partial/images/*.png")):
        time.sleep(0.05)
    assert list(out.glob(".r.*.partial/images/*.png")), "release never started writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "r").rglob("*")) == before
    assert (out / "r" / "lineage.json").read_bytes() == lineage_before
    # the next release cleans the leftover staging directory
    assert _release(audited, out, "r", "--overwrite") == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_release_is_versioned_with_dvc_and_tagged(audited, tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    remote = tmp_path / "remote"

    def run(*cmd: str) -> str:
        result = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("git", "init", "-q")
    run("git", "config", "user.email", "ci@example.org")
    run("git", "config", "user.name", "CI")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote))
    run("git", "commit", "-qm", "init")
    monkeypatch.chdir(project)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    code = main(["release", "--set", str(audited["set"]), "--report", str(audited["report"]),
                 "--name", "v1", "--out", "releases"])  # fmt: skip
    assert code == 0
    assert (project / "releases" / "v1.dvc").is_file()
    assert "release/v1" in run("git", "tag")
    assert "releases/v1.dvc" in run("git", "show", "--stat", "release/v1")
    assert any(remote.rglob("*")), "nothing was pushed to the DVC remote"
    shutil.rmtree(project / "releases" / "v1")
    run(sys.executable, "-m", "dvc", "pull", "releases/v1.dvc")
    assert (project / "releases" / "v1" / "datasheet.md").is_file()


def _copy_set(audited, out: Path) -> Path:
    shutil.copytree(audited["set"], out)
    return out


def _audit_config(audited) -> AuditConfig:
    return AuditConfig(encoder=EncoderParams(steps=20, batch=64), verifier=VerifierParams(steps=40),
                         aligner=AlignerParams(steps=40),
                       n_boot=50, progress=False,
                       encoder_cache=str(audited["root"] / "cache"))  # fmt: skip


def test_hidden_or_linked_set_files_are_refused_by_audit_and_gate(audited, tmp_path) -> None:
    """Issue 19.1: a file the hash skipped could be swapped for a training image after the
    audit; a set holding one is now refused before anything is audited or released."""
    from privacy_audit.errors import AuditError

    hidden = _copy_set(audited, tmp_path / "hidden")
    os.replace(hidden / "images/syn000005.png", hidden / "images/.syn000005.png")
    manifest = hidden / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("images/syn000005", "images/.syn000005"))
    with pytest.raises(AuditError, match=r"\.syn000005\.png: hidden file"):
        run_audit(hidden, audited["data"], tmp_path / "r-hidden", _audit_config(audited))

    linked = _copy_set(audited, tmp_path / "linked")
    os.replace(linked / "images", tmp_path / "elsewhere")
    (linked / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(AuditError, match=r"linked/images: symbolic link"):
        run_audit(linked, audited["data"], tmp_path / "r-linked", _audit_config(audited))

    # the gate refuses such a set too, whatever report it is shown
    assert _release({**audited, "set": linked}, tmp_path / "out") == 3
    assert not (tmp_path / "out" / "r1").exists()


def test_release_writes_the_bytes_it_hashed(audited, tmp_path, monkeypatch) -> None:
    """Issue 19.1: a swap after the gate's check cannot reach the release: the release hashes
    the bytes it copies and compares them with the audit once more."""
    import pipelines.release.build as build

    subject = _copy_set(audited, tmp_path / "set")
    training = next((audited["data"] / "images").rglob("*.png"))
    checked = build.check_release

    def check_then_swap(set_dir, report_dir):
        checked(set_dir, report_dir)
        shutil.copyfile(training, Path(set_dir) / "images/syn000005.png")

    monkeypatch.setattr(build, "check_release", check_then_swap)
    assert _release({**audited, "set": subject}, tmp_path / "out") == 3
    assert not (tmp_path / "out" / "r1").exists()


def test_incomplete_folder_is_named_by_audit_and_release(audited, tmp_path, capsys) -> None:
    """Issue 19.6: a generation killed before its manifest leaves images/ and generation.json;
    the audit warns that the set is incomplete and the release refuses it, naming why. The
    same folder without generation.json is a plain folder, released as images/<name>.png."""
    folder = tmp_path / "folder"
    shutil.copytree(audited["set"] / "images", folder / "images")
    (folder / "generation.json").write_text(json.dumps({"n": 64}))
    report = run_audit(folder, audited["data"], tmp_path / "report", _audit_config(audited))
    assert report.set.incomplete and "12 of 64 images" in report.set.incomplete
    assert any("incomplete" in r for r in report.reasons)
    assert "incomplete" in (tmp_path / "report" / "report.html").read_text()
    code = _release({**audited, "set": folder, "report": tmp_path / "report"}, tmp_path / "out")
    assert code == 3 and "12 of 64 images" in capsys.readouterr().err

    (folder / "generation.json").unlink()
    run_audit(folder, audited["data"], tmp_path / "report", _audit_config(audited))
    assert (
        _release({**audited, "set": folder, "report": tmp_path / "report"}, tmp_path / "out") == 0
    )
    released = sorted(p.name for p in (tmp_path / "out" / "r1" / "images").iterdir())
    assert released == [f"syn{i:06d}.png" for i in range(12)]


def test_release_is_readable_by_others(audited, tmp_path) -> None:
    """Issue 19 minor: a release is created 0755/0644 under the usual umask 022."""
    old = os.umask(0o022)
    try:
        assert _release(audited, tmp_path) == 0
    finally:
        os.umask(old)
    release = tmp_path / "r1"
    assert release.stat().st_mode & 0o777 == 0o755
    assert (release / "images").stat().st_mode & 0o777 == 0o755
    assert (release / "sample_grid.png").stat().st_mode & 0o777 == 0o644
    assert (release / "images" / "syn000000.png").stat().st_mode & 0o777 == 0o644


def test_lineage_carries_no_local_path(audited, tmp_path) -> None:
    """Issue 19 minor: a model card recorded the autoencoder's absolute path; the release's
    lineage names the run only."""
    model = tmp_path / "model"
    model.mkdir()
    card = {"kind": "diffusion", "autoencoder": {"source": "/home/alice/runs/ae-7", "sha256": "ab"}}
    (model / "model_card.json").write_text(json.dumps(card))
    assert _release(audited, tmp_path / "out", "r1", "--model", str(model)) == 0
    release = tmp_path / "out" / "r1"
    lineage = json.loads((release / "lineage.json").read_text())
    assert lineage["model"]["model_card"]["autoencoder"]["source"] == "ae-7"
    for name in ("lineage.json", "datasheet.md", "manifest.csv"):
        text = (release / name).read_text()
        assert "/home/alice" not in text and str(tmp_path) not in text, name


def test_dicom_export_writes_the_training_spacing_scaled_to_the_set(audited, tmp_path, caplog):
    """Issue 18.4: the DICOM files carry the typical pixel spacing of the training images of the
    dataset the model was trained on, scaled to the set's size; a model run that records another
    training dataset than --data gets no spacing rather than a wrong one."""
    import logging

    import pydicom

    from conditioning.dataset import load_dataset

    caplog.set_level(logging.INFO, logger="pipelines.release.build")
    spaced = make_tiny_dataset(tmp_path / "spaced", size=16, spacing=(1.4, 1.4))
    run = tmp_path / "run"
    run.mkdir()
    trained_on = {"name": "tiny", "hash": load_dataset(spaced).content_hash()}
    (run / "config.json").write_text(
        json.dumps({"kind": "latent-diffusion", "dataset": trained_on})
    )

    def release(name: str) -> list:
        assert main(["release", "--set", str(audited["set"]), "--report", str(audited["report"]),
                     "--name", name, "--out", str(tmp_path / "out"), "--data", str(spaced),
                     "--model", str(run), "--export", "dicom", "--version-control", "none"]) == 0  # fmt: skip
        return [pydicom.dcmread(f) for f in sorted((tmp_path / "out" / name / "dicom").iterdir())]

    # the set is 32x32, the dataset 16x16 at 1.4 mm: the same field of view in 0.7 mm pixels
    files = release("spaced")
    assert len(files) == 12
    for ds in files:
        assert ds.pixel_array.shape == (32, 32)
        assert [str(v) for v in ds.PixelSpacing] == ["0.7", "0.7"]
        assert "ImagerPixelSpacing" not in ds and ds.PhotometricInterpretation == "MONOCHROME2"
        assert "Pixel spacing 0.7 x 0.7 mm" in ds.DerivationDescription
        assert identifying_elements(ds, allow=WRITTEN_ON_PURPOSE) == []
    assert "DICOM export pixel spacing 1.4 x 1.4 mm at 16 x 16 pixels" in caplog.text
    released = tmp_path / "out" / "spaced"
    for name in ("manifest.csv", "lineage.json", "datasheet.md"):
        assert str(tmp_path) not in (released / name).read_text(), name

    (run / "config.json").write_text(json.dumps({"dataset": {"name": "x", "hash": "0" * 64}}))
    assert all("PixelSpacing" not in ds for ds in release("other-dataset"))
    assert "--model was trained on another dataset (hash 000000000000...)" in caplog.text
