"""The radiograph viewer: window/level as the DICOM linear VOI LUT, enlargement by whole pixels,
a real test-split image beside a synthetic one through the same window, and the reader study
shown at the set's own resolution (AppTest on the tiny data root)."""

from __future__ import annotations

import numpy as np
import pytest

from apps.reader_deck import build_deck, display_png
from apps.viewer import enlarge, window_level
from conditioning.dataset import load_dataset, load_synthetic_set, quantize
from tests.app_fixtures import DATASET, SYNTHETIC, app_root  # noqa: F401
from tests.test_app import decoded, env, media, ok, open_page  # noqa: F401


def dicom_voi(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out case by case for an 8-bit output."""
    x = x.astype(float)
    low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    inside = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.rint(np.where(x <= low, 0, np.where(x > high, 255, inside))).astype(np.uint8)


def test_window_level_is_the_dicom_voi_lut_and_the_full_window_changes_nothing():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(window_level(grey, 128, 256), grey)
    for c, w in ((100, 50), (40, 2), (200, 181), (128, 255)):
        assert np.array_equal(window_level(grey, c, w), dicom_voi(grey, c, w)), (c, w)
    narrow = window_level(grey, 100, 50)
    assert set(np.unique(narrow[grey < 75])) == {0} and set(np.unique(narrow[grey > 125])) == {255}
    assert set(np.unique(window_level(grey, 100, 1))) == {0, 255}
    with pytest.raises(ValueError, match="width"):
        window_level(grey, 100, 0)


def test_enlarge_draws_each_pixel_as_a_block():
    grey = np.array([[0, 255], [10, 20]], dtype=np.uint8)
    big = enlarge(grey, 4)
    assert big.shape == (8, 8)
    assert (big[:4, :4] == 0).all() and (big[:4, 4:] == 255).all() and (big[4:, 4:] == 20).all()
    with pytest.raises(ValueError, match="zoom"):
        enlarge(grey, 3)


def test_viewer_page_shows_the_image_enlarged_through_the_window_beside_a_real_one(env, media):  # noqa: F811
    at = ok(open_page("Viewer"))
    at.selectbox(key="view_set").select(SYNTHETIC)
    ok(at.run())
    at.number_input(key="view_index").set_value(2)
    at.radio(key="view_zoom").set_value("4x")
    at.slider(key="view_centre").set_value(90)
    at.slider(key="view_width").set_value(60)
    media.clear()
    ok(at.run())
    synthetic = load_synthetic_set(env["root"] / SYNTHETIC)
    grey = quantize(synthetic.load_image(synthetic.images[2]), 8)
    shown = [decoded(data) for data, mime in media if mime == "image/png"]
    assert len(shown) == 1
    assert np.array_equal(shown[0], np.kron(dicom_voi(grey, 90, 60), np.ones((4, 4), np.uint8)))
    assert (
        "4x, nearest neighbour" in at.image[0].captions[0]
        if hasattr(at.image[0], "captions")
        else True
    )
    # beside it: a test-split image of the same condition, through the same window
    at.selectbox(key="view_real").select(DATASET)
    media.clear()
    ok(at.run())
    shown = [decoded(data) for data, mime in media if mime == "image/png"]
    assert len(shown) == 2
    dataset = load_dataset(env["root"] / DATASET)
    wanted = synthetic.images[2].conditions.get("pathology")
    test = [r for r in dataset.split("test") if r.conditions.get("pathology") == wanted]
    real = quantize(dataset.load_image(test[0]), 8)
    assert np.array_equal(shown[1], np.kron(dicom_voi(real, 90, 60), np.ones((4, 4), np.uint8)))


def test_reader_study_shows_both_origins_at_the_sets_resolution(env):  # noqa: F811
    dataset = load_dataset(env["root"] / DATASET)
    synthetic = load_synthetic_set(env["root"] / SYNTHETIC)
    image = synthetic.load_image(synthetic.images[0])  # 16x16: the largest block zoom, 4x
    shown = decoded(display_png(image))
    assert shown.shape == (64, 64)
    assert np.array_equal(shown, np.kron(quantize(image, 8), np.ones((4, 4), np.uint8)))
    big = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    assert decoded(display_png(big)).shape == (256, 256)
    assert decoded(display_png(np.zeros((300, 300), np.float32))).shape == (300, 300)
    assert build_deck(dataset, synthetic, 2, seed=0)
