"""The web app end to end in a real headless Chromium: upload references, generate, see the images.

Uses Debian's chromium (``apt-get install chromium``; `.ci/run` installs it) driven by Playwright's
Python package; skipped where either is missing. The pipeline is the real choi-tiny when it loads,
else the fake one, so the test checks the page whatever state the weights are in.
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium is not installed"),
    # Gradio's queue statistics use pandas options that pandas 3 deprecates: not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
    pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*"),
]
log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pipeline():
    from choi.pipelines.choi import CHOIPipeline

    return CHOIPipeline.from_pretrained("choi-tiny"), "choi-tiny"


def _references(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped example references when present, else a HOI-World test pair rendered now."""
    humans = sorted(EXAMPLES.glob("*human*.png")) if EXAMPLES.is_dir() else []
    objects = sorted(EXAMPLES.glob("*object*.png")) if EXAMPLES.is_dir() else []
    if humans and objects:
        return humans[0], objects[0]
    from choi.world import render_sample

    sample = render_sample("test", 0, seed=0, resolution=128)
    human, obj = tmp_path / "human.png", tmp_path / "object.png"
    Image.fromarray(np.asarray(sample.human_ref)).save(human)
    Image.fromarray(np.asarray(sample.object_ref)).save(obj)
    return human, obj


def test_generate_in_the_browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from choi.app import launch

    pipe, name = _pipeline()
    human, obj = _references(tmp_path)
    port = _free_port()
    demo = launch(pipe, host="127.0.0.1", port=port, outputs=tmp_path / "outputs", block=False)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=30_000)
            # A bad upload gets a one-line message, and the app keeps working.
            (tmp_path / "notes.png").write_text("not an image")
            page.locator("#human input[type=file]").set_input_files(str(tmp_path / "notes.png"))
            page.get_by_text("'notes.png': not an image file").first.wait_for(timeout=15_000)
            page.locator("#human button[aria-label='Remove Image']").first.click()
            page.locator("#human input[type=file]").set_input_files(str(human))
            page.locator("#object input[type=file]").set_input_files(str(obj))
            page.locator("#human img").first.wait_for(timeout=15_000)  # the upload reached the server and came back
            page.locator("#object img").first.wait_for(timeout=15_000)
            page.locator("#generate-images").click()
            image = page.locator("#gallery img").first
            image.wait_for(timeout=40_000)
            assert page.locator("#gallery").get_by_text("seed").count() >= 1
            width = image.evaluate("img => new Promise(ok => img.complete ? ok(img.naturalWidth) : img.onload = "
                                   "() => ok(img.naturalWidth))")  # fmt: skip
            assert width > 0, "the gallery image did not load"
            page.screenshot(path=str(tmp_path / f"app-{name}.png"), full_page=True)
            # Only the outputs (and Gradio's upload cache) are served: not the package, not the system.
            served = next((tmp_path / "outputs").glob("*/choi.json"))
            assert page.request.get(f"http://127.0.0.1:{port}/gradio_api/file={served}").status == 200
            for outside in (Path(__file__).resolve(), Path("/etc/hostname")):
                response = page.request.get(f"http://127.0.0.1:{port}/gradio_api/file={outside}")
                assert response.status in (403, 404), (outside, response.status)
            browser.close()
    finally:
        demo.close()
    assert any((tmp_path / "outputs").glob("*/choi.json"))
