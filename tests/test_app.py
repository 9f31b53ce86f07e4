"""The Streamlit app driven headless with AppTest on a tiny data root (model trained one step)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from apps.config import load_config
from apps.paths import PathRefused, inside_root
from conditioning.dataset import load_dataset, load_synthetic_set
from tests.app_fixtures import (  # noqa: F401
    AUDIT_DATASET,
    DATASET,
    MODEL,
    RELEASE,
    SYNTHETIC,
    app_root,
)
from tests.conftest import REPO

APP = str(REPO / "apps" / "app.py")


@pytest.fixture
def env(app_root, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RADSYNTH_DATA_ROOT", str(app_root))
    monkeypatch.setenv("RADSYNTH_READER_DB", str(tmp_path / "ratings.sqlite"))
    monkeypatch.delenv("RADSYNTH_AUDITOR", raising=False)
    return {"root": app_root, "db": tmp_path / "ratings.sqlite"}


@pytest.fixture
def media(monkeypatch) -> list[tuple[bytes, str]]:
    """Every file the app hands to the browser (images, downloads), with its MIME type."""
    captured: list[tuple[bytes, str]] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):
        data = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        captured.append((data, mimetype))
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return captured


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state["page"] = page
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error if not e.value.startswith("Verdict: ")]
    assert not errors, errors
    return at


def table(at: AppTest, column: str):
    """The first data frame on the page with this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def rendered(at: AppTest) -> bytes:
    """Everything sent to the browser for this page, serialized."""
    return b"".join(
        n.proto.SerializeToString() for n in at._tree if getattr(n, "proto", None) is not None
    )


def decoded(data: bytes) -> np.ndarray | None:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(data)))
    except Exception:  # noqa: BLE001 - not an image (zip, csv)
        return None


def test_generate_page_returns_the_requested_images_and_zip(env, media):
    at = ok(open_page("Generate"))
    assert at.selectbox(key="gen_model").value == MODEL
    at.selectbox(key=next(s.key for s in at.selectbox if s.label == "pathology")).select("viral")
    at.number_input(key="gen_n").set_value(5)
    at.slider(key="gen_steps").set_value(2)
    ok(at.button(key="generate").click().run())
    grid = at.image[0]
    assert len(grid.value) == 5 and grid.captions == [f"#{i}" for i in range(5)]
    zips = [d for d, mime in media if mime == "application/zip"]
    assert zips, "no zip download offered"
    extracted = Path(env["db"]).parent / "download"
    zipfile.ZipFile(io.BytesIO(zips[-1])).extractall(extracted)
    samples = load_synthetic_set(extracted)
    assert len(samples.images) == 5
    assert {item.conditions["pathology"] for item in samples.images} == {"viral"}
    assert {item.generation["steps"] for item in samples.images} == {"2"}
    assert samples.load_all().shape == (5, 16, 16)


def test_side_by_side_varies_one_attribute_with_the_same_seed(env):
    at = ok(open_page("Generate"))
    at.selectbox(key="sweep_attribute").select("pathology")
    ok(at.button(key="sweep_button").click().run())
    sweep = at.session_state["generate_sweep"]
    assert sweep["values"] == ["normal", "bacterial", "viral"]
    assert sweep["images"].shape == (3, 16, 16)
    from generation import Sampling
    from generation.pipeline import load_model

    model = load_model(env["root"] / MODEL)
    conditions = [{"pathology": v} for v in sweep["values"]]
    how = Sampling(sampler="dpm++", steps=1, guidance=2.0)
    same_noise = model.generate(conditions, 0, how, indices=[0, 0, 0])
    own_noise = model.generate(conditions, 0, how, indices=[0, 1, 2])
    assert np.allclose(sweep["images"], same_noise, atol=1e-6)
    assert not np.allclose(sweep["images"], own_noise, atol=1e-3)
    captions = [c for image in at.image for c in image.captions]
    assert captions == ["pathology=normal", "pathology=bacterial", "pathology=viral"]
    at.selectbox(key="sweep_attribute").select("age_months").run()
    ok(at.button(key="sweep_button").click().run())
    assert at.session_state["generate_sweep"]["values"] == [12.0, 54.0, 96.0, 138.0, 180.0]
    captions = [c for image in at.image for c in image.captions]
    assert captions == [f"age_months={v}" for v in (12, 54, 96, 138, 180)]


def test_model_path_outside_the_data_root_is_refused(env, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (env["root"] / "runs" / "link-out").symlink_to(outside, target_is_directory=True)
    try:
        for raw in (str(outside), "runs/../runs/tiny-model", "runs/link-out"):
            at = open_page("Generate")
            at.selectbox(key="gen_model").select(at.selectbox(key="gen_model").options[-1])
            at.run()
            at.text_input(key="gen_model_path").input(raw).run()
            assert not at.exception
            assert [e.value for e in at.error] and at.error[0].value.startswith("Refused: ")
            assert "Generate" not in [b.label for b in at.button]
        at = AppTest.from_file(APP, default_timeout=90)  # the same through the URL: ?model=...
        at.query_params["model"] = str(outside)
        at.run()
        assert at.error and "outside the data root" in at.error[0].value
    finally:
        (env["root"] / "runs" / "link-out").unlink()


def test_inside_root_rules(tmp_path):
    (tmp_path / "a").mkdir()
    assert inside_root(tmp_path, "a") == (tmp_path / "a").resolve()
    for bad in ("/", "a/../a", "../x", "missing"):
        with pytest.raises(PathRefused):
            inside_root(tmp_path, bad)


def test_reader_study_records_blinded_ratings_in_sqlite(env, media):
    at = ok(open_page("Reader study"))
    at.text_input(key="reader_id").input("dr-a")
    at.selectbox(key="rs_data").select(DATASET)
    at.selectbox(key="rs_set").select(SYNTHETIC)
    at.number_input(key="rs_n").set_value(2)
    ok(at.button(key="rs_start").click().run())
    state = at.session_state["reader_session"]
    deck = state["deck"]
    test_ids = {r.id for r in load_dataset(env["root"] / DATASET).split("test")}
    assert sorted(i.origin for i in deck) == ["real", "real", "synthetic", "synthetic"]
    assert all(i.item.split(":", 1)[1] in test_ids for i in deck if i.origin == "real")
    page = rendered(at)
    for item in deck:  # blinded: no id, file name or origin label of any deck image
        assert item.item.encode() not in page and item.item.split(":")[1].encode() not in page
    assert [image.captions for image in at.image] == [[""]]
    calls = ["real", "synthetic", "synthetic", "real"]
    for position, call in enumerate(calls):
        assert at.session_state["reader_session"]["position"] == position
        at.radio(key="rs_call").set_value(call)
        ok(at.button[0].click().run())
    assert at.success and "Session complete" in at.success[0].value
    with sqlite3.connect(env["db"]) as conn:
        rows = conn.execute(
            "SELECT reader, item, origin, call, realism, dataset, synthetic_set, rated_at "
            "FROM ratings ORDER BY id"
        ).fetchall()
    assert [r[3] for r in rows] == calls
    assert [r[1] for r in rows] == [i.item for i in deck]
    assert {r[0] for r in rows} == {"dr-a"} and {r[4] for r in rows} == {3}
    assert {(r[5], r[6]) for r in rows} == {(DATASET, SYNTHETIC)}
    assert all(datetime.fromisoformat(r[7]).utcoffset() == UTC.utcoffset(None) for r in rows)
    correct = sum(call == item.origin for call, item in zip(calls, deck, strict=True))
    ok(at.button(key="rs_finish").click().run())
    results = table(at, "condition")
    overall = results[results["condition"] == "all"].iloc[0]
    assert overall["ratings"] == 4 and overall["correct"] == correct


def _audit(env) -> tuple[list, dict]:
    report = json.loads((env["root"] / RELEASE / "audit" / "report.json").read_text())
    return load_dataset(env["root"] / AUDIT_DATASET).split("train"), report


def test_clinician_audit_view_hides_training_images(env, media):
    train, report = _audit(env)
    matched = {n["id"] for s in report["samples"] if s["flagged"] for n in s["nearest"]}
    assert report["verdict"] == "fail" and matched  # the fixture's copies were caught
    at = ok(open_page("Audit"))
    releases = table(at, "release")
    assert releases["verdict"].tolist() == ["fail"]
    assert releases["detectability_auroc"].tolist() == [0.712]
    reports = table(at, "report")
    assert reports["report"].tolist() == [f"{RELEASE}/audit/report.json"]
    assert reports["verdict"].tolist() == ["fail"] and reports["images"].tolist() == [6]
    assert at.selectbox(key="audit_report").value == f"{RELEASE}/audit/report.json"
    assert any("Verdict: fail" in e.value for e in at.error)
    assert [m.value for m in at.metric] == ["6", "2", "0.712"]  # the last: detectability
    assert any("viral 0.800" in c.value for c in at.caption)
    checks = table(at, "check").set_index("check")
    assert not checks.loc["copy_detection", "passed"]
    assert not at.get("iframe"), "report.html (galleries) embedded in the clinician view"
    page = rendered(at)
    assert b"data:image/png;base64" not in page
    leaked = sorted(r.id for r in train if r.id.encode() in page)
    assert not leaked, f"training ids shown to a clinician: {leaked}"
    dataset = load_dataset(env["root"] / AUDIT_DATASET)
    training_pixels = [dataset.read_pixels(r) for r in train]
    for data, _ in media:
        shown = decoded(data)
        assert shown is None or not any(
            shown.shape == t.shape and np.array_equal(shown, t) for t in training_pixels
        )


def test_auditor_view_embeds_the_full_report(env, monkeypatch):
    monkeypatch.setenv("RADSYNTH_AUDITOR", "1")
    train, report = _audit(env)
    flagged = [s for s in report["samples"] if s["flagged"]]
    at = ok(open_page("Audit"))
    frames = at.get("iframe")
    assert len(frames) == 1
    assert flagged[0]["nearest"][0]["id"] in frames[0].proto.srcdoc
    assert "data:image/png;base64" in frames[0].proto.srcdoc
    samples = table(at, "nearest training ids").set_index("file")
    assert flagged[0]["nearest"][0]["id"] in samples.loc[flagged[0]["file"], "nearest training ids"]


def test_cli_app_command_passes_its_options_to_the_app(tmp_path):
    from pipelines.cli import build_parser
    from pipelines.commands.app import command

    parser = build_parser()
    argv = command(parser.parse_args(["app", "--data-root", str(tmp_path), "--auditor"]))
    assert argv[argv.index("run") + 1] == APP
    config = load_config(argv[argv.index("--") + 1 :], env={})
    assert config.data_root == tmp_path.resolve() and config.role == "auditor"
    assert load_config([], env={"RADSYNTH_DATA_ROOT": str(tmp_path)}).role == "clinician"
    with pytest.raises(FileNotFoundError, match="not a directory"):
        command(parser.parse_args(["app", "--data-root", str(tmp_path / "missing")]))


def test_file_level_links_out_of_the_data_root_are_refused(env, monkeypatch, tmp_path):
    """Issue 19.3: a datasheet, a report.html or a model's weights that is a link to a file
    outside the data root is never read, although its folder lies inside."""
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    release = env["root"] / RELEASE
    model = env["root"] / "runs" / "linked-weights"
    moved: list[tuple[Path, Path]] = []

    def link_out(path: Path, target: Path) -> None:
        keep = tmp_path / f"kept-{len(moved)}"
        path.rename(keep)
        moved.append((keep, path))
        path.symlink_to(target)

    shutil.copytree(env["root"] / MODEL, model)
    try:
        link_out(release / "datasheet.md", secret)
        link_out(release / "audit" / "report.html", secret)
        shutil.copyfile(model / "unet.safetensors", tmp_path / "unet.safetensors")
        link_out(model / "unet.safetensors", tmp_path / "unet.safetensors")

        at = open_page("Audit")  # the clinician view shows a release's datasheet
        assert not at.exception and b"SECRET-LINE" not in rendered(at)
        assert any("outside the data root" in e.value for e in at.error)
        monkeypatch.setenv("RADSYNTH_AUDITOR", "1")
        at = open_page("Audit")
        assert not at.exception and b"SECRET-LINE" not in rendered(at)
        assert all("SECRET-LINE" not in f.proto.srcdoc for f in at.get("iframe"))

        at = open_page("Generate")
        at.selectbox(key="gen_model").select(at.selectbox(key="gen_model").options[-1]).run()
        at.text_input(key="gen_model_path").input("runs/linked-weights").run()
        assert not at.exception
        assert at.error and "unet.safetensors is a link to a file outside" in at.error[0].value
        assert "Generate" not in [b.label for b in at.button]
    finally:
        for keep, path in moved:
            path.unlink()
            keep.rename(path)
        shutil.rmtree(model)
