"""One rich display of each kind in headless Chromium: it loads from a file with nothing fetched, every inline
picture decodes, nothing fails in the console. Screenshots go to ``$VI_DISPLAY_SCREENSHOTS`` when set (to look at)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import vision_interp as vi
from vision_interp import display
from browser_support import BROWSER_MARKS, chromium_driver

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=1100, height=900)


@pytest.fixture(scope="module")
def views(one_thread) -> dict[str, display.View]:
    """One display of each kind, from the committed MNIST CNN, its dictionary and the toy transformer."""
    from vision_interp.attribution import attribute, ig_completeness, layer_attribution
    from vision_interp.circuits import direct_weights, layer_neuron_groups, top_connections
    from vision_interp.data.examples import top_activating
    from vision_interp.featvis import visualize_layer

    torch.manual_seed(0)
    m = vi.mnist_cnn()
    g = torch.Generator().manual_seed(0)
    # digit-like strokes: blurred random blobs, so receptive-field patches have structure
    x = torch.nn.functional.interpolate(torch.rand(24, 1, 7, 7, generator=g), size=(28, 28), mode="bilinear",
                                        align_corners=False).pow(3).clamp(0, 1)
    feats = visualize_layer(m, "conv2", [0, 1, 2, 3], steps=48, progress=False)
    thumbs = {f"conv1:{c}": img for c, img in enumerate(visualize_layer(m, "conv1", steps=32, progress=False).images)}
    pool_thumbs = {f"pool2:{c}": img for c, img in enumerate(visualize_layer(m, "conv2", steps=32, progress=False).images)}
    la = layer_attribution(m, x[:1], "pool2", target=3, n_steps=16)
    gpt = vi.load_gpt2("induction_2l")
    rep = vi.analyze_induction(gpt, model_name="induction_2l", seq_len=12, batch=2, ablation=(), composition=False,
                               attribution=False, progress=False)
    d = vi.load_dictionary("mnist_cnn_conv2_sae")
    from vision_interp.features import attribution_graph, load_transcoder

    tcs = [load_transcoder("mnist_cnn_conv1_tc"), load_transcoder("mnist_cnn_conv2_tc")]
    digit = vi.data.load_mnist("test", limit=1).images[0]
    graph = attribution_graph(m, tcs, digit, target=int(m(digit[None]).argmax()))
    return {
        "featvis": display.featvis(feats),
        "attribution": vi.show(x[:2], attribute(m, x[:2], target=3, method="integrated_gradients", n_steps=16),
                               method="integrated gradients", target=3),
        "layer_attribution": display.layer_attribution(la, x[:1], k=4, pictures=pool_thumbs),
        "weights": display.weights(direct_weights(m, "conv1", "conv2"), src="conv1", dst="conv2"),
        "connections": display.connections(top_connections(m, "conv2:3", k=3), m, pictures=thumbs),
        "dataset_examples": display.dataset_examples(top_activating(m, "conv2", x, k=5, channels=[0, 3]), x, m),
        "neuron_groups": display.neuron_groups(layer_neuron_groups(m, x[:1], "pool2", 3), x[0]),
        "dictionary": display.dictionary(d),
        "dictionary_features": display.dictionary_features(d, m, x, features=[0, 1], k=4),
        "induction": display.induction(rep),
        "completeness": display.completeness(ig_completeness(m, x[:2], target=3, n_steps=16)),
        "attribution_graph": display.attribution_graph(graph),
    }


KINDS = ["featvis", "attribution", "layer_attribution", "weights", "connections", "dataset_examples", "neuron_groups",
         "dictionary", "dictionary_features", "induction", "completeness", "attribution_graph"]


@pytest.mark.parametrize("kind", KINDS)
def test_display_renders_in_chromium(kind, views, driver, tmp_path):
    page = views[kind].save(tmp_path / f"{kind}.html")
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    imgs = driver.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert imgs and all(ok and w > 0 and h > 0 for ok, w, h in imgs) or kind in ("completeness", "attribution_graph")
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    w, h = driver.execute_script("const r = document.querySelector('.vision-interp-view').getBoundingClientRect();"
                                 "return [r.width, r.height]")
    assert w > 100 and h > 40
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    assert len(shot.getcolors(1 << 24)) > 8  # not a blank page
    out = os.environ.get("VI_DISPLAY_SCREENSHOTS")
    if out:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(1100, min(max(height + 40, 300), 2400))
        Path(out).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(out) / f"{kind}.png"))
        driver.set_window_size(1100, 900)
