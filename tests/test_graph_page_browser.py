"""The attribution-graph page: drawn by the vendored d3 in headless Chromium (nodes, sign-coloured edges,
cards on click and keyboard, arrow-key moves, highlighted edges, zoom, no overflow, no network), its
fallback without d3, and the vendored file itself (the sha256 its README records)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser_support import BROWSER_MARKS, chromium_driver

from vision_interp import features
from vision_interp.features.graph_page import D3_FILE, STATIC_FILES, d3_source, write_d3, write_graph_page
from vision_interp.features.tc_graph_io import graph_json

ASSETS = Path(features.__file__).resolve().parents[1] / "assets"
RED, BLUE = "#b2182b", "#2166ac"
MAX_EDGES = 400  # the page's default


def browser(test):
    for mark in BROWSER_MARKS:
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=1280, height=900)


@pytest.fixture(scope="module")
def page(tmp_path_factory, mnist_test):
    tcs = [features.load_transcoder(n) for n in ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")]
    from vision_interp.zoo import mnist_cnn

    g = features.GraphBuilder(mnist_cnn(), tcs).build(mnist_test.images[0], int(mnist_test.labels[0]))
    doc = {"source": "MNIST test[0]", "target": g.target, **graph_json(g, 0.8)}
    out = tmp_path_factory.mktemp("graphpage")
    links = {}
    for n in doc["nodes"]:
        if n["kind"] == "feature":
            unit = f"{n['layer']}:{n['feature']}"
            target = out / "gallery" / f"{unit.replace('/', '_').replace(':', '-')}.html"
            target.parent.mkdir(exist_ok=True)
            target.write_text("<!doctype html><title>unit</title>")
            links[unit] = {"page": target.relative_to(out).as_posix(), "image": None, "examples": []}
    return write_graph_page(doc, out / "index.html", links=links), doc


def test_vendored_d3_matches_its_readme_and_is_copied_once(tmp_path):
    readme = (ASSETS / "README.md").read_text()
    digest = hashlib.sha256((ASSETS / D3_FILE).read_bytes()).hexdigest()
    assert digest in readme and re.search(r"\| 7\.\d+\.\d+ \| ISC", readme), "README records the vendored version and sha256"
    assert d3_source().startswith(b"// https://d3js.org v7.") and (ASSETS / "LICENSE.d3").is_file()
    first = write_d3(tmp_path / "static")
    stamp = first.stat().st_mtime_ns
    assert write_d3(tmp_path / "static").stat().st_mtime_ns == stamp  # an identical copy is left alone
    assert first.read_bytes() == d3_source()


def test_page_loads_d3_and_its_shared_script_by_a_relative_path(tmp_path):
    doc = {"nodes": [{"id": 0, "kind": "logit", "layer": "logits", "target": 1, "influence": 0.0}], "edges": [], "summary": {}}
    out = write_graph_page(doc, tmp_path / "g" / "index.html", static_dir=tmp_path / "shared")
    text = out.read_text()
    assert '<script src="../shared/d3.min.js"></script>' in text and (tmp_path / "shared" / D3_FILE).is_file()
    # the drawing code and style are one shared copy per folder, not repeated in every page
    assert '<script src="../shared/graph_page.js"></script>' in text and '<link rel="stylesheet" href="../shared/graph_page.css">' in text
    for name in STATIC_FILES:
        assert (tmp_path / "shared" / name).read_bytes() == (ASSETS / name).read_bytes()
    assert "d3.select" not in text and len(text) < 8000
    assert "http://" not in text and "https://" not in text  # no CDN, nothing fetched from the network


def _data(driver, selector: str) -> list:
    return driver.execute_script(f"return d3.selectAll({selector!r}).data();")


@browser
def test_d3_draws_nodes_and_sign_coloured_edges_without_overflow(driver, page):
    from selenium.webdriver.common.by import By

    path, doc = page
    driver.get(path.as_uri())
    nodes = driver.find_elements(By.CSS_SELECTOR, "#graph svg circle.node")
    assert len(nodes) == len(doc["nodes"]) == doc["summary"]["pruned_kept_nodes"] + 1  # kept nodes + the logit
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    xs = {n.get_attribute("aria-label").split(" ")[0]: float(n.get_attribute("cx")) for n in nodes}
    assert xs["pixels"] < xs["logit"]  # columns left to right: pixels first, logit last
    svg = driver.find_element(By.CSS_SELECTOR, "#graph svg").rect
    for n in nodes[:: max(1, len(nodes) // 40)]:  # every node inside the drawing
        r = n.rect
        assert svg["x"] - 1 <= r["x"] and r["x"] + r["width"] <= svg["x"] + svg["width"] + 1
    strokes = driver.execute_script("return Array.from(document.querySelectorAll('path.edge'), p => p.getAttribute('stroke'));")
    edges = _data(driver, "path.edge")
    assert len(strokes) == len(edges) == min(MAX_EDGES, len(doc["edges"]))
    assert all(s == (RED if e["weight"] > 0 else BLUE) for s, e in zip(strokes, edges))  # red raises, blue lowers
    signs = {e["weight"] > 0 for e in doc["edges"][:MAX_EDGES]}
    assert {RED, BLUE} >= set(strokes) and len(set(strokes)) == len(signs)
    widths = {round(e["flow"], 6): float(w) for e, w in zip(edges, driver.execute_script(
        "return Array.from(document.querySelectorAll('path.edge'), p => p.getAttribute('stroke-width'));"))}
    assert widths[max(widths)] > widths[min(widths)]  # the edge carrying most influence is drawn widest
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@browser
def test_cards_on_click_and_enter_arrow_keys_and_highlighted_edges(driver, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, doc = page
    driver.get(path.as_uri())
    logit_id = doc["nodes"][-1]["id"]
    driver.find_element(By.CSS_SELECTOR, f"#n{logit_id}").click()
    card = driver.find_element(By.ID, "card").text
    assert f"logit {doc['target']}" in card and "strongest inputs" in card
    incoming = sum(e["target"] == logit_id for e in doc["edges"][:MAX_EDGES])
    assert len(driver.find_elements(By.CSS_SELECTOR, "path.edge.in")) == incoming > 0
    assert not driver.find_elements(By.CSS_SELECTOR, "path.edge.out")  # the logit feeds nothing
    assert len(driver.find_elements(By.CSS_SELECTOR, "path.edge.dim")) == min(MAX_EDGES, len(doc["edges"])) - incoming

    feature = next(n for n in doc["nodes"] if n["kind"] == "feature")
    el = driver.find_element(By.CSS_SELECTOR, f"#n{feature['id']}")
    driver.execute_script("arguments[0].focus(); document.getElementById('card').innerHTML = '';", el)
    el.send_keys(Keys.ENTER)  # Enter shows the focused node's card
    assert f"{feature['layer']}:{feature['feature']}@" in driver.find_element(By.ID, "card").text
    link = driver.find_element(By.CSS_SELECTOR, "#card a")
    assert Path(unquote(urlparse(link.get_attribute("href")).path)).is_file()  # the gallery link resolves

    def focused():
        a = driver.switch_to.active_element
        return int(a.get_attribute("data-id")), float(a.get_attribute("cx")), float(a.get_attribute("cy"))

    start = focused()
    assert start[0] == feature["id"]
    el.send_keys(Keys.ARROW_DOWN)  # down: the next node of the same column
    down = focused()
    assert down[1] == start[1] and down[2] > start[2]
    driver.switch_to.active_element.send_keys(Keys.ARROW_UP)
    assert focused()[0] == start[0]
    driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)  # right: the next column
    right = focused()
    assert right[1] > start[1]
    label = driver.switch_to.active_element.get_attribute("aria-label")
    assert driver.find_element(By.ID, "card").text.splitlines()[0] == label  # focus shows the card of the node moved to
    driver.find_element(By.ID, "zoom-in").click()
    assert driver.execute_script("return d3.zoomTransform(document.querySelector('#graph svg')).k") == pytest.approx(1.6)
    r = float(driver.find_element(By.CSS_SELECTOR, f"#n{logit_id}").get_attribute("r"))
    assert r == pytest.approx(9.5 / 1.6, abs=0.01)  # zooming spreads the nodes apart; they keep their size on screen
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@browser
def test_no_network_only_the_local_d3_is_fetched(driver, page):
    """Served from 127.0.0.1 (file:// pages record no resource timings): every resource the page
    fetches, a card's images included, comes from the page's own folder, and d3 is among them."""
    path, doc = page
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(path.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        driver.get(f"{origin}/index.html")
        driver.execute_script("document.querySelectorAll('circle.node').forEach(c => c.dispatchEvent(new MouseEvent('click')))")
        names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    finally:
        server.shutdown()
        server.server_close()
    assert {f"{origin}/static/{name}" for name in STATIC_FILES} <= set(names)
    assert all(n.startswith(origin + "/") for n in names), names


@browser
def test_without_d3_the_page_shows_the_static_drawing(driver, page, tmp_path):
    path, doc = page
    out = write_graph_page(doc, tmp_path / "index.html")
    (tmp_path / "static" / D3_FILE).unlink()
    driver.get(out.as_uri())
    from selenium.webdriver.common.by import By

    assert len(driver.find_elements(By.CSS_SELECTOR, "#graph svg circle.node")) == len(doc["nodes"])
    assert len(driver.find_elements(By.CSS_SELECTOR, "#graph svg line.edge")) == min(MAX_EDGES, len(doc["edges"]))
    driver.get_log("browser")  # the failed load of the missing file is expected here; clear it
