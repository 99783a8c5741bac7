"""The attribution-graph page in headless Chromium: layout, no overflow, cards on click and keyboard, links."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser_support import BROWSER_MARKS, chromium_driver

from vision_interp import features
from vision_interp.features.graph_page import write_graph_page
from vision_interp.features.tc_graph_io import graph_json

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=1000, height=800)


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


def test_layout_no_overflow_and_cards(driver, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, doc = page
    driver.get(path.as_uri())
    nodes = driver.find_elements(By.CSS_SELECTOR, "circle.node")
    assert len(nodes) == len(doc["nodes"])
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # columns left to right: pixels, then features and errors per block, logit last (rightmost)
    xs = {n.get_attribute("aria-label").split(" ")[0]: float(n.get_attribute("cx")) for n in nodes}
    assert xs["pixels"] < xs["logit"]
    svg = driver.find_element(By.TAG_NAME, "svg").rect
    for n in nodes[:: max(1, len(nodes) // 40)]:  # every node inside the drawing
        r = n.rect
        assert svg["x"] - 1 <= r["x"] and r["x"] + r["width"] <= svg["x"] + svg["width"] + 1
    logit = driver.find_element(By.CSS_SELECTOR, f"#n{doc['nodes'][-1]['id']}")
    logit.click()
    card = driver.find_element(By.ID, "card").text
    assert f"logit {doc['target']}" in card and "strongest inputs" in card
    feature = next(n for n in doc["nodes"] if n["kind"] == "feature")
    el = driver.find_element(By.CSS_SELECTOR, f"#n{feature['id']}")
    driver.execute_script("arguments[0].focus()", el)  # keyboard: focus shows the card, arrows move on
    assert f"{feature['layer']}:{feature['feature']}@" in driver.find_element(By.ID, "card").text
    el.send_keys(Keys.ARROW_RIGHT)
    focused = driver.switch_to.active_element.get_attribute("data-id")
    assert focused is not None and int(focused) != feature["id"]
    link = driver.find_element(By.CSS_SELECTOR, "#card a")
    assert Path(unquote(urlparse(link.get_attribute("href")).path)).is_file()  # the gallery link resolves
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
