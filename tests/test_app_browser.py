"""The app in a real browser: `streamlit run apps/app.py` on a free local port, driven by
Playwright with the system Chromium (no browser download): click Generate, wait for the grid,
take a screenshot, report the time from click to a fully loaded grid.

Set RADSYNTH_BROWSER_DATA_ROOT (and RADSYNTH_BROWSER_MODEL, a run directory relative to it) to
time a real model instead of the tiny one the test trains, and RADSYNTH_BROWSER_CONDITION
("pathology=viral") to ask for a condition (the tiny-model run always asks for one).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.app_fixtures import MODEL, app_root  # noqa: F401
from tests.conftest import REPO, debian_package_or_skip, make_tiny_dataset
from tests.test_app_viewer import dicom_voi

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = 16
GRID_JS = """n => {
  const imgs = [...document.querySelectorAll("img[src*='/media/']")];
  return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def chromium_or_skip() -> Path:
    """The system Chromium; installed with apt-get only as root in CI or on request."""
    debian_package_or_skip("chromium", [str(CHROMIUM)], "RADSYNTH_INSTALL_BROWSER")
    return CHROMIUM


@contextmanager
def browser_page(width: int, height: int):
    """A page of the system Chromium (headless, no network beyond localhost), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_or_skip()), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def streamlit_server(data_root: Path, log: Path, timeout: float = 90, auditor: bool = False):
    """The app on a free port (clinician view unless `auditor`); yields its URL; the process
    group is killed on exit."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "apps" / "app.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    env = {**os.environ, "RADSYNTH_DATA_ROOT": str(data_root)}
    env.pop("RADSYNTH_AUDITOR", None)
    if auditor:
        env["RADSYNTH_AUDITOR"] = "1"
    env["RADSYNTH_READER_DB"] = str(log.parent / "ratings.sqlite")
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited with {server.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after {timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=10)


def click_generate_and_time(
    url: str, model: str, screenshot: Path, condition: str | None = None
) -> float:
    """Seconds from the click on Generate to IMAGES fully loaded images in the browser;
    `condition` ("pathology=viral") is chosen in its select box first."""
    with browser_page(1400, 1500) as page:
        page.goto(f"{url}/?model={model}", timeout=60_000)
        button = page.get_by_role("button", name="Generate", exact=True)
        alert = page.locator("[data-testid='stAlertContentError']")
        button.or_(alert).first.wait_for(state="visible", timeout=180_000)  # model loaded
        if not button.count():
            pytest.fail(f"the Generate page shows an error: {alert.all_inner_texts()}")
        if condition:
            name, value = condition.split("=", 1)
            page.get_by_role("combobox", name=name).click()
            page.get_by_role("option", name=value, exact=True).click()
            page.get_by_role("combobox", name=name).and_(
                page.locator(f"[value='{value}']")
            ).wait_for(timeout=30_000)
        started = time.perf_counter()
        button.click()
        page.wait_for_function(GRID_JS, arg=IMAGES, timeout=120_000)
        elapsed = time.perf_counter() - started
        caption = page.get_by_text(f"{IMAGES} images in")
        caption.wait_for(timeout=10_000)
        print(f"\nserver side: {caption.inner_text()}")
        if condition:
            assert condition in caption.inner_text()  # the request carried the condition
        page.screenshot(path=str(screenshot), full_page=True)
        alerts = page.locator("[data-testid='stAlert']").all_inner_texts()
    assert not [a for a in alerts if "rror" in a or "Refused" in a], alerts
    return elapsed


def test_generate_in_the_browser(request, tmp_path):
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    chromium_or_skip()
    given = os.environ.get("RADSYNTH_BROWSER_DATA_ROOT")
    data_root = Path(given) if given else request.getfixturevalue("app_root")
    model = os.environ.get("RADSYNTH_BROWSER_MODEL") or MODEL
    condition = os.environ.get("RADSYNTH_BROWSER_CONDITION") or (
        "pathology=viral" if not given else None
    )
    screenshot = tmp_path / "app-screenshot.png"
    with streamlit_server(data_root, tmp_path / "streamlit.log") as url:
        elapsed = click_generate_and_time(url, model, screenshot, condition)
    assert screenshot.stat().st_size > 10_000
    print(
        f"\nclick -> {IMAGES}-image grid visible: {elapsed:.2f} s ({model}); screenshot {screenshot}"
    )
    runs = REPO / "runs"
    if runs.is_dir():
        shutil.copyfile(screenshot, runs / "app-screenshot.png")
        print(f"copied to {runs / 'app-screenshot.png'}")


HIRES_SET = "runs/hires-samples"
ENLARGED_JS = """side => [...document.querySelectorAll("img[src*='/media/']")]
  .some(i => i.complete && i.naturalWidth === side)"""


@pytest.fixture(scope="module")
def hires_root(tmp_path_factory) -> Path:
    """A 128x128 dataset, a model trained one step on it and two images it generated."""
    from generation.generate_set import SetRequest, generate_set
    from generation.pipeline import load_model
    from tests.app_fixtures import train_tiny_model

    root = tmp_path_factory.mktemp("hires-root")
    dataset = make_tiny_dataset(root / "data" / "hires", size=128, per_class=4)
    model = load_model(train_tiny_model(dataset, root / "runs"))
    generate_set(model, root / HIRES_SET, SetRequest(2, {}, 0), show_progress=False)
    return root


def _shown(page, side: int) -> tuple[np.ndarray, int]:
    """The grey levels of the enlarged image as the browser decoded it (drawn onto a canvas)
    and its on-screen width in CSS pixels. A re-run of the page can replace the image between
    the wait and the read: then it waits for the new one and reads again."""
    deadline = time.monotonic() + 60
    while True:
        page.wait_for_function(ENLARGED_JS, arg=side)
        found = _read_enlarged(page, side)
        if found is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found is not None, "the enlarged image kept being replaced for 60 s"
    width, height, grey = found
    return np.asarray(grey, dtype=np.uint8).reshape(height, side), width


def _read_enlarged(page, side: int):
    """[on-screen width, height, grey levels] of the enlarged image, or None if it is gone."""
    return page.evaluate(
        """side => {
          const i = [...document.querySelectorAll("img[src*='/media/']")]
        .find(i => i.complete && i.naturalWidth === side);
          if (!i) return null;
          const canvas = document.createElement("canvas");
          canvas.width = i.naturalWidth; canvas.height = i.naturalHeight;
          const context = canvas.getContext("2d");
          context.drawImage(i, 0, 0);
          const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
          return [i.clientWidth, canvas.height, Array.from(rgba.filter((_, k) => k % 4 === 0))];
        }""",
        side,
    )


def test_viewer_enlarges_a_128_image_and_windows_it_in_the_browser(hires_root, tmp_path):
    """A generated 128x128 image opened at 4x: 512 screen pixels, each source pixel a 4x4
    block; moving the window sliders re-renders exactly the DICOM linear VOI LUT of its grey
    levels at the values the sliders show."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from PIL import Image

    source = np.asarray(Image.open(hires_root / HIRES_SET / "images" / "syn000001.png"))
    assert source.shape == (128, 128)
    side = 128 * 4
    with streamlit_server(hires_root, tmp_path / "streamlit.log") as url:
        with browser_page(1600, 1400) as page:
            page.goto(f"{url}/?set={HIRES_SET}&image=1&zoom=4", timeout=60_000)
            page.get_by_text("Viewer", exact=True).click()
            before, on_screen = _shown(page, side)
            assert on_screen == side  # drawn at 1:1, not rescaled by the page
            assert np.array_equal(before, np.kron(source, np.ones((4, 4), np.uint8)))
            for label, key, presses in (("Window width", "ArrowLeft", 40),
                                        ("Window level (centre)", "ArrowLeft", 20)):  # fmt: skip
                slider = page.get_by_role("slider", name=label)
                slider.focus()
                for _ in range(presses):
                    page.keyboard.press(key)
            deadline = time.monotonic() + 60
            while True:  # the page re-runs after the last key press
                after, _ = _shown(page, side)
                # the window the page says it applied, from its caption
                caption = page.get_by_text(re.compile(r"window centre [0-9.]+, width")).first
                found = re.search(r"window centre ([0-9.]+), width ([0-9.]+)",
                                  caption.inner_text())  # fmt: skip
                centre, width = float(found[1]), float(found[2])
                expected = np.kron(dicom_voi(source, centre, width), np.ones((4, 4), np.uint8))
                settled = (centre, width) == (108.0, 216.0)
                if settled and np.array_equal(after, expected) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
    assert (centre, width) == (108.0, 216.0)  # 20 and 40 key presses moved the sliders
    assert np.array_equal(after, expected)
    assert (after == 0).any() or (after == 255).any()  # the narrower window clips
