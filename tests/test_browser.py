"""The search page in a real browser: Playwright (Python) driving Debian's chromium.

`scripts/install.sh --test` installs both, so a missing or broken browser fails these tests
instead of skipping them (a green run must mean the page works); set LOOKALIKE_NO_BROWSER=1
to deselect them knowingly on a machine without chromium. A screenshot of the results page
is written to artifacts/ at the repository root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import playwright.sync_api as sync_api
import pytest
from server_fixtures import (
    API_KEY,
    fresh_collection,
    ids_by_name,
    live_server,
    photo_variant_bytes,
    png_bytes,
    quadrants,
    solid,
)

from lookalike.api import Collection
from lookalike.server.app import ServerSettings, create_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        os.environ.get("LOOKALIKE_NO_BROWSER") == "1", reason="LOOKALIKE_NO_BROWSER=1 was set"
    ),
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def chromium_path() -> str | None:
    for candidate in (
        os.environ.get("LOOKALIKE_CHROMIUM"),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = fresh_collection(
        tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("browser") / "coll"
    )
    with Collection.open(directory) as coll:
        app = create_app(coll, ServerSettings(api_key=API_KEY, warm_up=False))
        with live_server(app) as url:
            yield url, ids_by_name(coll)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.fail(
            "no chromium binary: run scripts/install.sh --test (or apt-get install chromium, "
            "or set LOOKALIKE_CHROMIUM)"
        )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the app, with every request and browser error recorded."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.requests = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready=yes]")
    yield page
    context.close()


def needs_query(page, kind: str) -> None:
    """Fail at once, with the reason, when the server's engine has no Collection.query."""
    available = page.evaluate(
        "kind => !document.querySelector(`[data-kind=${kind}]`).classList.contains('unavailable')",
        kind,
    )
    if not available:
        pytest.fail(f"{kind} search needs Collection.query, which the engine does not have yet")


def first_names(page, count: int = 3) -> list[str]:
    return page.eval_on_selector_all(
        ".result", f"cards => cards.slice(0, {count}).map(c => c.dataset.name)"
    )


def search_with_file(page, name: str, data: bytes, mime: str) -> None:
    page.set_input_files("#image-input", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.wait_for_selector(".result")


def wait_for_new_results(page, before: list[str], count: int = 3) -> list[str]:
    page.wait_for_function(
        "([before, n]) => { const c = [...document.querySelectorAll('.result')]"
        ".slice(0, n).map(c => c.dataset.name); return c.length && "
        "JSON.stringify(c) !== JSON.stringify(before); }",
        arg=[before, count],
    )
    return first_names(page, count)


def test_upload_a_query_and_see_the_original_first(page, server):
    url, _ = server
    search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    assert first_names(page, 1) == ["chelsea.png"]
    assert page.is_visible("#query-preview")
    page.wait_for_function(  # functions, not bare expressions: the page's CSP forbids eval
        "() => [...document.querySelectorAll('.result img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.hover(".result >> nth=1")
    tooltip = page.locator("#tooltip")
    assert tooltip.is_visible()
    assert "Colour" in tooltip.inner_text() and "Texture" in tooltip.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-results.png"), full_page=True)
    assert not page.errors, page.errors
    outside = [u for u in page.requests if not u.startswith((url, "blob:", "data:"))]
    assert not outside, f"the page loaded something from elsewhere: {outside}"


def test_moving_a_slider_changes_the_order(page):
    query = png_bytes(quadrants("red", "blue", "yellow", "green"))
    location = page.locator("input[data-weight=location]")
    location.focus()
    location.press("Home")  # location weight 0: colour alone cannot tell the quadrants apart
    search_with_file(page, "quad.png", query, "image/png")
    before = first_names(page)
    assert before[:2] == ["quad_rbyg.png", "quad_gybr.png"]
    location.focus()
    location.press("End")  # location weight 1: the permuted quadrants fall back
    after = wait_for_new_results(page, before)
    assert after[0] == "quad_rbyg.png" and "quad_gybr.png" not in after[:2]
    assert page.locator("input[data-weight=location] + output").inner_text() == "1.00"
    assert not page.errors, page.errors


def test_click_a_result_to_search_by_it(page, server):
    _, names = server
    search_with_file(page, "red.png", png_bytes(solid("red")), "image/png")
    target = page.locator(".result[data-name='halves_blue_grey.png']")
    before = first_names(page)
    target.click()
    after = wait_for_new_results(page, before)
    assert after[0] == "halves_blue_grey.png"
    caption = page.inner_text("#query-caption")
    assert f"#{names['halves_blue_grey']}" in caption


def test_errors_are_shown(page):
    page.fill("#url-input", "http://127.0.0.1/private.png")
    page.click("#search-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "non-public" in page.inner_text("#error")


def test_upload_new_images_with_the_key(page, server):
    _, names = server
    page.click("#upload-panel summary")
    image = png_bytes(solid("orange", (40, 30)))
    page.set_input_files(
        "#upload-input", files=[{"name": "new.png", "mimeType": "image/png", "buffer": image}]
    )
    page.click("#upload-button")
    page.wait_for_selector("#error:not([hidden])")
    assert "API key" in page.inner_text("#error")
    page.fill("#api-key", "wrong")
    page.click("#upload-button")
    page.wait_for_selector("#upload-log li.failed")
    assert "not valid" in page.inner_text("#upload-log li.failed")
    page.fill("#api-key", API_KEY)
    page.set_input_files(
        "#upload-input", files=[{"name": "new.png", "mimeType": "image/png", "buffer": image}]
    )
    page.click("#upload-button")
    page.wait_for_selector("#upload-log li.ok")
    assert "added as #" in page.inner_text("#upload-log li.ok")
    page.wait_for_function(
        f"() => document.getElementById('stats').textContent.startsWith('{len(names) + 1} images')"
    )


# -- need Collection.query ------------------------------------------------------------------


def test_draw_a_sketch_and_see_matching_images_first(page):
    needs_query(page, "sketch")
    grid = page.locator("#sketch-grid")
    box = grid.bounding_box()
    cell = box["width"] / 16
    page.click(".swatch[data-term=blue]")
    for row in range(8):  # paint the top half with strokes, like a user would
        y = box["y"] + (row + 0.5) * cell
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 2, y, steps=12)
        page.mouse.up()
    page.click(".swatch[data-term=grey]")
    page.click("#sketch-fill")  # the rest grey
    filled = page.eval_on_selector_all(".sketch-grid .cell.filled", "cells => cells.length")
    assert filled == 256
    page.click("#search-button")
    page.wait_for_selector(".result")
    assert first_names(page, 1) == ["halves_blue_grey.png"]
    assert not page.errors, page.errors


def test_layout_sentence_shows_its_grid(page):
    needs_query(page, "layout")
    page.fill("#layout-input", "top predominantly blue and bottom predominantly grey")
    page.press("#layout-input", "Enter")
    page.wait_for_selector(".result")
    page.wait_for_selector("#layout-result:not([hidden])")
    assert first_names(page, 1) == ["halves_blue_grey.png"]
    cells = page.eval_on_selector_all("#layout-grid .mini", "cells => cells.map(c => c.title)")
    assert len(cells) == 256 and cells[0] == "blue" and cells[-1] == "grey"


def test_a_server_that_keys_reads_asks_for_the_key(browser, tmp_path_factory):
    directory = fresh_collection(
        tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("keyed") / "coll"
    )
    with Collection.open(directory) as coll:
        settings = ServerSettings(api_key=API_KEY, read_key_required=True, warm_up=False)
        with live_server(create_app(coll, settings)) as url:
            context = browser.new_context(viewport={"width": 1200, "height": 800})
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready=no]")
            assert "needs an API key" in page.inner_text("#stats")
            page.fill("#api-key", API_KEY)
            page.press("#api-key", "Enter")
            page.locator("#api-key").blur()  # change fires on commit
            page.wait_for_selector("body[data-ready=yes]")
            search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
            assert first_names(page, 1) == ["chelsea.png"]
            page.wait_for_function(  # thumbnails come through fetch() with the key, as blobs
                "() => { const i = document.querySelector('.result img');"
                " return i && i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }"
            )
            context.close()
