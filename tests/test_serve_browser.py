"""`mirage-gym serve` in a real browser: Playwright drives Debian's chromium (``.ci/setup``
installs it) against the app served by uvicorn on a free loopback port.

CI sets ``MIRAGE_GYM_REQUIRE_BROWSER=1``, which turns a missing chromium into an error
instead of a skip. ``MIRAGE_GYM_UPDATE_SCREENSHOT=1`` also writes the README's screenshot, ``docs/serve.png``.
"""

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("MIRAGE_GYM_REQUIRE_BROWSER") == "1":  # CI (.ci/run) must run it
    raise RuntimeError("MIRAGE_GYM_REQUIRE_BROWSER=1 but no chromium is on PATH (bash .ci/setup installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (bash .ci/setup installs it)")

SCALE = 5  # the page draws the 64x64 frame on a 320x320 canvas
FRAME_PIXELS = f"""() => {{
    const data = document.getElementById('frame').getContext('2d').getImageData(0, 0, 320, 320).data;
    const out = [];
    for (let y = {SCALE // 2}; y < 320; y += {SCALE})
        for (let x = {SCALE // 2}; x < 320; x += {SCALE}) {{
            const i = 4 * (y * 320 + x);
            out.push(data[i], data[i + 1], data[i + 2]);
        }}
    return out;
}}"""


@pytest.fixture
def server_url():
    import uvicorn

    from mirage_gym.serve import ServeConfig, create_app

    server = uvicorn.Server(uvicorn.Config(create_app(ServeConfig(max_sessions=2)), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=30)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_walk_in_chromium(server_url, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 540})
            page.goto(server_url)

            def frame() -> np.ndarray:
                return np.array(page.evaluate(FRAME_PIXELS), dtype=np.uint8).reshape(64, 64, 3)

            def after(step: int) -> np.ndarray:
                page.wait_for_function(f"window.mirageState.step === {step} && !window.mirageState.pending")
                return frame()

            start = after(0)
            assert start.std() > 5  # a picture, not a blank canvas
            assert page.locator("#buttons button").count() == 9  # one per action the env names

            page.keyboard.press("ArrowLeft")
            turned = after(1)
            assert psnr(turned, start) < 35  # the view changed
            page.keyboard.press("ArrowRight")
            back = after(2)
            # back at the start pose, the world shows its start frame again (from memory)
            assert psnr(back, start) > 40 > psnr(turned, start)
            assert page.locator("#stat-step").inner_text() == "2"

            page.keyboard.press("w")
            after(3)
            page.keyboard.press("s")
            assert psnr(after(4), start) > 40
            page.locator("button[data-action=STRAFE_LEFT]").click()
            assert psnr(after(5), start) < 40

            page.locator("#seed").fill("0")
            page.locator("#reset").click()
            assert np.array_equal(after(0), start)  # a reset with the same seed is the same world

            # a snapshot goes down as a file and comes back up through the file input
            with page.expect_download() as download:
                page.locator("#save").click()
            snapshot = tmp_path / download.value.suggested_filename
            download.value.save_as(snapshot)
            page.keyboard.press("d")
            after(1)
            page.locator("#snapshot").set_input_files(str(snapshot))
            assert np.array_equal(after(0), start)
            # a start image, and a file that is not one (refused in words; the world stays)
            picture = tmp_path / "picture.png"
            Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(picture)
            frames = page.evaluate("window.mirageState.frames")
            page.locator("#image").set_input_files(str(picture))
            page.wait_for_function(f"window.mirageState.frames > {frames}")
            assert psnr(frame(), start) < 30
            fake = tmp_path / "notes.png"
            fake.write_text("not a picture")
            page.locator("#image").set_input_files(str(fake))
            page.wait_for_function("document.getElementById('status').className === 'error'")
            assert "PNG, JPEG or WebP" in page.locator("#status").inner_text()
            # record a few steps and download the mp4
            page.locator("#record").click()
            page.wait_for_function("window.mirageState.recording")
            for step, key in enumerate(("ArrowLeft", "ArrowRight"), start=1):
                page.keyboard.press(key)
                after(step)
            with page.expect_download() as download:
                page.locator("#video").click()
            assert download.value.suggested_filename.endswith(".mp4")
            page.locator("#record").click()
            page.locator("#reset").click()
            assert np.array_equal(after(0), start)

            # the README's screenshot: the memory twin on, after a short walk
            page.locator("#twinbtn").click()
            page.wait_for_function("window.mirageState.twin && window.mirageState.step === 0")
            for step, key in enumerate(("w", "w", "ArrowLeft", "ArrowLeft", "ArrowLeft", "w", "ArrowRight", "ArrowRight",
                                        "ArrowRight", "s"), start=1):
                page.keyboard.press(key)  # the page keeps at most 4 presses waiting: go one at a time
                after(step)
            assert page.locator("#twinbox").is_visible()
            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("MIRAGE_GYM_UPDATE_SCREENSHOT") == "1":
                target = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
                Image.open(shot).convert("RGB").quantize(colors=96).save(target, optimize=True)
        finally:
            browser.close()
