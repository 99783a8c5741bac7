"""Issue 37: completeness against baselines computed by the same code, selection data disjoint from test data,
a planted case where the circular test passes and the held-out one fails, and the intervention split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from vision_interp.exercises import circuit as CI
from vision_interp.exercises.mnist import SELECTION_IMAGES, image_hashes
from vision_interp.exercises.stages_completeness import bootstrap_r
from vision_interp.features.completeness import (baselines_markdown, completeness_baselines, mean_ablated_except, margins,
                                                 named_mask)
from vision_interp.zoo import mnist_cnn

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "galleries" / "mnist_exercise" / "results.json"
CLAUSES = [{"digit": 0, "channel": 4, "positions": [23, 24, 30]}, {"digit": 7, "channel": 13, "positions": [9, 10]},
           {"digit": 1, "channel": 5, "positions": [17, 24, 31]}]


@pytest.fixture(scope="module")
def model():
    return mnist_cnn()


@pytest.fixture(scope="module")
def split(data_dir):
    from vision_interp.data import load_mnist

    test, train = load_mnist("test", data_dir), load_mnist("train", data_dir)
    return test.images[:600], test.labels[:600], train.images[-600:], train.labels[-600:]


@pytest.fixture(scope="module")
def baselines(model, split):
    x, y, sx, sy = split
    return completeness_baselines(model, "pool2", CLAUSES, x, y, sx, sy, random_seeds=5, seed=3)


# ----------------------------------------------------------------------------- (a) baselines

def test_named_row_equals_the_forward_pass_with_a_hook(model, split, baselines):
    """The closed form is exact: the named cells kept by a real forward pass with every other cell mean-ablated."""
    x, y, _, _ = split
    from vision_interp.capture import capture

    acts = capture(model, x, ["pool2"], detach=True)["pool2"]
    means = acts.mean(0)
    logits = mean_ablated_except(model, "pool2", named_mask(CLAUSES, tuple(acts.shape[1:])), means, x)
    clean = model(x).detach()
    assert baselines["named"]["raw"]["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()), abs=1e-5)
    assert baselines["named"]["raw"]["agreement"] == pytest.approx(float((logits.argmax(1) == clean.argmax(1)).float().mean()), abs=1e-5)
    share = float(margins(logits, y).mean()) / float(margins(clean, y).mean())
    assert baselines["named"]["raw"]["margin_share"] == pytest.approx(share, abs=1e-4)


def test_floor_is_zero_and_model_is_one_and_baselines_differ(baselines):
    b = baselines
    assert b["k"] == 8 and b["cells"] == 784
    assert b["floor"]["accuracy"] < 0.3 and b["floor"]["margin_share"] < 0  # the floor is not 0: normalising matters
    assert b["model"]["agreement"] == 1.0 and b["model"]["margin_share"] == pytest.approx(1.0)
    for name in ("named", "top_weight_std", "top_contrastive"):
        for f in ("accuracy", "agreement", "margin_share"):
            raw, norm = b[name]["raw"][f], b[name]["normalised"][f]
            assert norm == pytest.approx((raw - b["floor"][f]) / (b["model"][f] - b["floor"][f]), abs=2e-4), (name, f)
    draws = [d["raw"]["margin_share"] for d in b["random"]["draws"]]
    assert len(set(draws)) == 5 and b["random"]["normalised"]["margin_share"]["sd"] > 0
    # rankings that read the labels or the weights keep far more than 8 random cells
    assert b["top_contrastive"]["normalised"]["margin_share"] > b["random"]["normalised"]["margin_share"]["max"]
    assert [(r["digit"], r["channel"], r["cells"]) for r in b["per_clause"]] == [(0, 4, 3), (7, 13, 2), (1, 5, 3)]
    assert all(r["own_share"] == r["digit_share"] for r in b["per_clause"])  # one clause per digit here: the same cells


def test_rankings_come_from_the_selection_images_only(model, split, baselines):
    """Change the selection images, keep the test images: the ranked baselines change, the named row and the random ones do not."""
    x, y, sx, sy = split
    other = completeness_baselines(model, "pool2", CLAUSES, x, y, x.flip(0), y.flip(0), random_seeds=5, seed=3)
    assert other["named"] == baselines["named"] and other["random"] == baselines["random"]
    flipped = completeness_baselines(model, "pool2", CLAUSES, x, y, sx[:300], sy[:300], random_seeds=5, seed=3)
    assert flipped["named"] == baselines["named"]
    assert (flipped["top_weight_std"] != baselines["top_weight_std"]) or (flipped["top_contrastive"] != baselines["top_contrastive"])


def test_verdicts_follow_the_stated_rule_and_the_text_prints_them(baselines):
    b = baselines
    for name in ("top_weight_std", "top_contrastive"):
        for f, v in b["verdicts"][name].items():
            d = b["named"]["normalised"][f] - b[name]["normalised"][f]
            assert v["verdict"] == ("beats" if d >= 0.02 else "falls short" if d <= -0.02 else "level")
    md = baselines_markdown(b)
    assert "top 8 by sum \\|W\\| x std (label-free)" in md and "random, 5 seeds" in md and "Rule: each figure is normalised" in md
    assert f"{b['named']['raw']['accuracy']:.3f} ({b['named']['normalised']['accuracy']:.3f})" in md


# ----------------------------------------------------------------------------- (c) the planted circular case

class _Toy(nn.Module):
    """pool2 (6 channels x 3x3, the input itself) read linearly by 3 logits: the shape of the MNIST classifier head."""

    input_shape = (6, 3, 3)

    def __init__(self, W: torch.Tensor):
        super().__init__()
        self.pool2 = nn.Identity()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(54, 3)
        with torch.no_grad():
            self.fc.weight.copy_(W)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool2(x)))


def _planted(n: int, spurious: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0's real evidence is channel 0; channel 3 (also read by logit 0) follows class 0 only when ``spurious``."""
    y = torch.arange(n) % 3
    x = 0.3 + 0.1 * torch.rand(n, 6, 3, 3, generator=gen)
    x[y == 0, 0] += 0.4
    x[y == 1, 1] += 0.4
    x[y == 2, 2] += 0.4
    if spurious:
        x[y == 0, 3] += 0.5
    else:
        x[:, 3] += 0.5 * torch.rand(n, 1, 1, generator=gen)
    return x.clamp(0, 1), y


def _verdicts(model: nn.Module, clauses: list, x: torch.Tensor, y: torch.Tensor) -> dict[int, str]:
    from vision_interp.circuits import closed_form_ablation

    out = {}
    exclude = sorted({c.channel for c in clauses})
    for cl in clauses:
        r = closed_form_ablation(model, ("pool2", cl.channel), x, y, 0, positions=cl.positions, mode="mean", controls=100,
                                 exclude=exclude, generator=7)
        out[cl.channel] = CI.verdict(r.margin_drop, r.percentile, r.specificity)
    return out


def test_planted_channel_passes_the_circular_test_and_fails_on_held_out_data():
    gen = torch.Generator().manual_seed(0)
    W = torch.zeros(3, 6, 9)
    W[0, 0], W[1, 1], W[2, 2] = 1.0, 1.0, 1.0
    W[0, 3] = 1.5  # logit 0 reads channel 3 strongly: attribution will pick it wherever it follows class 0
    model = _Toy(W.reshape(3, 54)).eval()
    sel_x, sel_y = _planted(600, spurious=True, gen=gen)  # the data the clauses are chosen on
    test_x, test_y = _planted(600, spurious=False, gen=gen)  # held-out: channel 3 carries no class information
    a = model.pool2(sel_x)
    clauses = CI.select_clauses(model.fc.weight.detach(), a, sel_y, 0, n_clauses=2)
    assert sorted(c.channel for c in clauses) == [0, 3]  # the planted channel is selected, and ranks first
    circular = _verdicts(model, clauses, sel_x, sel_y)  # tested on the data it was selected on
    held_out = _verdicts(model, clauses, test_x, test_y)
    assert circular == {0: "supported", 3: "supported"}
    assert held_out[0] == "supported" and held_out[3] != "supported"


# ----------------------------------------------------------------------------- (b) and (d) in the committed results

@pytest.fixture(scope="module")
def committed():
    return json.loads(RESULTS.read_text())


def test_selection_images_are_disjoint_from_test_images(committed, data_dir):
    from vision_interp.data import load_mnist

    sd = committed["selection_data"]
    assert sd["selection"]["split"] == "train" and sd["test"]["split"] == "test"
    assert sd["selection"]["stop"] - sd["selection"]["start"] == sd["selection"]["images"] == SELECTION_IMAGES
    train, test = load_mnist("train", data_dir), load_mnist("test", data_dir)
    sel = set(image_hashes(train.images[sd["selection"]["start"]:sd["selection"]["stop"]]))
    idx = range(len(test)) if sd["test"]["indices"] == "all" else sd["test"]["indices"]
    tst = set(image_hashes(test.images[list(idx)]))
    assert len(sel) > 0.99 * sd["selection"]["images"] and len(tst) > 0.99 * sd["test"]["images"]
    assert not sel & tst and sd["identical_images_in_both"] == 0
    assert committed["completeness"]["baselines"]["selection_images"] == sd["selection"]["images"]
    assert committed["circuits"]["selected_on"].startswith(f"{sd['selection']['images']} training images")


def test_committed_report_shows_baselines_and_the_split_interventions(committed):
    b, iv = committed["completeness"]["baselines"], committed["interventions"]
    assert b["k"] == committed["completeness"]["named_cells"] and b["random"]["seeds"] >= 5
    assert b["named"]["raw"]["accuracy"] == pytest.approx(committed["completeness"]["named_parts_alone"]["accuracy"], abs=1e-4)
    c1, c2 = iv["blocks"]["conv1"], iv["blocks"]["conv2"]
    assert c2["role"].startswith("arithmetic check (exact by construction") and c2["mean_abs_error"] < 1e-3 * c2["mean_abs_measured"]
    assert c1["r_95"][0] <= c1["pearson_r"] <= c1["r_95"][1] and c1["cases"] >= 100
    md = (RESULTS.parent / "report.md").read_text()
    assert "## The named account against baselines of the same size" in md
    assert "conv1 features, the real test" in md and "arithmetic check (exact by construction: everything after pool2 is linear)" in md


def test_bootstrap_interval_resamples_images():
    pred = [float(i) for i in range(12)]
    assert bootstrap_r(pred, [2 * p + 1 for p in pred], [i // 3 for i in range(12)], 200, 0) == pytest.approx((1.0, 1.0))
    noisy = [p + (3.0 if i % 2 else -3.0) for i, p in enumerate(pred)]
    lo, hi = bootstrap_r(pred, noisy, [i // 3 for i in range(12)], 500, 0)
    assert lo < hi < 1.0
