"""The attribution-graph page: drawn by the vendored d3 in headless Chromium (each layer as its spatial map with
the input image under the pixel groups and the top logits above, sign-coloured edges, cards on click and
keyboard, arrow-key moves, highlighted edges, zoom, no overflow, no network), its controls (node and edge
sliders, pins, supernodes, subgraph export, interventions with the predicted and the real change), four-block
graphs laid out without overlapping labels at 1280 px (a synthetic one, and a real RGB network with PReLU blocks
and trained transcoders, tests/graph_page_models.py), a chain that starts at a hidden layer (its leaves, edges and
slider), its fallback without d3, and the vendored file itself (the sha256 its README records)."""

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
from vision_interp.features.graph_page import D3_FILE, STATIC_FILES, d3_source, page_extras, write_d3, write_graph_page
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

    builder = features.GraphBuilder(mnist_cnn(), tcs)
    g = builder.build(mnist_test.images[0], int(mnist_test.labels[0]))
    doc = {"source": "MNIST test[0]", "target": g.target, **graph_json(g, 0.8)}
    doc.update(page_extras(builder, g, mnist_test.images[0], precompute=4,
                           labels={"conv2/tc": {str(f): {"label": f"label {f % 3}", "score": 0.5} for f in range(128)}}))
    doc["_graph"] = g
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


def _drawn_edges(driver) -> list[dict]:
    """The drawn edges as (source id, target id, weight, flow, stroke, width)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('path.edge'), p => {const e = d3.select(p).datum(); return "
        "{s: e.source.id, t: e.target.id, w: e.weight, f: e.flow, stroke: p.getAttribute('stroke'), "
        "width: +p.getAttribute('stroke-width')};});")


def _set_slider(driver, slider_id: str, value: float) -> None:
    driver.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1]; "
                          "s.dispatchEvent(new Event('input'));", slider_id, value)


@browser
def test_layers_drawn_as_spatial_maps_with_the_image_and_the_top_logits(driver, page):
    from selenium.webdriver.common.by import By

    path, doc = page
    driver.get(path.as_uri())
    nodes = driver.find_elements(By.CSS_SELECTOR, "#graph svg circle.node")
    assert len(nodes) == doc["summary"]["pruned_kept_nodes"] + 1  # the slider starts at the graph's own pruning: kept + the logit
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # the input image is drawn under the pixel panel, from the PNG embedded in the page
    img = driver.find_element(By.CSS_SELECTOR, "#graph svg image.input-image")
    assert img.get_attribute("href").startswith("data:image/png;base64,")
    panels = driver.execute_script("return Array.from(document.querySelectorAll('.panel-bg'), r => r.getBBox()).map(b => [b.x, b.y, b.width, b.height]);")
    assert len(panels) == 3 and panels[0][0] < panels[1][0] < panels[2][0]  # input, conv1/tc, conv2/tc left to right
    ib = driver.execute_script("const b = document.querySelector('image.input-image').getBBox(); return [b.x, b.y, b.width, b.height];")
    assert ib == pytest.approx(panels[0])
    # nodes at their (y, x): inside their layer's panel, in the cell of their position
    got = driver.execute_script("return d3.selectAll('circle.node').data().map(d => [d.kind, d.li, d.y, d.x, d.cx, d.cy]);")
    shapes = [(7, 7), (14, 14), (7, 7)]
    for kind, li, y, x, cx, cy in got:
        if kind == "logit":
            assert cy < min(p[1] for p in panels)  # the logit is above every map
            continue
        px, py, pw, ph = panels[li]
        h, w = shapes[li]
        assert px + x * pw / w <= cx <= px + (x + 1) * pw / w and py + y * ph / h <= cy <= py + (y + 1) * ph / h
    logits = driver.find_elements(By.CSS_SELECTOR, "text.logit-label")
    assert len(logits) == len(doc["page"]["logits"]) >= 5 and "(target)" in driver.find_element(By.CSS_SELECTOR, "text.logit-label.target").text
    assert f"logit {doc['target']}" in driver.find_element(By.CSS_SELECTOR, "text.logit-label.target").text
    edges = _drawn_edges(driver)
    assert edges and all(e["stroke"] == (RED if e["w"] > 0 else BLUE) for e in edges)  # red raises, blue lowers
    assert {e["stroke"] for e in edges} == {RED, BLUE}
    widest = max(edges, key=lambda e: e["width"])
    assert widest["f"] == max(e["f"] for e in edges)  # the edge carrying most flow is drawn widest
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@browser
def test_node_and_edge_sliders_prune_in_the_page_as_the_graph_does(driver, page):
    from selenium.webdriver.common.by import By

    path, doc = page
    g = doc["_graph"]
    driver.get(path.as_uri())
    counts = {}
    for t in (0.5, 0.8, 0.95):
        _set_slider(driver, "node-threshold", t)
        counts[t] = len(driver.find_elements(By.CSS_SELECTOR, "circle.node"))
        assert counts[t] == g.prune(t)["kept_nodes"] + 1, t  # the page's pruning is the graph's own rule
    assert counts[0.5] < counts[0.8] < counts[0.95]
    assert "95%" in driver.find_element(By.ID, "node-threshold-value").text
    few = None
    for t in (1.0, 0.6):
        _set_slider(driver, "edge-threshold", t)
        edges = _drawn_edges(driver)
        flows = sorted((e["f"] for e in edges), reverse=True)
        few = len(edges) if few is None else few
        if t == 0.6:
            assert len(edges) < few  # fewer edges carry 60% of the flow than all of it
    assert f"{len(_drawn_edges(driver))} edges" in driver.find_element(By.ID, "counts").text
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@browser
def test_cards_on_click_and_enter_arrow_keys_and_highlighted_edges(driver, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, doc = page
    driver.get(path.as_uri())
    logit_id = doc["_graph"].logit_index
    driver.find_element(By.CSS_SELECTOR, f"#n{logit_id}").click()
    card = driver.find_element(By.ID, "card").text
    assert f"logit {doc['target']}" in card and "strongest inputs" in card
    edges = _drawn_edges(driver)
    incoming = sum(e["t"] == logit_id for e in edges)
    assert len(driver.find_elements(By.CSS_SELECTOR, "path.edge.in")) == incoming > 0
    assert not driver.find_elements(By.CSS_SELECTOR, "path.edge.out")  # the logit feeds nothing
    assert len(driver.find_elements(By.CSS_SELECTOR, "path.edge.dim")) == len(edges) - incoming

    ids = driver.execute_script("return d3.selectAll('circle.node').data().filter(d => d.kind === 'feature' && d.layer === 'conv2/tc').map(d => d.id);")
    feature = doc["_graph"].nodes[ids[0]]
    el = driver.find_element(By.CSS_SELECTOR, f"#n{ids[0]}")
    driver.execute_script("arguments[0].focus(); document.getElementById('card').innerHTML = '';", el)
    el.send_keys(Keys.ENTER)  # Enter shows the focused node's card
    text = driver.find_element(By.ID, "card").text
    assert f"{feature['layer']}:{feature['feature']}@" in text
    assert f"label {feature['feature'] % 3}" in text and "simulation score" in text  # its measured label on the card
    for what in ("activation map on this input", "decoder weights onto the block's 16 channels", "direct effect on each logit"):
        assert what in text
    assert driver.find_element(By.CSS_SELECTOR, "#card svg.actmap")
    link = driver.find_element(By.CSS_SELECTOR, "#card a")
    assert Path(unquote(urlparse(link.get_attribute("href")).path)).is_file()  # the gallery link resolves

    def focused():
        a = driver.switch_to.active_element
        return int(a.get_attribute("data-id")), float(a.get_attribute("cx")), float(a.get_attribute("cy"))

    start = focused()
    assert start[0] == ids[0]
    moves = {Keys.ARROW_DOWN: lambda a, b: b[2] > a[2], Keys.ARROW_UP: lambda a, b: b[2] < a[2],
             Keys.ARROW_RIGHT: lambda a, b: b[1] > a[1], Keys.ARROW_LEFT: lambda a, b: b[1] < a[1]}
    for key, ok in moves.items():  # each arrow moves to a node in its direction (or stays at the edge of the drawing)
        before = focused()
        driver.switch_to.active_element.send_keys(key)
        after = focused()
        assert after == before or ok(before, after), key
    driver.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    label = driver.switch_to.active_element.get_attribute("aria-label")
    assert driver.find_element(By.ID, "card").text.splitlines()[0] == label.split(": ")[0]  # focus shows the card of the node moved to
    driver.find_element(By.ID, "zoom-in").click()
    assert driver.execute_script("return d3.zoomTransform(document.querySelector('#graph svg')).k") == pytest.approx(1.6)
    r = float(driver.find_element(By.CSS_SELECTOR, f"#n{logit_id}").get_attribute("r"))
    assert r == pytest.approx(9.5 / 1.6, abs=0.01)  # zooming spreads the nodes apart; they keep their size on screen
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@browser
def test_pins_supernodes_and_the_exported_subgraph(driver, page, tmp_path):
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, doc = page
    g = doc["_graph"]
    driver.get(path.as_uri())
    n_before = len(driver.find_elements(By.CSS_SELECTOR, "circle.node"))
    # supernodes: one feature across positions -> as many circles as distinct (layer, feature) among kept features
    kept = set(g.prune(0.8)["kept"])
    feats = {(g.nodes[i]["layer"], g.nodes[i]["feature"]) for i in kept if g.nodes[i]["kind"] == "feature"}
    others = sum(1 for i in kept if g.nodes[i]["kind"] != "feature") + 1
    driver.find_element(By.ID, "group-feature").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.node")) == len(feats) + others < n_before
    group = driver.find_element(By.CSS_SELECTOR, "circle.node.kind-group")
    group.click()
    assert "positions)" in driver.find_element(By.ID, "card").text and "supernode" in driver.find_element(By.ID, "card").text
    # by label: the test labels have three values, so conv2/tc's kept features become at most three supernodes
    driver.find_element(By.ID, "group-label").click()
    conv2 = driver.execute_script("return d3.selectAll('circle.node').data().filter(d => d.layer === 'conv2/tc' && d.kind !== 'error').length;")
    assert 1 <= conv2 <= 3
    driver.find_element(By.ID, "group-label").click()
    driver.find_element(By.ID, "group-feature").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.node")) == n_before
    # pin two feature nodes (the card's button, then the P key), show only the pinned subgraph, export it
    ids = driver.execute_script("return d3.selectAll('circle.node').data().filter(d => d.kind === 'feature').map(d => d.id).slice(0, 2);")
    driver.find_element(By.CSS_SELECTOR, f"#n{ids[0]}").click()
    driver.find_element(By.ID, "pin-this").click()
    el = driver.find_element(By.CSS_SELECTOR, f"#n{ids[1]}")
    driver.execute_script("arguments[0].focus();", el)
    el.send_keys("p")
    assert driver.find_element(By.ID, "pin-count").text == "2"
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.node.pinned")) == 2
    driver.find_element(By.ID, "pinned-only").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.node")) == 3  # the two pinned + the logit
    driver.find_element(By.ID, "export").click()
    sub = json.loads(driver.find_element(By.ID, "export-out").get_attribute("value"))
    assert sub["format"] == "vision_interp.subgraph/1" and sorted(n["id"] for n in sub["nodes"]) == sorted(ids)
    for n in sub["nodes"]:
        assert n["feature"] == g.nodes[n["id"]]["feature"] and n["total_effect"] == pytest.approx(float(g.total_effects()[n["id"]]), rel=1e-6)
    a, b = sorted(ids)
    assert [(e["source"], e["target"]) for e in sub["edges"]] == ([(a, b)] if float(g.edges[b, a]) != 0 else [])
    driver.find_element(By.ID, "pinned-only").click()
    driver.find_element(By.ID, "clear-pins").click()
    assert driver.find_element(By.ID, "pin-count").text == "0"
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@browser
def test_intervention_shows_the_predicted_and_the_precomputed_real_change(driver, page):
    from selenium.webdriver.common.by import By

    path, doc = page
    pre = doc["page"]["interventions"]
    driver.get(path.as_uri())
    assert "precomputed" in driver.find_element(By.ID, "real-source").text  # the page says which it shows
    node = pre[0]["nodes"][0]
    driver.execute_script("document.getElementById('node-threshold').value = 1; document.getElementById('node-threshold').dispatchEvent(new Event('input'));")
    driver.find_element(By.CSS_SELECTOR, f"#n{node}").click()
    driver.find_element(By.ID, "pin-this").click()
    driver.find_element(By.ID, "run-zero").click()
    predicted = float(driver.find_element(By.ID, "predicted").text)
    measured = float(driver.find_element(By.ID, "measured").text)
    assert predicted == pytest.approx(-float(doc["_graph"].total_effects()[node]), abs=1e-4)  # the frozen linear model
    assert measured == pytest.approx(pre[0]["measured"], abs=1e-4)
    assert "precomputed when the page was built" in driver.find_element(By.ID, "intervention-result").text
    driver.find_element(By.ID, "run-scale").click()  # scale 2: predicted, but not precomputed -> says so
    assert float(driver.find_element(By.ID, "predicted").text) == pytest.approx(-predicted, abs=1e-4)
    assert driver.find_element(By.ID, "measured").text == "\u2014" and "vision-interp serve" in driver.find_element(By.ID, "intervention-result").text


def four_block_doc() -> dict:
    """A synthetic graph of another architecture: a 32 x 32 RGB input, four blocks with long layer names
    (16 x 16, 8 x 8, 4 x 4, 2 x 2 maps), a few active features per position, and random edges."""
    import random

    rng = random.Random(0)
    names = ["features.0.block/tc", "features.1.block/tc", "features.2.block/tc", "features.3.block/tc"]
    shapes = [[96, 16, 16], [192, 8, 8], [384, 4, 4], [768, 2, 2]]
    nodes = [{"kind": "pixels", "layer": "input", "y": y, "x": x, "box": [4 * y, 4 * x, 4 * y + 4, 4 * x + 4], "value": rng.random()}
             for y in range(8) for x in range(8)]
    for b, (name, (nf, h, w)) in enumerate(zip(names, shapes)):
        for y in range(h):
            for x in range(w):
                for f in rng.sample(range(nf), 3):
                    nodes.append({"kind": "feature", "layer": name, "block": b, "feature": f, "y": y, "x": x, "value": rng.random()})
                nodes.append({"kind": "error", "layer": name, "block": b, "y": y, "x": x, "value": rng.random()})
    nodes.append({"kind": "logit", "layer": "logits", "target": 3, "value": 5.0})
    for i, n in enumerate(nodes):
        n.update({"id": i, "influence": 0.0 if n["kind"] == "logit" else rng.random() / len(nodes), "total_effect": rng.gauss(0, 0.1)})
    edges = [{"source": rng.randrange(i), "target": i, "weight": rng.gauss(0, 1), "flow": rng.random()}
             for i in range(64, len(nodes)) for _ in range(2)]
    return {"source": "synthetic four-block CNN", "target": 3, "nodes": nodes, "edges": edges,
            "meta": {"feature_layers": names, "feature_shapes": shapes, "pixel_group": 4},
            "summary": {"logit": 5.0, "nodes": len(nodes), "pruned_threshold": 0.8}}


@browser
def test_four_block_graph_lays_out_without_overlapping_labels_at_1280px(driver, tmp_path):
    doc = four_block_doc()
    out = write_graph_page(doc, tmp_path / "index.html")
    driver.get(out.as_uri())
    boxes = driver.execute_script(
        "return Array.from(document.querySelectorAll('#graph svg text'), t => {const r = t.getBoundingClientRect(); "
        "return [t.textContent, r.left, r.top, r.right, r.bottom];});")
    titles = [b for b in boxes if "tc" in b[0] or b[0].startswith("input")]
    assert len(titles) == 5 and len(boxes) >= 6  # five maps (input + four blocks) and the logit
    for i, a in enumerate(boxes):
        assert a[3] - a[1] > 0 and a[4] - a[2] > 0, a
        for b in boxes[i + 1:]:
            overlap = min(a[3], b[3]) - max(a[1], b[1]) > 0.5 and min(a[4], b[4]) - max(a[2], b[2]) > 0.5
            assert not overlap, (a, b)
    panels = driver.execute_script("return Array.from(document.querySelectorAll('.panel-bg'), r => r.getBoundingClientRect()).map(b => [b.left, b.right, b.width]);")
    assert len(panels) == 5 and all(p[2] > 150 for p in panels)  # each map stays legible: wider than 150 px on screen
    assert all(a[1] < b[0] for a, b in zip(panels, panels[1:]))  # side by side, not overlapping
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    assert driver.title == "Attribution graph: synthetic four-block CNN, logit 3"
    driver.save_screenshot(str(tmp_path / "four_blocks.png"))
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _text_boxes(driver) -> list[list]:
    """Every text drawn in the graph's SVG as [text, left, top, right, bottom] on screen (labels of maps, logits, input)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#graph svg text'), t => {const r = t.getBoundingClientRect(); "
        "return [t.textContent, r.left, r.top, r.right, r.bottom];});")


def _overlaps(boxes: list[list], slack: float = 0.5) -> list[tuple]:
    """The pairs of [name, left, top, right, bottom] boxes that overlap by more than ``slack`` px both ways."""
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if min(a[3], b[3]) - max(a[1], b[1]) > slack and min(a[4], b[4]) - max(a[2], b[2]) > slack]


def _panels(driver) -> list[list]:
    """Each drawn map as [layer, left, top, right, bottom, grid lines] on screen, left to right."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#graph svg g.panel'), g => {const r = g.querySelector('.panel-bg')"
        ".getBoundingClientRect(); return [g.dataset.layer, r.left, r.top, r.right, r.bottom, g.querySelectorAll('line.grid').length];});")


def _circles_overlapping(driver) -> list:
    """Pairs of drawn nodes whose circles overlap on screen (centres closer than the sum of the radii)."""
    return driver.execute_script(
        "const c = Array.from(document.querySelectorAll('circle.node'), e => {const r = e.getBoundingClientRect(); "
        "return [e.id, (r.left + r.right) / 2, (r.top + r.bottom) / 2, r.width / 2];}); const out = []; "
        "for (let i = 0; i < c.length; i++) for (let j = i + 1; j < c.length; j++) "
        "if (Math.hypot(c[i][1] - c[j][1], c[i][2] - c[j][2]) < c[i][3] + c[j][3] - 0.5) out.push([c[i][0], c[j][0]]); return out;")


@pytest.fixture(scope="module")
def four_block_real(tmp_path_factory):
    """A graph of a real four-block network (tests/graph_page_models.py: 3 x 32 x 32 RGB, conv + PReLU + max pool
    blocks, a linear head) over four transcoders trained by the package's trainer, with measured labels, written by
    the project's writer (write_graph: graph.json + index.html). Trained on one thread (about 12 s)."""
    from graph_page_models import FourBlockNet, blob_images, four_block_transcoders, frozen, one_thread

    from vision_interp import io as vio
    from vision_interp.features.labels import feature_labels
    from vision_interp.features.tc_graph_io import write_graph

    model = frozen(FourBlockNet())
    out = tmp_path_factory.mktemp("four_block_real")
    with one_thread():
        tcs = four_block_transcoders(model, blob_images(64, 1))
        held = blob_images(48, 3)
        labels = {tc.feature_layer: feature_labels(model, tc, held, model(held).argmax(1)) for tc in tcs}
        x = blob_images(1, 7)[0]
        target = int(model(x[None]).argmax())
        builder = features.GraphBuilder(model, tcs)
        g = builder.build(x, target)
        path, kept = write_graph(model, tcs, x, target, out, source="four-block PReLU CNN, blob image 7", builder=builder,
                                 labels=labels)
    assert not kept
    return out / "index.html", g, vio.load_json(path)


@browser
def test_real_four_block_graph_lays_out_without_overlapping_labels_at_1280px(driver, four_block_real):
    page, g, doc = four_block_real
    # the graph is exact: every node's value is the sum of its incoming edges (float64 chain)
    assert g.sum_rule_residual() < 1e-5 and doc["summary"]["sum_rule_residual"] < 1e-5
    assert len(g.meta["feature_layers"]) == 4 and g.kinds().count("pixels") == 8 * 8  # 32 px in 4 x 4 groups
    driver.get(page.as_uri())
    assert driver.execute_script("return window.innerWidth") == 1280
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")  # nothing scrolls sideways
    # every map is drawn: the input and the four blocks, left to right, each with its grid, legible and apart
    layers = doc["page"]["layers"]
    assert [(lay["h"], lay["w"]) for lay in layers] == [(8, 8), (16, 16), (8, 8), (4, 4), (2, 2)]
    panels = _panels(driver)
    assert [p[0] for p in panels] == [lay["name"] for lay in layers] == ["input", *g.meta["feature_layers"]]
    for p, lay in zip(panels, layers):
        assert p[3] - p[1] > 150 and p[4] - p[2] > 150, p  # wider and taller than 150 px on screen
        assert p[5] == lay["h"] - 1 + lay["w"] - 1, p  # its grid lines: one cell per position
        assert 0 <= p[1] and p[3] <= 1280, p
    assert all(a[3] < b[1] for a, b in zip(panels, panels[1:]))
    img = driver.execute_script("const r = document.querySelector('image.input-image').getBoundingClientRect(); "
                                "return [r.left, r.top, r.right, r.bottom];")
    assert img == pytest.approx(panels[0][1:5], abs=0.5)  # the input image fills the pixel map
    # the nodes: the graph's own pruning, each inside its map's panel, in every map, no two circles overlapping
    got = driver.execute_script("return d3.selectAll('circle.node').data().map(d => [d.kind, d.li]);")
    assert len(got) == doc["summary"]["pruned_kept_nodes"] + 1
    assert {li for kind, li in got if kind != "logit"} == set(range(5))
    inside = driver.execute_script(
        "const p = Array.from(document.querySelectorAll('.panel-bg'), r => r.getBBox()); return d3.selectAll('circle.node').data()"
        ".filter(d => d.kind !== 'logit').every(d => {const b = p[d.li]; return b.x <= d.cx && d.cx <= b.x + b.width && "
        "b.y <= d.cy && d.cy <= b.y + b.height;});")
    assert inside
    assert not _circles_overlapping(driver)
    # labels: each map's title names its whole layer, no two labels (titles, logits) overlap, all inside the window
    boxes = _text_boxes(driver)
    titles = [b for b in boxes if any(b[0].startswith(lay["name"] + " ") for lay in layers)]
    assert len(titles) == 5 and not any("\u2026" in b[0] for b in titles), titles  # not shortened
    assert len(driver.find_elements("css selector", "text.logit-label")) == len(doc["page"]["logits"]) >= 5
    for b in boxes:  # drawn, inside the window, and at least 8 px tall on screen (the SVG is scaled to its column)
        assert b[4] - b[2] >= 8 and b[3] - b[1] > 0 and 0 <= b[1] and b[3] <= 1280, b
    assert not _overlaps(boxes)
    edges = _drawn_edges(driver)
    assert edges and {e["stroke"] for e in edges} == {RED, BLUE}
    fed = {g.nodes[e["t"]]["block"] for e in edges if g.nodes[e["t"]]["kind"] == "feature"}
    assert fed == {0, 1, 2, 3} and any(g.nodes[e["t"]]["kind"] == "logit" for e in edges)  # edges reach every block and the logit
    # a card of a last-block feature: its measured label and its logit effects
    last = driver.execute_script(
        "return d3.selectAll('circle.node').data().filter(d => d.kind === 'feature' && d.li === 4).map(d => d.id);")
    assert last
    driver.find_element("css selector", f"#n{last[0]}").click()
    card = driver.find_element("id", "card").text
    assert "simulation score" in card or "dead" in card
    assert "direct effect on each logit" in card
    driver.save_screenshot(str(page.parent / "four_blocks_real.png"))
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture(scope="module")
def hidden_chain(tmp_path_factory, mnist_test):
    """A graph whose chain starts at a hidden layer: the MNIST CNN with the committed conv2 transcoder alone, so the
    leaves are pool1's 14 x 14 positions (kind "activation"), written by the project's writer."""
    from vision_interp import io as vio
    from vision_interp.features.tc_graph_io import write_graph
    from vision_interp.zoo import mnist_cnn

    m = mnist_cnn()
    tc = features.load_transcoder("mnist_cnn_conv2_tc")
    x, target = mnist_test.images[0], int(mnist_test.labels[0])
    g = features.attribution_graph(m, [tc], x, target)
    out = tmp_path_factory.mktemp("hidden_chain")
    path, _ = write_graph(m, [tc], x, target, out, source="MNIST test[0], chain from pool1")
    return out / "index.html", g, vio.load_json(path)


@browser
def test_chain_from_a_hidden_layer_draws_its_leaves_edges_and_slider(driver, hidden_chain):
    from selenium.webdriver.common.by import By

    page, g, doc = hidden_chain
    assert g.leaf_layer == "pool1" and g.kinds().count("activation") == 14 * 14 and "pixels" not in g.kinds()
    assert g.sum_rule_residual() < 1e-5
    driver.get(page.as_uri())
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    # two maps: the leaves' layer first, labelled with its name, then the block
    panels = _panels(driver)
    assert [p[0] for p in panels] == ["pool1", "conv2/tc"] and panels[0][3] < panels[1][1]
    assert panels[0][5] == 13 + 13 and panels[1][5] == 6 + 6
    titles = driver.execute_script("return Array.from(document.querySelectorAll('text.col'), t => t.textContent);")
    kept_leaves = sum(1 for i in g.prune(0.8)["kept"] if g.nodes[i]["kind"] == "activation")
    assert titles[0] == f"pool1 14\u00d714 ({kept_leaves})" and titles[1].startswith("conv2/tc 7\u00d77 ")
    # the leaves sit in the first map, each in its (y, x) cell, drawn as leaves (grey), named by their layer
    leaves = driver.execute_script(
        "const b = document.querySelector('.panel-bg').getBBox(); return d3.selectAll('circle.node').data()"
        ".filter(d => d.kind === 'activation')"
        ".map(d => [d.li, d.y, d.x, (d.cx - b.x) / b.width * 14, (d.cy - b.y) / b.height * 14, d.label]);")
    assert len(leaves) == kept_leaves > 0
    for li, y, x, cx, cy, label in leaves:
        assert li == 0 and x <= cx <= x + 1 and y <= cy <= y + 1 and label == f"pool1 {y}..{y}, {x}..{x}"
    assert {c.get_attribute("fill") for c in driver.find_elements(By.CSS_SELECTOR, "circle.node.kind-activation")} == {"#999"}
    # the input it was computed from is shown beside the logits (the first map is pool1, not the image), apart from every label
    img = driver.execute_script("const r = document.querySelector('image.input-image').getBoundingClientRect(); "
                                "return ['input image', r.left, r.top, r.right, r.bottom];")
    assert img[3] - img[1] > 20 and img[4] <= panels[0][2]  # above the maps
    boxes = _text_boxes(driver)
    assert not _overlaps(boxes + [img]) and not _circles_overlapping(driver)
    # edges leave the leaves, and the strongest of them is drawn
    edges = _drawn_edges(driver)
    from_leaves = [e for e in edges if g.nodes[e["s"]]["kind"] == "activation"]
    assert from_leaves and all(g.nodes[e["t"]]["kind"] in ("feature", "error") for e in from_leaves)
    assert all(e["w"] == pytest.approx(float(g.edges[e["t"], e["s"]]), abs=1e-6) for e in from_leaves)
    # a leaf's card, by click
    leaf_id = driver.execute_script("return d3.selectAll('circle.node').data().find(d => d.kind === 'activation').id;")
    driver.find_element(By.CSS_SELECTOR, f"#n{leaf_id}").click()
    assert driver.find_element(By.ID, "card").text.splitlines()[0].startswith("pool1 ")
    # the node slider prunes as the graph does, leaves included
    counts = {}
    for t in (0.5, 0.8, 0.95):
        _set_slider(driver, "node-threshold", t)
        drawn = driver.execute_script("return d3.selectAll('circle.node').data().map(d => d.kind);")
        p = g.prune(t)
        counts[t] = len(drawn)
        assert counts[t] == p["kept_nodes"] + 1, t
        assert drawn.count("activation") == sum(1 for i in p["kept"] if g.nodes[i]["kind"] == "activation"), t
    assert counts[0.5] < counts[0.8] < counts[0.95]
    assert "95%" in driver.find_element(By.ID, "node-threshold-value").text
    assert f"{counts[0.95]} nodes" in driver.find_element(By.ID, "counts").text
    driver.save_screenshot(str(page.parent / "hidden_chain.png"))
    assert not [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_title_is_never_empty_without_a_source(tmp_path):
    doc = four_block_doc()
    doc["source"] = ""
    text = write_graph_page(doc, tmp_path / "index.html").read_text()
    assert "<title>Attribution graph: logit 3</title>" in text


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
