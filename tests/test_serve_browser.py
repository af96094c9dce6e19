"""The page end to end in Debian's Chromium: choose a poster, see the genre bars, click a genre, see its heatmap.

Needs /usr/bin/chromium (apt-get install chromium) and Playwright's Python package; never downloads a
browser. The screenshot lands in test-artifacts/serve.png.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'postergenre[serve]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'postergenre[serve]')")
from test_serve import GENRES, METRICS, fake_classifier, make_run  # noqa: E402

from postergenre.data.demo import demo_dataset_root  # noqa: E402
from postergenre.serve.app import create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
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
SCREENSHOT = REPO / "test-artifacts" / "serve.png"
TIMEOUT_MS = 60_000


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The tiny run served by uvicorn on a free loopback port, in a thread; heatmaps from a small random CNN."""
    from postergenre.explain import classifier as classifiers

    monkeypatch.setattr(classifiers, "load_classifier", lambda run: fake_classifier())
    app = create_app(make_run(tmp_path / "run", metrics=METRICS))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


@pytest.fixture
def page():
    """A headless Debian Chromium page driven by Playwright (skipped where either is missing)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent; apt-get install chromium to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except sync_api.Error as exc:
            pytest.skip(f"{CHROMIUM} would not start under Playwright: {str(exc).splitlines()[0]}")
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def test_page_scores_a_poster_and_shows_a_heatmap(page, server):
    """Check the page: a poster chosen -> one bar per genre (predicted ones marked) -> a click shows the heatmap."""
    import httpx
    from playwright.sync_api import expect

    requested, script_errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    poster = sorted((demo_dataset_root() / "images").glob("*.jpg"))[12]
    expected = httpx.post(f"{server}/api/predict", files={"file": (poster.name, poster.read_bytes())}).json()

    page.goto(server)
    expect(page.locator("#model")).to_contain_text("tiny-run")
    page.set_input_files("#file", str(poster))
    expect(page.locator("#bars .bar")).to_have_count(len(GENRES))
    assert sorted(page.locator("#bars .bar.predicted .name").all_inner_texts()) == sorted(expected["predicted"])
    names = page.locator("#bars .bar .name").all_inner_texts()
    by_genre = {g["genre"]: g["probability"] for g in expected["genres"]}
    assert names == sorted(by_genre, key=lambda g: -by_genre[g])  # most probable first

    genre = names[0]
    page.locator("#bars .bar", has_text=genre).click()
    expect(page.locator("#heatmap")).to_be_visible()
    assert page.locator("#heatmap").evaluate("image => image.decode().then(() => image.naturalWidth)") > 0
    assert page.locator("#caption").inner_text().startswith(f"{genre}: where the model found it")
    assert page.locator(f"#bars .bar[aria-pressed='true'][data-genre='{genre}']").count() == 1
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert not script_errors
    assert all(url.startswith((server, "blob:", "data:")) for url in requested), requested


def test_page_shows_the_servers_error_text(page, server):
    """Check a file the server refuses shows the API's own error text, and the next good poster is scored."""
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.locator("#model")).to_contain_text("tiny-run")
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a poster"}])
    expect(page.locator("#error")).to_be_visible()
    assert page.locator("#error-title").inner_text() == "Could not score notes.txt"
    assert page.locator("#error-text").inner_text().startswith("notes.txt: not an image file")
    expect(page.locator("#result")).to_be_hidden()

    poster = sorted((demo_dataset_root() / "images").glob("*.jpg"))[3]
    page.set_input_files("#file", str(poster))
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
