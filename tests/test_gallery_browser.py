"""Galleries in a real browser: every page loads, every image decodes, every link resolves, nothing is blank.

Headless Chromium through Selenium with the system chromedriver (no driver downloads).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image, ImageStat

from browser_support import BROWSER_MARKS, chromium_driver
from gallery_models import HOSTILE, TinyNet

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=1280)


@pytest.fixture(scope="module")
def mnist_gallery(tmp_path_factory, data_dir) -> Path:
    from vision_interp.cli import main

    out = tmp_path_factory.mktemp("browser") / "mnist"
    assert main(["gallery", "--model", "mnist_cnn", "--layers", "conv1,logits", "--out", str(out), "--steps", "2", "--batch", "8",
                 "--diverse", "2", "--examples", "3", "--examples-limit", "200", "--connections", "3",
                 "--data-dir", str(data_dir), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def hostile_gallery(tmp_path_factory) -> Path:
    from vision_interp.gallery import make_gallery

    out = tmp_path_factory.mktemp("browser") / "tiny"
    make_gallery(TinyNet(), ["conv", "evil"], out, steps=2, batch=5, diverse=0, negative=False, connections=3,
                 dataset=None, progress=False, model_name=f"tiny {HOSTILE}")
    return out


def _check_page(driver, root: Path, page: Path) -> set[Path]:
    """Load one page; assert images decoded, no console errors, no injected script; return linked files."""
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);")
    assert images, f"{page} shows no images"
    broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"{page}: images not loaded: {broken[:5]}"
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"{page}: console errors {errors[:3]}"
    scripts = driver.execute_script("return document.scripts.length")
    assert scripts == (0 if page.name == "index.html" else 1), f"{page}: unexpected <script> elements"  # filter / pager
    # readable at 1280 px: nothing wider than the window, no text smaller than 11 px
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 1280, f"{page}: horizontal scrolling at 1280 px"
    tiny = driver.execute_script(
        "return Array.from(document.querySelectorAll('body *')).filter(e => e.childNodes.length && "
        "Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim()) && "
        "parseFloat(getComputedStyle(e).fontSize) < 11).map(e => e.tagName + ':' + e.textContent.slice(0, 20));")
    assert not tiny, f"{page}: text below 11 px: {tiny[:5]}"
    linked = set()
    for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"):
        url = urlparse(href)
        assert url.scheme == "file", f"{page}: external link {href}"
        target = Path(unquote(url.path)).resolve()
        assert target.is_file(), f"{page}: broken link {href}"
        assert root.resolve() in target.parents, f"{page}: link leaves the gallery: {href}"
        linked.add(target)
    return linked


def _check_site(driver, root: Path) -> None:
    pages = sorted(root.rglob("*.html"))
    m = json.loads((root / "manifest.json").read_text())
    assert len(pages) == 1 + len(m["layers"]) + len(m["units"])
    reachable = set()
    for page in pages:
        reachable |= _check_page(driver, root, page)
    assert {p.resolve() for p in pages} <= reachable | {(root / "index.html").resolve()}, "some pages are not linked from anywhere"


def _assert_not_blank(png: bytes) -> None:
    img = Image.open(io.BytesIO(png)).convert("L")
    stat = ImageStat.Stat(img)
    assert stat.stddev[0] > 10, "screenshot is (nearly) uniform"
    assert len(img.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_mnist_gallery_in_browser(driver, mnist_gallery):
    _check_site(driver, mnist_gallery)
    driver.get((mnist_gallery / "units" / "conv1" / "3.html").as_uri())
    _assert_not_blank(driver.get_screenshot_as_png())
    rendering = driver.execute_script("return getComputedStyle(document.querySelector('img.big')).imageRendering")
    assert rendering == "pixelated"  # 28 px MNIST pictures are enlarged with crisp pixels
    n_examples = driver.execute_script("return document.querySelectorAll('img.small').length")
    assert n_examples == 6  # receptive-field crops of the 3 top and the 3 bottom examples (each links to its image)
    assert driver.execute_script("return document.querySelectorAll('svg').length") == 2  # activation + class histograms
    driver.get((mnist_gallery / "index.html").as_uri())
    _assert_not_blank(driver.get_screenshot_as_png())
    assert "conv1" in driver.page_source and "logits" in driver.page_source


def test_committed_mnist_gallery_in_browser(driver):
    root = Path(__file__).resolve().parents[1] / "galleries" / "mnist_cnn"
    # every page loads, every image decodes, links resolve (the report link leaves the gallery: checked by existence)
    pages = sorted(root.rglob("*.html"))
    m = json.loads((root / "manifest.json").read_text())
    assert len(pages) == 1 + len(m["layers"]) + len(m["units"])
    for page in pages:
        driver.get(page.as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);")
        assert images and all(ok for _, ok in images), f"{page}: broken images {[s for s, ok in images if not ok][:5]}"
        for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"):
            url = urlparse(href)
            assert url.scheme == "file", f"{page}: external link {href}"
            target = Path(unquote(url.path)).resolve()
            assert target.is_file() or target.name == "report.html", f"{page}: broken link {href}"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 1280


def test_layer_filter_by_unit_number_and_label_text(driver, mnist_gallery):
    from selenium.webdriver.common.by import By

    driver.get((mnist_gallery / "layers" / "logits.html").as_uri())
    box = driver.find_element(By.ID, "unit-filter")

    def visible() -> list[int]:
        return [int(c.get_attribute("data-channel")) for c in driver.find_elements(By.CSS_SELECTOR, ".units .card") if c.is_displayed()]

    assert visible() == list(range(10))
    box.send_keys("3")
    assert visible() == [3]
    box.clear()
    box.send_keys("0-2,7")
    assert visible() == [0, 1, 2, 7]
    assert driver.find_element(By.ID, "unit-count").text == "4 of 10 units"
    box.clear()
    box.send_keys("class 7")  # label text (logit units are labelled with their class)
    assert visible() == [7]
    box.clear()
    box.send_keys("no such label")
    assert visible() == []


def test_keyboard_navigation(driver, mnist_gallery):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get((mnist_gallery / "units" / "conv1" / "3.html").as_uri())
    ActionChains(driver).send_keys(Keys.ARROW_RIGHT).perform()  # → next unit
    assert driver.current_url.endswith("/units/conv1/4.html")
    ActionChains(driver).send_keys(Keys.ARROW_LEFT).perform()
    assert driver.current_url.endswith("/units/conv1/3.html")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the first Tab reaches the skip link, visibly
    active = driver.switch_to.active_element
    assert active.text == "Skip to content" and active.is_displayed()
    active.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("class") == "brand"
    # Tab through the page and press Enter on the layer link: keyboard alone reaches every link
    for _ in range(60):
        el = driver.switch_to.active_element
        if el.tag_name == "a" and el.text == "all units of conv1":
            break
        el.send_keys(Keys.TAB)
    el.send_keys(Keys.ENTER)
    assert driver.current_url.endswith("/layers/conv1.html")
    driver.find_element(By.ID, "unit-filter").send_keys("5")
    driver.switch_to.active_element.send_keys(Keys.TAB)
    el = driver.switch_to.active_element
    assert el.get_attribute("data-channel") == "5"  # hidden cards are skipped by Tab
    outline = driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", el)
    assert outline != "none"  # a visible focus ring
    el.send_keys(Keys.ENTER)
    assert driver.current_url.endswith("/units/conv1/5.html")


def test_hostile_names_render_as_text(driver, hostile_gallery):
    _check_site(driver, hostile_gallery)
    m = json.loads((hostile_gallery / "manifest.json").read_text())
    evil = next(l for l in m["layers"] if l["name"] == "evil")
    driver.get((hostile_gallery / evil["page"]).as_uri())
    from selenium.webdriver.common.by import By

    assert driver.find_element(By.TAG_NAME, "h1").text == "evil"
    assert HOSTILE in driver.find_element(By.CSS_SELECTOR, "p.sub").text  # the module path, shown literally
    driver.get((hostile_gallery / "index.html").as_uri())
    assert driver.find_element(By.TAG_NAME, "h1").text == f"tiny {HOSTILE}"
    _assert_not_blank(driver.get_screenshot_as_png())
