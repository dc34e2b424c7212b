"""The search page in a real browser: Playwright (Python) driving Debian's chromium, at a
desktop size (1440x900) and a phone size (390x844).

`scripts/install.sh --test` installs both, so a missing or broken browser fails these tests
instead of skipping them (a green run must mean the page works); set LOOKALIKE_NO_BROWSER=1
to deselect them knowingly on a machine without chromium. A screenshot of the results page
is written to artifacts/ at the repository root.
"""

from __future__ import annotations

import json
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
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


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
            yield url, ids_by_name(coll), coll


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


def open_page(browser, url: str, viewport: dict[str, int]):
    """A fresh page on the app, with every request, search form and browser error recorded."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.errors = []
    page.requests = []
    page.searches = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("request", lambda request: page.requests.append(request.url))
    page.answers = []  # the answers to searches: what the server says it searched by
    page.on("request", lambda r: page.searches.append(r) if r.url.endswith("/api/search") else None)
    page.on("response", lambda r: page.answers.append(r) if r.url.endswith("/api/search") else None)
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready=yes]")
    return context, page


@pytest.fixture
def page(browser, server):
    context, page = open_page(browser, server[0], DESKTOP)
    yield page
    context.close()


@pytest.fixture
def phone(browser, server):
    context, page = open_page(browser, server[0], PHONE)
    yield page
    context.close()


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


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


def chips(page) -> list[str]:
    return page.eval_on_selector_all(".chip .chip-label", "cs => cs.map(c => c.textContent)")


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


def last_kinds(page) -> list[str]:
    """The query parts the last search sent, as the server read them."""
    return page.answers[-1].json()["query"]["kinds"]


def wait_for_searches(page, count: int) -> None:
    page.wait_for_function("() => !document.body.classList.contains('busy')", polling=50)
    deadline = 50
    while len(page.answers) < count and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    page.wait_for_function("() => !document.body.classList.contains('busy')")


def test_upload_a_query_and_see_the_original_first(page, server):
    url = server[0]
    search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    assert first_names(page, 1) == ["chelsea.png"]
    assert page.is_visible("#query-preview")
    assert chips(page) == ["Image: cat.jpg"]
    page.wait_for_function(  # functions, not bare expressions: the page's CSP forbids eval
        "() => [...document.querySelectorAll('.result img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.hover(".result-open >> nth=1")
    tooltip = page.locator("#tooltip")
    assert tooltip.is_visible()
    assert "Colour" in tooltip.inner_text() and "Texture" in tooltip.inner_text()
    shoot(page, "browser-results.png")
    assert not page.errors, page.errors
    outside = [u for u in page.requests if not u.startswith((url, "blob:", "data:"))]
    assert not outside, f"the page loaded something from elsewhere: {outside}"


def test_windows_switch_goes_with_a_new_image_and_reset_clears_it(page, server):
    """The page's switch for query windows (REST `windows`, CLI `search --windows`): sent
    with an uploaded image, searched again when toggled, cleared by Reset."""
    _, names, _ = server
    search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    assert page.answers[-1].json()["query"]["windows"] is False
    searched = len(page.answers)
    page.check("#windows-check")  # toggling it searches again, with windows
    wait_for_searches(page, searched + 1)
    answer = page.answers[-1].json()
    assert answer["query"]["windows"] is True
    assert answer["results"][0]["id"] == names["chelsea"]
    page.click("#reset-button")
    assert not page.is_checked("#windows-check")
    assert not page.errors, page.errors


def test_one_number_per_result_on_one_scale(page):
    page.fill("#similarity-input", "90")  # likely matches: at least 90% similar
    search_with_file(page, "red.png", png_bytes(solid("red", (80, 60))), "image/png")
    cards = page.eval_on_selector_all(
        ".result",
        "cs => cs.map(c => [c.querySelector('.score-line').innerText, c.dataset.similarity])",
    )
    for text, similarity in cards:
        numbers = [word for word in text.split() if any(ch.isdigit() for ch in word)]
        assert numbers == [f"{round(float(similarity))}%"], text  # no second number
    likely = page.eval_on_selector_all("[data-group=likely] .result", "cs => cs.length")
    others = page.eval_on_selector_all("[data-group=others] .result", "cs => cs.length")
    assert likely >= 1 and others >= 1
    shares = page.eval_on_selector_all(".slider-value", "os => os.map(o => o.textContent)")
    assert all(s.endswith("%") for s in shares)
    assert abs(sum(int(s[:-1]) for s in shares) - 100) <= len(shares)
    page.hover("[data-group=others] .result-open >> nth=0")
    tip = page.inner_text("#tooltip")
    assert "% similar" in tip and "score" not in tip
    cards = page.eval_on_selector_all(".result", "cs => cs.length")
    assert page.eval_on_selector_all(".result .feedback.more", "bs => bs.length") == cards
    assert page.eval_on_selector_all(".result .feedback.less", "bs => bs.length") == cards


def test_more_and_less_like_this_change_the_results(page):
    """The engine says it takes feedback (/api/info), so each card has the two buttons; they
    send `more` / `less` id lists, show as chips, and move the marked image up or out."""
    search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    names = page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    wanted = names[5]
    count = len(page.answers)
    page.click(f".result[data-name='{wanted}'] .feedback.more")
    wait_for_searches(page, count + 1)
    wanted_id = int(page.get_attribute(f".result[data-name='{wanted}']", "data-id"))
    feedback = page.answers[-1].json()["explain"]["feedback"]  # what the server read
    assert feedback["more"] == [wanted_id] and not feedback.get("less")
    assert chips(page) == ["Image: cat.jpg", f"More like: {wanted}"]
    assert last_kinds(page) == ["image", "feedback"]
    after = page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    assert after.index(wanted) < names.index(wanted), (names, after)
    assert page.get_attribute(f".result[data-name='{wanted}'] .feedback.more", "aria-pressed") == (
        "true"
    )
    unwanted = next(name for name in after[1:] if name != wanted)
    unwanted_id = int(page.get_attribute(f".result[data-name='{unwanted}']", "data-id"))
    count = len(page.answers)
    page.click(f".result[data-name='{unwanted}'] .feedback.less")
    wait_for_searches(page, count + 1)
    feedback = page.answers[-1].json()["explain"]["feedback"]
    assert feedback["more"] == [wanted_id] and feedback["less"] == [unwanted_id]
    assert f"Less like: {unwanted}" in chips(page)
    later = page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    assert unwanted not in later or later.index(unwanted) > after.index(unwanted), (after, later)
    assert not page.errors, page.errors


def test_moving_a_slider_changes_the_order(page):
    query = png_bytes(quadrants("red", "blue", "yellow", "green", size=100))  # not the stored file
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
    assert page.locator("#weight-location + output").inner_text().endswith("%")
    assert not page.errors, page.errors


LAYOUT = "top predominantly blue and bottom predominantly grey"


def test_chips_and_a_new_image_replaces_the_image_part(page):
    needs_query(page, "layout")  # layout, not text: the sentence model takes 20 s to load
    page.fill("#layout-input", LAYOUT)
    page.press("#layout-input", "Enter")
    page.wait_for_selector(".result")
    assert chips(page) == [f"Layout: {LAYOUT}"]
    count = len(page.answers)
    page.set_input_files(
        "#image-input",
        files=[{"name": "coffee.png", "mimeType": "image/png",
                "buffer": photo_variant_bytes("coffee")}],
    )  # fmt: skip
    wait_for_searches(page, count + 1)
    assert chips(page) == ["Image: coffee.png"]  # the old layout part does not stay in silently
    assert page.input_value("#layout-input") == ""
    assert last_kinds(page) == ["image"]
    count = len(page.answers)
    page.set_input_files(
        "#image-input",
        files=[{"name": "rocket.jpg", "mimeType": "image/jpeg",
                "buffer": photo_variant_bytes("rocket")}],
    )  # fmt: skip
    wait_for_searches(page, count + 1)
    assert chips(page) == ["Image: rocket.jpg"]
    assert first_names(page, 1) == ["rocket.png"]
    page.check("#refine")  # refine: a new image joins the other parts
    page.fill("#layout-input", LAYOUT)
    page.press("#layout-input", "Enter")
    wait_for_searches(page, count + 2)
    page.set_input_files(
        "#image-input",
        files=[{"name": "cat.jpg", "mimeType": "image/jpeg",
                "buffer": photo_variant_bytes("chelsea")}],
    )  # fmt: skip
    wait_for_searches(page, count + 3)
    assert chips(page) == ["Image: cat.jpg", f"Layout: {LAYOUT}"]
    assert last_kinds(page) == ["image", "layout"]
    shoot(page, "browser-chips.png")
    page.click(".chip[data-part=layout] .chip-remove")  # removing a part searches without it
    wait_for_searches(page, count + 4)
    assert chips(page) == ["Image: cat.jpg"]
    assert last_kinds(page) == ["image"]
    assert first_names(page, 1) == ["chelsea.png"]
    assert not page.errors, page.errors


def test_sketch_strokes_search_by_themselves_debounced(page):
    needs_query(page, "sketch")
    grid = page.locator("#sketch-grid")
    box = grid.bounding_box()
    cell = box["width"] / 16
    page.click(".swatch[data-term=blue]")
    for row in range(8):  # paint the top half with quick strokes, like a user would
        y = box["y"] + (row + 0.5) * cell
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] - 2, y, steps=6)
        page.mouse.up()
    page.click(".swatch[data-term=grey]")
    page.click("#sketch-fill")  # the rest grey
    filled = page.eval_on_selector_all(".sketch-grid .cell.filled", "cells => cells.length")
    assert filled == 256
    page.wait_for_selector(".result")  # no Search button pressed
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    assert 1 <= len(page.searches) <= 3, len(page.searches)  # 9 strokes, debounced
    assert first_names(page, 1) == ["halves_blue_grey.png"]
    assert chips(page) == ["Sketch: 256 cells"]
    assert not page.errors, page.errors


def test_sketch_grid_and_palette_by_keyboard(page):
    needs_query(page, "sketch")
    page.focus("#text-input")
    stops = []
    for _ in range(12):  # tab through the page: one stop for the grid, one for the palette
        page.keyboard.press("Tab")
        stops.append(page.evaluate(
            "() => { const a = document.activeElement;"
            " return a.classList.contains('cell') ? 'cell' : a.classList.contains('swatch')"
            " ? 'swatch' : a.id || a.tagName; }"
        ))  # fmt: skip
        if stops[-1] == "sketch-fill":
            break
    assert stops.count("cell") == 1 and stops.count("swatch") == 1, stops
    assert stops.index("cell") + 1 == stops.index("swatch")
    page.keyboard.press("Shift+Tab")  # back on the palette
    before = page.get_attribute(".swatch[aria-checked=true]", "data-term")
    page.keyboard.press("ArrowDown")  # arrows move the choice inside the palette
    chosen = page.get_attribute(".swatch[aria-checked=true]", "data-term")
    assert chosen != before
    assert page.evaluate("() => document.activeElement.dataset.term") == chosen
    page.keyboard.press("Shift+Tab")  # back on the grid, at the cell it had
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')").startswith(
        "row 1, column 1"
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")
    label = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
    assert label == f"row 2, column 2: {chosen}"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    filled = page.eval_on_selector_all(
        ".cell.filled", "cs => cs.map(c => [c.dataset.row, c.dataset.col])"
    )
    assert filled == [["1", "1"], ["1", "2"]]
    page.wait_for_selector(".result")  # painting by keyboard searches too
    assert chips(page) == ["Sketch: 2 cells"]


def test_viewer_opens_walks_and_closes_by_keyboard(page, server):
    _, names, _ = server
    page.fill("#similarity-input", "80")
    search_with_file(page, "red.png", png_bytes(solid("red", (70, 50))), "image/png")
    order = page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    page.click(".result-open >> nth=1")
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#viewer-title") == order[1]
    page.wait_for_function(
        "() => document.getElementById('viewer-facts').innerText.includes('tags')"
    )
    facts = page.inner_text("#viewer-facts")
    assert "index key" in facts and "category" in facts and "sha256" in facts
    page.wait_for_function(
        "() => { const i = document.getElementById('viewer-image');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert page.get_attribute("#viewer-original", "href").endswith("/original")
    shoot(page, "browser-viewer.png")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(
        f"() => document.getElementById('viewer-title').textContent === {json.dumps(order[2])}"
    )
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        f"() => document.getElementById('viewer-title').textContent === {json.dumps(order[0])}"
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer:not([open])", state="attached")
    # the dialog's close event comes as a task after [open] goes: the browser first gives
    # focus back to the card that opened it, then the page moves it to the card last shown
    page.wait_for_function(
        "() => { const r = document.activeElement.closest('.result');"
        f" return r && r.dataset.name === {json.dumps(order[0])}; }}",
        timeout=5000,
    )
    # "Find similar" searches by the stored image, which is left out of its own results
    page.click(".result-open >> nth=1")
    page.wait_for_selector("#viewer[open]")
    page.click("#viewer-similar")
    target = order[1]
    page.wait_for_function(
        f"() => document.querySelector('.chip-label').textContent.includes({json.dumps(target)})"
    )
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    wait_for_new_results(page, order[:3])
    assert target not in page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    assert f"#{names[Path(target).stem]}" in chips(page)[0]
    assert not page.errors, page.errors


def test_an_upload_of_a_stored_file_is_not_its_own_result(page, server):
    _, names, coll = server
    stored = Path(coll.get(names["halves_blue_grey"]).path).read_bytes()
    search_with_file(page, "same.png", stored, "image/png")
    shown = page.eval_on_selector_all(".result", "cs => cs.map(c => c.dataset.name)")
    assert "halves_blue_grey.png" not in shown
    assert "left out" in page.inner_text("#status")


def test_errors_appear_at_their_field_and_old_results_are_marked(page):
    search_with_file(page, "red.png", png_bytes(solid("red")), "image/png")
    page.fill("#where-input", "price >")
    page.press("#where-input", "Enter")
    page.wait_for_selector("#where-error:not([hidden])")
    assert page.get_attribute("#where-input", "aria-invalid") == "true"
    assert page.is_hidden("#error")
    assert page.is_visible("#stale-note")
    assert "stale" in page.get_attribute("#results", "class")
    page.fill("#where-input", "price > 5")
    page.press("#where-input", "Enter")
    page.wait_for_selector("#stale-note", state="hidden")
    assert page.is_hidden("#where-error")
    page.click(".chip[data-part=image] .chip-remove")
    page.fill("#url-input", "http://127.0.0.1/private.png")
    page.click("#search-button")
    page.wait_for_selector("#url-error:not([hidden])")
    assert "non-public" in page.inner_text("#url-error")


def test_phone_query_first_results_below_drawer_and_labels(phone):
    page = phone
    assert page.is_hidden("#sketch-grid")  # advanced controls wait in the drawer
    search_with_file(page, "cat.jpg", photo_variant_bytes("chelsea"), "image/jpeg")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.result img')].slice(0, 2)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert page.is_visible("#windows-check")  # with the query, not in the drawer
    query_top = page.locator(".query-card").bounding_box()["y"]
    first = page.locator(".result >> nth=0").bounding_box()
    assert query_top < first["y"] < PHONE["height"], first  # results on the first screen
    overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.body.scrollWidth]"
    )
    assert max(overflow) <= PHONE["width"], overflow
    shoot(page, "browser-phone.png")
    page.click("#drawer-toggle")
    page.wait_for_selector("#sketch-grid", state="visible")
    assert page.get_attribute("#drawer-toggle", "aria-expanded") == "true"
    assert max(page.evaluate("() => [document.documentElement.scrollWidth]")) <= PHONE["width"]
    shoot(page, "browser-phone-drawer.png")
    unlabelled = page.evaluate(
        "() => [...document.querySelectorAll('input, textarea, select')]"
        ".filter(e => e.type !== 'file' || e.id !== 'image-input')"
        ".filter(e => !(e.labels && e.labels.length))"
        ".map(e => e.id || e.outerHTML)"
    )
    assert not unlabelled, unlabelled
    page.click("#drawer-close")
    page.wait_for_selector("#sketch-grid", state="hidden")
    page.click(".result-open >> nth=0")
    page.wait_for_selector("#viewer[open]")
    assert max(page.evaluate("() => [document.documentElement.scrollWidth]")) <= PHONE["width"]
    shoot(page, "browser-phone-viewer.png")
    page.keyboard.press("Escape")
    assert not page.errors, page.errors


def test_upload_new_images_with_the_key(page, server):
    _, names, _ = server
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


def test_layout_sentence_shows_its_grid(page):
    needs_query(page, "layout")
    page.fill("#layout-input", "top predominantly blue and bottom predominantly grey")
    page.press("#layout-input", "Enter")
    page.wait_for_selector(".result")
    page.wait_for_selector("#layout-result:not([hidden])")
    assert first_names(page, 1) == ["halves_blue_grey.png"]
    assert chips(page) == ["Layout: top predominantly blue and bottom predominantly grey"]
    cells = page.eval_on_selector_all("#layout-grid .mini", "cells => cells.map(c => c.title)")
    assert len(cells) == 256 and cells[0] == "blue" and cells[-1] == "grey"
    page.fill("#layout-input", "top predominantly blue and bottom predominantly xyzzy")
    page.press("#layout-input", "Enter")
    page.wait_for_selector("#layout-error:not([hidden])")
    assert "xyzzy" in page.inner_text("#layout-error") and page.is_visible("#stale-note")


def test_a_server_that_keys_reads_asks_for_the_key(browser, tmp_path_factory):
    directory = fresh_collection(
        tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("keyed") / "coll"
    )
    with Collection.open(directory) as coll:
        settings = ServerSettings(api_key=API_KEY, read_key_required=True, warm_up=False)
        with live_server(create_app(coll, settings)) as url:
            context = browser.new_context(viewport=DESKTOP)
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
