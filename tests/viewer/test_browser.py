"""The viewer in a real browser: headless Chromium (Debian package) driven by Playwright.

Selects a caption span by dragging over two words and checks that the image overlay changes (and turns
red where the span interacts positively); draws a box on the image and checks that the caption colours
change and equal the Python `Explanation.text_scores` of the same box; switches method; opens the HTML
export from a file with all network requests refused. Leaves ``test-artifacts/viewer.png``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from viewer_data import BLUE, CIRCLE, RED, SQUARE, make_text_text

from dualex.explanation import Explanation
from dualex.viewer.export import export_html
from dualex.viewer.server import make_server

CHROMIUM = os.environ.get("DUALEX_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() or shutil.which("chromium")),
                       reason=f"headless Chromium not installed at {CHROMIUM} (Debian: apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (extra [viewer]) is not installed")
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=ARGS, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def serving(roots):
    """The viewer's server on a free local port, in a background thread, for the block's duration."""
    srv = make_server(roots, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def open_viewer(browser, url: str, width: int, height: int):
    """A new page at ``url``, ready to use, and the list its page errors are collected in."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    return page, errors


@pytest.fixture
def server(run_dir):
    with serving(run_dir) as srv:
        yield srv


# JS snippets: the overlay's pixel at each patch centre, the caption's word colours, the caption's values
PATCH_PIXELS = """() => {
  const c = document.getElementById('overlay'); const g = c.getContext('2d');
  const out = [];
  for (let r = 0; r < 4; r++) for (let k = 0; k < 4; k++) {
    const x = Math.floor((k + 0.5) * c.width / 4), y = Math.floor((r + 0.5) * c.height / 4);
    out.push(Array.from(g.getImageData(x, y, 1, 1).data));
  }
  return out;
}"""
WORD_COLOURS = """() => Array.from(document.querySelectorAll('#caption .tok')).map(
  e => [e.textContent, getComputedStyle(e).backgroundColor, Number(e.dataset.i), Number(e.dataset.value)])"""


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def _centre(page, selector: str) -> tuple[float, float]:
    b = page.locator(selector).bounding_box()
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2


def test_span_box_and_method_switch_in_chromium(browser, server, run_dir):
    page, errors = open_viewer(browser, server.url, 1100, 760)
    first = page.get_attribute("body", "data-ready")
    assert first == "explanations/fixlip/item0.safetensors"  # methods of a pair are sorted by name
    page.click("#methods button[data-method='ij']")
    page.wait_for_selector("body[data-ready='explanations/ij/item0.safetensors']")
    assert "0.42" in page.text_content("#stats")  # score
    assert "completeness error" in page.text_content("#stats")

    # ---- span: drag from "red" to "circle"; the overlay changes and is red at the top-left patch only
    before = page.evaluate(PATCH_PIXELS)
    x0, y0 = _centre(page, f"#caption .tok[data-i='{RED}']")
    x1, y1 = _centre(page, f"#caption .tok[data-i='{CIRCLE}']")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    selected = page.eval_on_selector_all("#caption .tok.sel", "els => els.map(e => e.textContent)")
    assert selected == ["red", "circle"]
    after = page.evaluate(PATCH_PIXELS)
    assert after != before
    top_left, bottom_right = after[0], after[15]
    assert top_left[0] > top_left[2] and top_left[3] > 100  # red, opaque
    assert bottom_right[3] < 10  # "red circle" has (almost) nothing to do with the blue square
    assert before[15][3] > 100  # ... whereas the whole caption did

    # ---- box: bottom-right quarter of the image; caption colours change, "blue"/"square" turn red
    words_before = page.evaluate(WORD_COLOURS)
    box = page.locator("#boxlayer").bounding_box()
    page.mouse.move(box["x"] + 0.70 * box["width"], box["y"] + 0.70 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.98 * box["width"], box["y"] + 0.98 * box["height"], steps=5)
    page.mouse.up()
    words_after = page.evaluate(WORD_COLOURS)
    assert [w[1] for w in words_after] != [w[1] for w in words_before]
    colours = {i: _rgb(c) for _, c, i, _ in words_after}
    for i in (BLUE, SQUARE):
        r, _, b = colours[i]
        assert r > b + 40, f"token {i} should be red for the bottom-right box, got {colours[i]}"
    r, _, b = colours[RED]
    assert abs(r - b) < 20, f"'red' should be neutral for the bottom-right box, got {colours[RED]}"

    # the page's numbers equal Python's text_scores for the same box (mapped back to original pixels)
    state_box = page.evaluate("() => window.dualexViewer.state.box")
    ex = Explanation.load(run_dir / "explanations" / "ij" / "item0.safetensors")
    tf = ex.image_transform
    original = ((state_box[0] + tf.left) / tf.scale_x, (state_box[1] + tf.top) / tf.scale_y,
                (state_box[2] + tf.left) / tf.scale_x, (state_box[3] + tf.top) / tf.scale_y)
    expected = ex.text_scores(original)
    for _, _, i, value in words_after:
        assert value == pytest.approx(float(expected[i]), rel=1e-4, abs=1e-6)
    assert "box" in page.text_content("#caption-legend")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)

    # ---- method switch keeps the selection and shows the other method's numbers
    page.click("#methods button[data-method='fixlip']")
    page.wait_for_selector("body[data-ready='explanations/fixlip/item0.safetensors']")
    assert page.eval_on_selector_all("#caption .tok.sel", "els => els.length") == 2
    flipped = page.evaluate(PATCH_PIXELS)
    assert flipped[0][2] > flipped[0][0]  # fixlip's file has the signs flipped: blue now
    assert page.get_attribute("#methods button[data-method='fixlip']", "aria-checked") == "true"

    # ---- another pair
    page.select_option("#pair", index=1)
    page.wait_for_selector("body[data-ready='explanations/ij/item1.safetensors']")
    shown = page.eval_on_selector_all("#caption .tok", "els => els.map(e => e.textContent)")
    assert shown == ["two", "blue", "squares"]
    assert not errors, errors
    page.close()


def test_html_export_works_offline(browser, run_dir, tmp_path):
    out = export_html(run_dir, tmp_path / "page.html")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    requests: list[str] = []

    def refuse(route):
        requests.append(route.request.url)
        if route.request.url.startswith("file://"):
            return route.continue_()
        return route.abort()

    page.route("**/*", refuse)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    before = page.evaluate(PATCH_PIXELS)
    page.click(f"#caption .tok[data-i='{SQUARE}']")
    assert page.evaluate(PATCH_PIXELS) != before
    assert [u for u in requests if not u.startswith("file://")] == []
    assert not errors, errors
    page.close()


def test_text_text_explanation_colours_both_sentences(browser, tmp_path):
    make_text_text().save(tmp_path / "pair.safetensors")
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    page.goto(export_html(tmp_path, tmp_path / "tt.html").as_uri())
    page.wait_for_selector("body[data-ready]", timeout=10_000)
    assert page.is_hidden("#stage") and page.is_visible("#second")
    second = "els => els.map(e => [e.textContent, getComputedStyle(e).backgroundColor])"
    page.click(f"#caption .tok[data-i='{RED}']")
    colours = dict(page.eval_on_selector_all("#second .tok", second))
    r, _, b = _rgb(colours["cat"])
    assert r > b + 40  # "red" × "cat" is positive
    page.click("#second .tok[data-i='5']")  # "mat"
    words = {t: _rgb(c) for t, c, _, _ in page.evaluate(WORD_COLOURS)}
    r, _, b = words["blue"]
    assert b > r + 40  # "blue" × "mat" is negative
    page.close()


OVERLAY_ALPHA = """(id) => {
  const c = document.getElementById(id); const g = c.getContext('2d');
  const x = Math.floor(0.5 * c.width / 4), y = Math.floor(0.5 * c.height / 4);
  return g.getImageData(x, y, 1, 1).data[3];
}"""
HATCHED = """(id) => {  // dark, opaque pixels in the cell of the bottom-right patch (15) of a 4 x 4 grid
  const c = document.getElementById(id); const g = c.getContext('2d');
  const w = Math.floor(c.width / 4), h = Math.floor(c.height / 4);
  const d = g.getImageData(3 * w, 3 * h, w, h).data; let n = 0;
  for (let k = 0; k < d.length; k += 4) if (d[k + 3] > 100 && d[k] < 90 && d[k + 1] < 90 && d[k + 2] < 90) n++;
  return n;
}"""


def test_compare_two_models_side_by_side_with_one_colour_scale(browser, tmp_path):
    """Two runs (models) of the same item meet in one pair; compare mode draws both with one scale, and
    terms whose interval covers 0 are hatched."""
    import torch
    from viewer_data import make_explanation, structured_cross

    weak = make_explanation(model="base")
    se = torch.full((10, 16), 1e-4)
    se[:, 15] = 10.0  # the bottom-right patch: every interval covers 0
    strong = make_explanation(model="tuned", method="ij", cross=2 * structured_cross(), stderr={"cross": se})
    weak.save(tmp_path / "runs" / "base" / "explanations" / "ij" / "item0.safetensors")
    other = strong.image.clone()
    other[0, 0] = 0  # different model-input bytes: grouped by run item id, not by image hash
    strong.image = other
    strong.save(tmp_path / "runs" / "tuned" / "explanations" / "ij" / "item0.safetensors")
    with serving(tmp_path / "runs") as srv:
        page, errors = open_viewer(browser, srv.url, 1500, 800)
        assert page.locator("#pair option").count() == 1 and page.is_visible("#compare-pick")
        first = page.get_attribute("body", "data-ready")
        assert first == "base/explanations/ij/item0.safetensors"
        own_scale = page.evaluate(OVERLAY_ALPHA, "overlay")
        page.select_option("#compare", "tuned/explanations/ij/item0.safetensors")
        page.wait_for_selector("body[data-compared='tuned/explanations/ij/item0.safetensors']")
        assert page.is_visible("#twin") and "shared" in page.text_content("#image-legend")
        weak_alpha, strong_alpha = page.evaluate(OVERLAY_ALPHA, "overlay"), page.evaluate(OVERLAY_ALPHA, "overlay2")
        assert strong_alpha > weak_alpha + 40 and own_scale > weak_alpha + 40  # one scale: the weaker map fades
        # the same word colours up to the factor 2: 'red' is stronger on the right
        words = "els => els.map(e => Number(e.dataset.value))"
        v1 = page.eval_on_selector_all("#caption .tok", words)
        v2 = page.eval_on_selector_all("#caption2 .tok", words)
        assert v2 == pytest.approx([2 * v for v in v1], rel=1e-4, abs=1e-6)
        # hatching: the second explanation's bottom-right patch (interval covers 0), not the first's
        assert page.evaluate(HATCHED, "overlay2") > 20 and page.evaluate(HATCHED, "overlay") == 0
        # caption over the whole image: every word's sum includes the uncertain patch
        count = "els => els.length"
        assert page.eval_on_selector_all("#caption2 .tok.uncertain", count) == 8
        assert page.eval_on_selector_all("#caption .tok.uncertain", count) == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer_compare.png"), full_page=True)
        page.select_option("#compare", "")
        page.wait_for_selector("#twin", state="hidden")
        assert not errors, errors
        page.close()


def test_compare_across_two_served_roots(browser, tmp_path):
    """`dualex serve A B` with runs in unrelated folders: their files of one item meet in one pair, the
    method buttons name the roots, and compare mode draws both."""
    from viewer_data import make_explanation, structured_cross

    make_explanation().save(tmp_path / "x" / "run" / "explanations" / "ij" / "item0.safetensors")
    make_explanation(cross=2 * structured_cross()).save(
        tmp_path / "y" / "deep" / "run" / "explanations" / "ij" / "item0.safetensors")
    with serving([tmp_path / "x" / "run", tmp_path / "y" / "deep" / "run"]) as srv:
        page, errors = open_viewer(browser, srv.url, 1500, 800)
        # entries are sorted by method, model, then file: the root labels decide here
        assert page.get_attribute("body", "data-ready") == "deep-run/explanations/ij/item0.safetensors"
        assert page.eval_on_selector_all("#methods button", "els => els.map(e => e.textContent)") == [
            "ij · deep-run", "ij · x-run"]
        page.select_option("#compare", "x-run/explanations/ij/item0.safetensors")
        page.wait_for_selector("body[data-compared='x-run/explanations/ij/item0.safetensors']")
        assert page.is_visible("#twin")
        words = "els => els.map(e => Number(e.dataset.value))"
        v1 = page.eval_on_selector_all("#caption .tok", words)
        v2 = page.eval_on_selector_all("#caption2 .tok", words)
        assert v1 == pytest.approx([2 * v for v in v2], rel=1e-4, abs=1e-6)
        assert not errors, errors
        page.close()
