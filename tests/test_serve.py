"""``vision-interp serve``: the page served on 127.0.0.1 asks the real network for any intervention; the
server checks every request (size, node count, scale, folder) and only binds to the loopback interface."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
import torch

from vision_interp import features
from vision_interp import io as vio
from vision_interp.checks import InputError
from vision_interp.features.graph_page import page_extras, write_graph_page
from vision_interp.features.interventions import measure_interventions
from vision_interp.features.tc_graph_io import graph_json

pytest.importorskip("tornado")
from vision_interp.serve import GraphSession, intervene, serve  # noqa: E402

TCS = ("mnist_cnn_conv1_tc", "mnist_cnn_conv2_tc")


@pytest.fixture(scope="module")
def site(tmp_path_factory, mnist_test):
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn()
    builder = features.GraphBuilder(model, [features.load_transcoder(n) for n in TCS])
    img = mnist_test.images[2]
    g = builder.build(img, int(mnist_test.labels[2]))
    root = tmp_path_factory.mktemp("site")
    doc = {"source": "MNIST test[2]", "target": g.target, "transcoders": list(TCS), **graph_json(g), **page_extras(builder, g, img, precompute=2)}
    vio.save_json(root / "digit_x" / "graph.json", doc)
    write_graph_page(doc, root / "digit_x" / "index.html", static_dir=root / "static")
    return root, model, builder, g, img


@pytest.fixture(scope="module")
def server(site):
    root, model, *_ = site
    got: dict = {}
    ready = threading.Event()

    def on_ready(port, stop):
        got.update(port=port, stop=stop)
        ready.set()

    t = threading.Thread(target=serve, args=(root, model), kwargs={"port": 0, "max_nodes": 8, "ready": on_ready}, daemon=True)
    t.start()
    assert ready.wait(60)
    yield f"http://127.0.0.1:{got['port']}"
    got["stop"]()
    t.join(10)
    assert not t.is_alive()


def _post(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/api/intervene", data=data, headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # the loopback server (127.0.0.1) above
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except (ConnectionError, ValueError):  # an over-long body: refused and the connection closed
            return e.code, {}
    except (ConnectionError, urllib.error.URLError):  # tornado closes a connection whose body is over the limit
        return 0, {}


def test_joint_intervention_of_one_node_is_measure_interventions(site):
    _, model, builder, g, img = site
    te = g.total_effects()
    i = max((i for i, n in enumerate(g.nodes) if n["kind"] == "feature"), key=lambda i: abs(float(te[i])))
    got = intervene(builder, img, [g.nodes[i]], 0.0)
    want = float(measure_interventions(model, [features.load_transcoder(n) for n in TCS], img, g, [i], 0.0)[0])
    assert got["change"][g.target] == pytest.approx(want, abs=1e-4)  # float64 copy vs the float32 model
    assert got["change"][g.target] != 0.0


def test_server_answers_checked_requests(site, server):
    _, _, builder, g, img = site
    with urllib.request.urlopen(server + "/api/info", timeout=30) as r:  # 127.0.0.1, the fixture's server
        assert json.loads(r.read())["max_nodes"] == 8
    feats = [i for i, n in enumerate(g.nodes) if n["kind"] == "feature"][:3]
    status, body = _post(server, {"graph": "digit_x", "nodes": feats, "scale": 0.5})
    assert status == 200 and body["source"] == "server", body
    assert body["measured"] == pytest.approx(intervene(builder, img, [g.nodes[i] for i in feats], 0.5)["change"][g.target])
    for bad, word in (({"graph": "digit_x", "nodes": list(range(9)), "scale": 0}, "at most 8"),
                      ({"graph": "../..", "nodes": feats, "scale": 0}, "outside"),
                      ({"graph": "digit_x", "nodes": [0], "scale": 0}, "not feature nodes"),
                      ({"graph": "digit_x", "nodes": feats, "scale": "big"}, "scale"),
                      ({"graph": "digit_x", "nodes": feats, "scale": 1e9}, "scale"),
                      ({"graph": "digit_x", "nodes": [10 ** 7], "scale": 0}, "not nodes of this graph"),
                      ({"graph": "digit_x", "nodes": feats, "scale": 0, "extra": 1}, "unknown fields")):
        status, body = _post(server, bad)
        assert status == 400 and word in body["error"], (bad, body)
    status, _ = _post(server, b"[" * (70 * 1024))
    assert status in (0, 400, 413)  # bodies over 64 KiB are refused before any work
    status, body = _post(server, {"graph": "digit_x", "nodes": feats, "scale": 0})
    assert status == 200  # and the server still answers


def test_served_page_shows_the_real_change_from_the_server(site, server, tmp_path_factory):
    from browser_support import BROWSER_MARKS, chromium_driver  # noqa: F401
    from selenium.webdriver.common.by import By

    _, _, builder, g, img = site
    if not __import__("pathlib").Path("/usr/bin/chromium").exists():
        pytest.skip("needs chromium")
    gen = chromium_driver(tmp_path_factory)
    driver = next(gen)
    try:
        driver.get(server + "/digit_x/index.html")
        import time

        for _ in range(50):
            if "vision-interp serve" in driver.find_element(By.ID, "real-source").text:
                break
            time.sleep(0.1)
        assert "live" in driver.find_element(By.ID, "real-source").text
        te = g.total_effects()
        feats = sorted((i for i, n in enumerate(g.nodes) if n["kind"] == "feature"), key=lambda i: -abs(float(te[i])))[:2]
        driver.execute_script("const s = document.getElementById('node-threshold'); s.value = 1; s.dispatchEvent(new Event('input'));")
        for i in feats:  # (a dispatched click: nodes of one cell may overlap on screen)
            driver.execute_script(f"d3.select('#n{i}').dispatch('click')")
            driver.find_element(By.ID, "pin-this").click()
        assert driver.find_element(By.ID, "pin-count").text == "2"
        driver.find_element(By.ID, "run-zero").click()
        for _ in range(100):
            if driver.find_element(By.ID, "measured").text not in ("", "\u2014") if driver.find_elements(By.ID, "measured") else False:
                break
            time.sleep(0.1)
        measured = float(driver.find_element(By.ID, "measured").text)
        predicted = float(driver.find_element(By.ID, "predicted").text)
        want = intervene(builder, img, [g.nodes[i] for i in feats], 0.0)["change"][g.target]
        assert measured == pytest.approx(want, abs=1e-4) and predicted == pytest.approx(-float(te[feats].sum()), abs=1e-4)
        assert "vision-interp serve (live)" in driver.find_element(By.ID, "intervention-result").text
        names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert all(n.startswith(server + "/") for n in names)  # nothing but the local server
    finally:
        gen.close()


def test_loopback_only_and_checked_session(site):
    root, model, *_ = site
    with pytest.raises(InputError, match="host"):
        serve(root, model, host="0.0.0.0")
    with pytest.raises(InputError, match="root"):
        GraphSession(root / "nowhere", model)
    s = GraphSession(root, model, max_nodes=4)
    with pytest.raises(InputError, match="graph"):
        s.request({"graph": "missing", "nodes": [1], "scale": 0})
    with pytest.raises(InputError, match="request"):
        s.request([1, 2])
    assert torch.is_grad_enabled()


def test_server_refuses_cross_site_requests(server):
    """A page on another site can send a "simple" text/plain POST, and DNS rebinding gives a foreign Host: both refused."""
    assert _post(server, {"graph": "x", "nodes": [], "scale": 0.0}, {"Content-Type": "text/plain"})[0] == 415
    status, body = _post(server, {"graph": "x", "nodes": [], "scale": 0.0},
                         {"Content-Type": "application/json", "Host": "attacker.example:8765"})
    assert status == 403 and "loopback" in body["error"]
