"""The induction report page in headless Chromium: it loads, every picture decodes, nothing overflows."""

from __future__ import annotations

import pytest

from browser_support import BROWSER_MARKS, chromium_driver

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=1200)


def test_induction_report_renders(driver, tmp_path):
    from vision_interp.transformer import analyze_induction, load_gpt2

    model = load_gpt2("induction_2l")
    report = analyze_induction(model, model_name="induction_2l <b>", seq_len=30, batch=4, seed=0, progress=False)
    report.save(tmp_path)
    driver.get((tmp_path / "index.html").as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight]);")
    srcs = {s for s, *_ in images}
    assert {"loss_per_position.png", "attention_top_heads.png", "composition_graph.png", "heatmap_induction.png",
            "heatmap_attribution_mean.png", "heatmap_integrated_attribution_mean.png"} <= srcs
    broken = [s for s, ok, w, h in images if not (ok and w > 0 and h > 0)]
    assert not broken, broken
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert driver.execute_script("return document.scripts.length") == 0  # the escaped model name injected nothing
    title = driver.execute_script("return document.querySelector('h1').textContent")
    assert title == "Induction heads: induction_2l <b>"
    text = driver.execute_script("return document.body.innerText")
    assert "Pearson" in text and "integrated attribution patching" in text and "slope at t=0" in text and "all induction heads together" in text and "Chance level" in text
    # nothing wider than the page: pictures are scaled to the column
    overflow = driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1")
    assert not overflow
