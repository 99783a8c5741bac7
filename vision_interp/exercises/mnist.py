"""The MNIST exercise, end to end: evaluate a small CNN, then try to understand it and test the story.

Stages (each prints its progress and time):

1. model: the committed checkpoint, or a fresh one trained from ``seed`` (``retrain``);
2. evaluation: accuracy, per-class accuracy, confusion matrix;
3. first-layer filters: weights as pictures and measured tuning (orientation, width, polarity);
4. feature visualization of every conv channel and class logit, side by side with the channel's
   top-activating test images, and a measured verdict on how much the two agree;
5. attribution: per-class mean integrated gradients, examples (correct and misclassified), a
   pixel-deletion check, and layer attribution naming the last-layer channels behind each class;
6. circuits: for a few classes, the path input strokes -> conv1 channels -> conv2 channels -> logit
   from weights (classifier view, expanded weights) and visualizations;
7. causal checks: ablating the channels the analysis names versus seeded random channel sets.

Everything measured goes into ``results.json``; :mod:`.report` turns it into report.md/report.html
with findings written from the numbers.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import io as vio
from . import analysis as A
from . import figures as fig

__all__ = ["ExerciseConfig", "run_mnist_exercise"]


@dataclass
class ExerciseConfig:
    """Knobs of the exercise. ``quick`` shrinks every stage (for tests); numbers stay real."""

    out: str | os.PathLike = "galleries/mnist_exercise"
    data_dir: str | os.PathLike | None = None
    checkpoint: str | os.PathLike | None = None  # default: the committed models/mnist_cnn.safetensors
    retrain: bool = False
    quick: bool = False
    seed: int = 0
    progress: bool = True
    circuit_classes: tuple[int, ...] | None = None  # default (0, 7); quick: (0,)
    k_channels: int = 3  # channels named per class (from layer attribution)
    random_draws: int | None = None  # random pool2 channel sets (control); default 20 (quick 6)
    conv1_draws: int | None = None  # random conv1 channel sets (circuit control); default 12 (quick 6)
    eval_images: int | None = None  # seeded test subset for examples and ablations; default 5000 (quick 1000)
    featvis_steps: int | None = None  # default 128 (quick 24)
    ig_per_class: int | None = None  # images per class for attribution; default 40 (quick 6)
    ig_steps: int | None = None  # integrated-gradients steps; default 32 (quick 8)
    top_k: int = 8  # top-activating examples per channel
    retrain_epochs: int | None = None  # default 6 (quick 1)
    threads: int | None = None  # torch CPU threads during the run (restored afterwards); default: torch's

    def resolved(self) -> "ExerciseConfig":
        """A copy with every ``None`` default filled for the chosen mode (recorded in results.json)."""
        q = self.quick
        c = ExerciseConfig(**asdict(self))
        c.circuit_classes = tuple(self.circuit_classes) if self.circuit_classes is not None else ((0,) if q else (0, 7))
        c.random_draws = self.random_draws or (6 if q else 20)
        c.conv1_draws = self.conv1_draws or (6 if q else 12)
        c.eval_images = self.eval_images or (1000 if q else 5000)
        c.featvis_steps = self.featvis_steps or (24 if q else 128)
        c.ig_per_class = self.ig_per_class or (6 if q else 40)
        c.ig_steps = self.ig_steps or (8 if q else 32)
        c.retrain_epochs = self.retrain_epochs or (1 if q else 6)
        return c

    def validate(self) -> None:
        bad = [d for d in (self.circuit_classes or ()) if not 0 <= int(d) <= 9]
        if bad:
            raise ValueError(f"circuit classes must be digits 0..9, got {bad}")
        if not 1 <= self.k_channels <= 8:
            raise ValueError(f"k_channels must be in 1..8, got {self.k_channels}")
        for name in ("random_draws", "conv1_draws", "threads", "eval_images", "featvis_steps", "ig_per_class", "ig_steps", "retrain_epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be a positive number, got {v}")
        if self.eval_images is not None and self.eval_images < 100:
            raise ValueError(f"eval_images must be at least 100 for meaningful per-class numbers, got {self.eval_images}")


class _Stages:
    """Prints ``[i/n] name ...`` and the time each stage took (to stderr, so stdout stays clean)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.i = total, enabled, 0
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.i += 1
        if self.enabled:
            print(f"[{self.i}/{self.total}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        self.times[name] = round(dt, 2)
        if self.enabled:
            print(f"[{self.i}/{self.total}] {name}: done in {dt:.1f} s", file=sys.stderr, flush=True)
        return out


def _rounded(d: dict, nd: int) -> dict:
    return {k: (v if isinstance(v, int) else _r(v, nd)) for k, v in d.items()}


def _r(x: float, nd: int = 4) -> float:
    return float(round(float(x), nd)) if x == x else float("nan")


# =============================================================================== the pipeline

class _Exercise:
    def __init__(self, cfg: ExerciseConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.fig_dir = self.out / "figures"
        # Machine-specific paths stay out of the results (they are committed); the data is identified by its hash.
        self.results: dict[str, Any] = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "data_dir"}}
        self.figures: list[dict] = []
        self.gen = torch.Generator().manual_seed(cfg.seed)

    # ------------------------------------------------------------------ helpers
    def add_figure(self, path: Path, section: str, title: str, caption: str) -> None:
        self.figures.append({"file": str(path.relative_to(self.out)), "section": section, "title": title, "caption": caption})

    def class_sample(self, n_per_class: int, correct_only: bool = True) -> torch.Tensor:
        """Seeded indices into the eval set: ``n_per_class`` (correctly classified) images per class."""
        idx = []
        for d in range(10):
            ok = (self.y == d) & (self.pred == self.y) if correct_only else (self.y == d)
            cand = torch.nonzero(ok).flatten()
            perm = cand[torch.randperm(len(cand), generator=self.gen)]
            idx.append(perm[:n_per_class])
        return torch.cat(idx)

    # ------------------------------------------------------------------ 1. model
    def stage_model(self) -> None:
        from ..data import load_mnist
        from ..zoo.mnist_cnn import TrainConfig, mnist_cnn, train_and_save

        cfg = self.cfg
        if cfg.retrain:
            tc = TrainConfig(seed=cfg.seed, epochs=cfg.retrain_epochs, limit=10000 if cfg.quick else None)
            card = train_and_save(cfg.data_dir, self.out / "model", tc, progress=cfg.progress)
            path = self.out / "model" / "mnist_cnn.safetensors"
            self.results["model"] = {"source": "retrained", "checkpoint": str(path.relative_to(self.out)), "card": card}
        else:
            from ..zoo.mnist_cnn import DEFAULT_CHECKPOINT

            path = Path(cfg.checkpoint) if cfg.checkpoint else DEFAULT_CHECKPOINT
            self.results["model"] = {"source": "checkpoint", "checkpoint": _display_path(path), "sha256": vio.sha256_file(path) if path.is_file() else None}
        self.model = mnist_cnn(pretrained=True, path=path)
        self.results["model"]["channels"] = {"conv1": self.model.c1, "conv2": self.model.c2}
        test = load_mnist("test", cfg.data_dir, download=True)
        self.test_x, self.test_y = test.images, test.labels
        # eval subset: seeded, stratified enough by being a random permutation of the test set
        n = min(cfg.eval_images, len(test))
        perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))[:n] if n < len(test) else torch.arange(len(test))
        self.x, self.y = test.images[perm], test.labels[perm]
        self.eval_index = perm

    # ------------------------------------------------------------------ 2. evaluation
    def stage_evaluate(self) -> None:
        from ..zoo.mnist_cnn import evaluate

        ev = evaluate(self.model, self.test_x, self.test_y)
        self.pred = ev["predictions"][self.eval_index]
        with torch.no_grad():
            self.clean_logits = torch.cat([self.model(self.x[i : i + 1000]) for i in range(0, len(self.x), 1000)])
        sub_acc = float((self.pred == self.y).float().mean())
        conf = np.asarray(ev["confusion"])
        off = conf.copy()
        np.fill_diagonal(off, 0)
        pairs = sorted(((int(off[i, j]), i, j) for i in range(10) for j in range(10) if off[i, j] > 0), reverse=True)[:5]
        self.results["evaluation"] = {
            "test_images": len(self.test_y),
            "accuracy": _r(ev["accuracy"], 5),
            "per_class_accuracy": [_r(a, 5) for a in ev["per_class_accuracy"]],
            "confusion": ev["confusion"],
            "top_confusions": [{"true": i, "predicted": j, "count": c} for c, i, j in pairs],
            "eval_subset": {"images": len(self.y), "accuracy": _r(sub_acc, 5)},
        }
        p = fig.heatmap(conf, self.fig_dir / "confusion.png", row_labels=[str(d) for d in range(10)], col_labels=[str(d) for d in range(10)],
                        title=f"Confusion matrix on {len(self.test_y)} test images (accuracy {100 * ev['accuracy']:.2f}%)",
                        xlabel="predicted", ylabel="true", signed=False, fmt="{:.0f}")
        self.add_figure(p, "evaluation", "Confusion matrix", "Rows: true digit; columns: predicted digit; counts on the full test set (log grey scale).")

    # ------------------------------------------------------------------ 3. first-layer filters
    def stage_filters(self) -> None:
        profiles = A.describe_filters(self.model, "conv1")
        tuning = A.stimulus_tuning(self.model, "conv1")
        w = self.model.conv1.weight.detach()[:, 0]  # (C1, 5, 5)
        vmax = float(w.abs().max())
        rows = [[fig.signed_tile(w[c], 30, vmax) for c in range(len(w))]]
        p = fig.labeled_grid(rows, self.fig_dir / "conv1_filters.png", row_labels=["weights"],
                             col_labels=[f"conv1:{c}" for c in range(len(w))], title="", size=30, pixel_scale=3.0)
        self.add_figure(p, "filters", "First-layer filters", "conv1 weights (5x5) on one shared scale: red excitatory, blue inhibitory.")
        best_w = [int(np.argmax((tuning["bars"][c] - tuning["blank"][c]).max(0))) for c in range(len(w))]
        curves = np.stack([tuning["bars"][c][:, best_w[c]] - tuning["blank"][c] for c in range(len(w))])
        p = fig.tuning_curves(tuning["angles"], curves, self.fig_dir / "conv1_tuning.png",
                              labels=[f"conv1:{pr.channel}: {_short_kind(pr.kind)}" for pr in profiles],
                              title="conv1 centre-unit response to bright bars (minus blank) vs bar angle (deg)")
        self.add_figure(p, "filters", "Orientation tuning", "Pre-ReLU response of each conv1 channel's centre unit to bright bars through its centre, at its preferred width, as a function of angle (counter-clockwise from horizontal), minus the response to a blank image. For units classed as edge detectors the angle in the title comes from half-plane edge stimuli instead (see the table).")
        self.filter_profiles = profiles
        agree = [abs(((pr.preferred_angle - pr.weight_angle + 90) % 180) - 90) for pr in profiles if pr.orientation_selectivity > 0.3]
        self.results["filters"] = {
            "profiles": [pr.as_dict() for pr in profiles],
            "orientation_threshold": 0.3,
            "n_oriented": sum(pr.orientation_selectivity > 0.3 and "off" not in pr.kind for pr in profiles),
            "angle_agreement_deg": [_r(a, 1) for a in agree],
        }

    # ------------------------------------------------------------------ 4. feature visualization
    def stage_featvis(self) -> None:
        from ..data.examples import crop_patches, receptive_field, top_activating
        from ..featvis import class_logit, neuron, render, visualize_layer

        cfg = self.cfg
        model = self.model
        res: dict[str, Any] = {}
        self.vis: dict[str, torch.Tensor] = {}
        self.top: dict[str, Any] = {}
        for layer in ("conv1", "conv2"):
            n_ch = getattr(model, "c1" if layer == "conv1" else "c2")
            chan = visualize_layer(model, layer, objective="channel", steps=cfg.featvis_steps, seed=cfg.seed, progress=cfg.progress)
            h, w = _layer_hw(model, layer)
            cy, cx = h // 2, w // 2
            neu = render(model, [neuron(f"{layer}:{c}@{cy},{cx}") for c in range(n_ch)], param="pixel", transforms="small",
                         input_shape=model.input_shape, steps=cfg.featvis_steps, seed=cfg.seed, progress=cfg.progress)
            rf = receptive_field(model, layer)
            top = top_activating(model, layer, self.x, k=cfg.top_k)
            self.vis[layer] = chan.images
            self.top[layer] = (top, rf)
            centre = torch.tensor([[cy, cx]] * n_ch)
            vis_patches = crop_patches(neu.images, centre, rf)  # (C, 1, rh, rw)
            mean_patches, top_patch_sets = [], []
            for c in range(n_ch):
                idx = top.indices[c]
                patches = crop_patches(self.x[idx], top.positions[c], rf)
                top_patch_sets.append(patches)
                mean_patches.append(patches.mean(0))
            corr = np.array([[A.pearson(vis_patches[i], mean_patches[j]) for j in range(n_ch)] for i in range(n_ch)])
            own = np.diag(corr)
            others = (corr.sum(1) - own) / max(n_ch - 1, 1)
            rank1 = int(sum(int(np.argmax(corr[i]) == i) for i in range(n_ch)))
            # channel-objective images vs the mean of the top-activating whole images
            full_mean = torch.stack([self.x[top.indices[c]].mean(0) for c in range(n_ch)])
            full_corr = np.array([A.pearson(chan.images[c], full_mean[c]) for c in range(n_ch)])
            best_real = top.values[:, 0].numpy()
            ratio = neu.values.numpy() / np.maximum(best_real, 1e-6)
            pixel_std = chan.images.flatten(1).std(1)
            res[layer] = {
                "receptive_field": [rf.height, rf.width],
                "channel_vis_pixel_std": [_r(v, 3) for v in pixel_std.tolist()],
                "neuron_vs_top_patches_r": [_r(v, 3) for v in own],
                "neuron_vs_other_channels_patches_r": [_r(v, 3) for v in others],
                "median_r": _r(float(np.median(own)), 3),
                "median_r_mismatched": _r(float(np.median(others)), 3),
                "self_identified": rank1,
                "channels": n_ch,
                "channel_vis_vs_mean_top_images_r": [_r(v, 3) for v in full_corr],
                "vis_activation_over_best_example": [_r(v, 2) for v in ratio],
                "channel_objective_activation": [_r(v, 3) for v in chan.activations.tolist()] if chan.activations is not None else None,
                "top_examples": [[int(self.eval_index[i]) for i in top.indices[c]] for c in range(n_ch)],
                "top_values": [[_r(v, 3) for v in top.values[c].tolist()] for c in range(n_ch)],
            }
            rows, labels = [], []
            for c in range(n_ch):
                rows.append([chan.images[c], vis_patches[c], mean_patches[c]] + [p for p in top_patch_sets[c][:6]])
                labels.append(f"{layer}:{c}  r={own[c]:+.2f}")
            p = fig.labeled_grid(rows, self.fig_dir / f"featvis_{layer}.png", row_labels=labels,
                                 col_labels=["channel\nvis", "neuron\nvis (RF)", "mean of\ntop RF"] + [f"top\n{i + 1}" for i in range(6)],
                                 pixel_scale=1.6)
            self.add_figure(p, "featvis", f"{layer}: visualizations vs top-activating test images",
                            f"Per channel: the channel-objective visualization (28x28), the centre-neuron visualization cropped to its "
                            f"{rf.height}x{rf.width} receptive field, the mean of the {cfg.top_k} top-activating receptive-field patches from "
                            f"{len(self.x)} test images, and the top 6 patches. r = Pearson correlation between the neuron visualization and the mean top patch.")
        # class logits
        logit_vis = render(model, [class_logit(d) for d in range(10)], param="pixel", transforms="small", input_shape=model.input_shape,
                           steps=cfg.featvis_steps, seed=cfg.seed, progress=cfg.progress)
        class_means = torch.stack([self.x[self.y == d].mean(0) for d in range(10)])
        corr = np.array([[A.pearson(logit_vis.images[i], class_means[j]) for j in range(10)] for i in range(10)])
        with torch.no_grad():
            probs = torch.softmax(model(logit_vis.images), 1)
        top_logit = [torch.nonzero(self.y == d).flatten()[self.clean_logits[self.y == d, d].topk(3).indices] for d in range(10)]
        self.vis["logits"] = logit_vis.images
        res["logits"] = {
            "vis_vs_class_mean_r": [_r(corr[d, d], 3) for d in range(10)],
            "vis_vs_other_class_means_r": [_r((corr[d].sum() - corr[d, d]) / 9, 3) for d in range(10)],
            "self_identified": int(sum(int(np.argmax(corr[d]) == d) for d in range(10))),
            "model_confidence_on_vis": [_r(float(probs[d, d]), 4) for d in range(10)],
            "median_r": _r(float(np.median(np.diag(corr))), 3),
        }
        rows = [[logit_vis.images[d], class_means[d]] + [self.x[i] for i in top_logit[d]] for d in range(10)]
        p = fig.labeled_grid(rows, self.fig_dir / "featvis_logits.png", row_labels=[f"logit {d}  r={corr[d, d]:+.2f}" for d in range(10)],
                             col_labels=["logit\nvis", "class\nmean", "top\n1", "top\n2", "top\n3"], pixel_scale=1.6)
        self.add_figure(p, "featvis", "Class-logit visualizations", "Per digit: the image optimised to maximise the logit, the mean test image of that digit, and the 3 test images with the highest logit. r = correlation between visualization and class mean.")
        self.results["featvis"] = res

    # ------------------------------------------------------------------ 5. attribution
    def stage_attribution(self) -> None:
        from ..attribution import attribute, layer_attribution

        cfg = self.cfg
        model = self.model
        ig = dict(method="integrated_gradients", n_steps=cfg.ig_steps)
        idx = self.class_sample(cfg.ig_per_class)
        xs, ys = self.x[idx], self.y[idx]
        attr = torch.cat([attribute(model, xs[i : i + 64], ys[i : i + 64], baselines=torch.zeros_like(xs[i : i + 64]), **ig) for i in range(0, len(xs), 64)])
        means = torch.stack([attr[ys == d].mean(0) for d in range(10)])
        # where does the evidence sit? share of positive IG on ink pixels vs share of pixels that are ink
        ink = xs > 0.1
        pos = attr.clamp_min(0)
        ink_share = float((pos * ink).sum() / pos.sum().clamp_min(1e-12))
        ink_frac = float(ink.float().mean())
        neg_share = float(attr.clamp_max(0).abs().sum() / attr.abs().sum().clamp_min(1e-12))
        # deletion check: erase the 10% of ink pixels with the most positive IG vs 10% random ink pixels
        with torch.no_grad():
            base_logit = model(xs).gather(1, ys[:, None])[:, 0]
            x_top, x_rand = xs.clone(), xs.clone()
            for i in range(len(xs)):
                ink_i = torch.nonzero(ink[i].flatten()).flatten()
                k = max(1, int(round(0.1 * len(ink_i))))
                scores = attr[i].flatten()[ink_i]
                x_top[i].view(-1)[ink_i[scores.topk(k).indices]] = 0.0
                x_rand[i].view(-1)[ink_i[torch.randperm(len(ink_i), generator=self.gen)[:k]]] = 0.0
            drop_top = base_logit - model(x_top).gather(1, ys[:, None])[:, 0]
            drop_rand = base_logit - model(x_rand).gather(1, ys[:, None])[:, 0]
            acc_top = float((model(x_top).argmax(1) == ys).float().mean())
            acc_rand = float((model(x_rand).argmax(1) == ys).float().mean())
        # IG completeness (sum of attributions vs logit difference to the black baseline)
        with torch.no_grad():
            f0 = model(torch.zeros_like(xs)).gather(1, ys[:, None])[:, 0]
        completeness = (attr.flatten(1).sum(1) - (base_logit - f0)).abs() / (base_logit - f0).abs().clamp_min(1e-6)

        class_mean_imgs = torch.stack([xs[ys == d].mean(0) for d in range(10)])
        rows = [[class_mean_imgs[d], fig.signed_tile(means[d]), fig.tile(_overlay(class_mean_imgs[d], means[d]))] for d in range(10)]
        p = fig.labeled_grid(rows, self.fig_dir / "ig_class_means.png", row_labels=[f"digit {d}" for d in range(10)],
                             col_labels=["mean digit", "mean IG", "overlay"], pixel_scale=2.0)
        self.add_figure(p, "attribution", "Per-class mean integrated gradients",
                        f"Mean integrated-gradients map towards the true class over {cfg.ig_per_class} correctly classified test images per digit "
                        f"(black baseline, {cfg.ig_steps} steps), each map on its own symmetric scale: red raises the logit, blue lowers it.")

        # examples: one correct per class, and misclassified digits (IG to predicted and to true class)
        correct = idx.view(10, -1)[:, 0]
        wrong = torch.nonzero(self.pred != self.y).flatten()[:8]
        ex_rows, ex_labels = [], []
        for i in correct.tolist():
            a = attribute(model, self.x[i : i + 1], int(self.y[i]), baselines=torch.zeros_like(self.x[i : i + 1]), **ig)[0]
            ex_rows.append([self.x[i], fig.tile(_overlay(self.x[i], a)), fig.signed_tile(a)])
            ex_labels.append(f"{int(self.y[i])} (correct)")
        p = fig.labeled_grid(ex_rows, self.fig_dir / "ig_examples_correct.png", row_labels=ex_labels,
                             col_labels=["input", "IG\noverlay", "IG"], pixel_scale=2.0)
        self.add_figure(p, "attribution", "Correctly classified examples", "Integrated gradients towards the true (= predicted) class.")
        mis = []
        if len(wrong):
            rows, labels = [], []
            for i in wrong.tolist():
                t, pr = int(self.y[i]), int(self.pred[i])
                xi = self.x[i : i + 1]
                a_pred = attribute(model, xi, pr, baselines=torch.zeros_like(xi), **ig)[0]
                a_true = attribute(model, xi, t, baselines=torch.zeros_like(xi), **ig)[0]
                vmax = float(torch.maximum(a_pred.abs().max(), a_true.abs().max()))
                rows.append([self.x[i], fig.signed_tile(a_pred, 28, vmax), fig.signed_tile(a_true, 28, vmax)])
                labels.append(f"true {t}, pred {pr}")
                lg = self.clean_logits[i]
                mis.append({"test_index": int(self.eval_index[i]), "true": t, "predicted": pr, "logit_true": _r(lg[t], 3), "logit_pred": _r(lg[pr], 3)})
            p = fig.labeled_grid(rows, self.fig_dir / "ig_examples_misclassified.png", row_labels=labels,
                                 col_labels=["input", "IG ->\npredicted", "IG ->\ntrue"], pixel_scale=2.0)
            self.add_figure(p, "attribution", "Misclassified examples", "Integrated gradients towards the (wrong) predicted class and towards the true class, on one shared scale per row: red pixels raise that logit, blue ones lower it.")

        # layer attribution: which pool2 channels carry each class
        chan = np.zeros((10, self.model.c2))
        for d in range(10):
            xd = xs[ys == d]
            la = layer_attribution(model, xd, "pool2", d, baselines=torch.zeros_like(xd), **ig)
            chan[d] = la.channels.mean(0).numpy()
        share = chan / np.abs(chan).sum(1, keepdims=True)
        k = cfg.k_channels
        named = {d: [int(c) for c in np.argsort(-chan[d])[:k]] for d in range(10)}
        self.named = named
        self.channel_share = share
        p = fig.heatmap(share, self.fig_dir / "layer_attribution_pool2.png", row_labels=[f"class {d}" for d in range(10)],
                        col_labels=[str(c) for c in range(self.model.c2)],
                        title="Share of each class's IG attribution carried by each pool2 channel",
                        xlabel="pool2 channel", ylabel="target class", signed=True, fmt="{:.2f}",
                        highlight=[(d, c) for d in range(10) for c in named[d]])
        self.add_figure(p, "attribution", "Layer attribution: pool2 channels per class",
                        f"Layer integrated gradients of each class logit onto the 16 pool2 channels (summed over positions, averaged over the class's images), "
                        f"as a signed share of the total |attribution|. Boxes: the {k} channels named for each class (tested by ablation below).")
        self.results["attribution"] = {
            "images_per_class": cfg.ig_per_class,
            "ig_steps": cfg.ig_steps,
            "positive_ig_on_ink_share": _r(ink_share, 4),
            "ink_pixel_fraction": _r(ink_frac, 4),
            "negative_ig_share": _r(neg_share, 4),
            "completeness_relative_error_median": _r(float(completeness.median()), 4),
            "deletion": {
                "fraction_of_ink_erased": 0.1,
                "logit_drop_top_ig": _r(float(drop_top.mean()), 3),
                "logit_drop_random": _r(float(drop_rand.mean()), 3),
                "accuracy_top_ig": _r(acc_top, 4),
                "accuracy_random": _r(acc_rand, 4),
                "images": len(xs),
            },
            "pool2_channel_attribution": [[_r(v, 4) for v in row] for row in chan],
            "pool2_channel_share": [[_r(v, 4) for v in row] for row in share],
            "named_channels": {str(d): named[d] for d in range(10)},
            "named_share": {str(d): _r(float(share[d, named[d]].sum()), 4) for d in range(10)},
            "misclassified": mis,
            "misclassified_in_eval": int((self.pred != self.y).sum()),
        }

    # ------------------------------------------------------------------ 6. circuits
    def stage_circuits(self) -> None:
        from ..attribution import attribute
        from ..circuits import classifier_view, expanded_weights, top_connections

        model = self.model
        cv = classifier_view(model)  # (10, C2, 7, 7)
        exp_w = expanded_weights(model, "conv1", "conv2")  # (C2, C1, kh, kw)
        with torch.no_grad():
            acts = torch.cat([_capture_one(model, self.x[i : i + 1000], "pool2") for i in range(0, len(self.x), 1000)])
        contrib = torch.einsum("dchw,nchw->ndc", cv, acts)  # (N, 10, C2): exact direct contributions to each logit
        out: dict[str, Any] = {}
        self.circuit_conv1: dict[int, list[int]] = {}
        conv2_vis = self.vis["conv2"]
        top2, rf2 = self.top["conv2"]
        for d in self.cfg.circuit_classes:
            chans = self.named[d]
            own = contrib[self.y == d, d]  # (n_d, C2)
            pos_total = own.clamp_min(0).sum(1)
            named_share = float((own[:, chans].clamp_min(0).sum(1) / pos_total.clamp_min(1e-9)).mean())
            other = contrib[self.y != d, d]
            entries, rows, labels = [], [], []
            conv1_scores: dict[int, float] = {}
            for c in chans:
                conns = top_connections(model, f"conv2:{c}", k=3, direction="inputs", layer="conv1")
                exc = [(u, float(s)) for u, s in conns["excitatory"]]
                inh = [(u, float(s)) for u, s in conns["inhibitory"]]
                for u, s in exc:
                    ch = int(u.split(":")[1].split("@")[0])
                    conv1_scores[ch] = conv1_scores.get(ch, 0.0) + s
                # input strokes that drive the channel on the digit-d image where it adds most to logit d
                d_idx = torch.nonzero(self.y == d).flatten()
                i_best = int(d_idx[own[:, c].argmax()])
                xi = self.x[i_best : i_best + 1]
                a = attribute(model, xi, f"pool2:{c}", method="integrated_gradients", n_steps=self.cfg.ig_steps,
                              baselines=torch.zeros_like(xi))[0]
                wmap = cv[d, c]
                entries.append({
                    "conv2_channel": c,
                    "attribution_share": _r(float(self.channel_share[d, c]), 4),
                    "mean_direct_contribution_on_class": _r(float(own[:, c].mean()), 3),
                    "mean_direct_contribution_on_other_classes": _r(float(other[:, c].mean()), 3),
                    "classifier_weight_positive_fraction": _r(float((wmap > 0).float().mean()), 3),
                    "excitatory_conv1_inputs": [[u, _r(s, 4)] for u, s in exc],
                    "inhibitory_conv1_inputs": [[u, _r(s, 4)] for u, s in inh],
                    "example_test_index": int(self.eval_index[i_best]),
                    "example_direct_contribution": _r(float(contrib[i_best, d, c]), 3),
                })
                c1 = [int(u.split(":")[1].split("@")[0]) for u, _ in exc[:2]]
                vmax = float(exp_w[c].abs().max())
                w1 = model.conv1.weight.detach()[:, 0]
                row = [conv2_vis[c], fig.tile(_overlay(xi[0], a)), fig.signed_tile(wmap)]
                for ch in c1:
                    row += [fig.signed_tile(exp_w[c, ch], 28, vmax), fig.signed_tile(w1[ch], 28)]
                rows.append(row)
                labels.append(f"conv2:{c} <- conv1:{','.join(map(str, c1))}")
            named_conv1 = sorted(conv1_scores, key=lambda ch: -conv1_scores[ch])[:2]
            self.circuit_conv1[d] = named_conv1
            p = fig.labeled_grid(rows, self.fig_dir / f"circuit_class{d}.png", row_labels=labels,
                                 col_labels=["conv2\nvis", f"strokes on\na {d} (IG)", f"fc weights\n-> logit {d}", "expanded\nw (1st)", "conv1\nfilter", "expanded\nw (2nd)", "conv1\nfilter"],
                                 pixel_scale=2.0)
            self.add_figure(p, "circuits", f"Circuit for digit {d}",
                            f"Rows: the conv2 channels named for digit {d} by layer attribution. Columns: the channel's visualization; integrated gradients "
                            f"of the channel's mean pooled activation on the test {d} where it adds most to logit {d} (which input strokes drive it); the "
                            f"classifier view (fc weights from this channel's 7x7 pooled map to logit {d}: red = evidence for {d}); then its two strongest "
                            f"excitatory conv1 inputs, each as the expanded conv1->conv2 kernel (through ReLU and pooling, linearised) and that conv1 filter.")
            out[str(d)] = {
                "conv2_channels": entries,
                "named_direct_share_of_positive_logit": _r(named_share, 4),
                "named_conv1_channels": named_conv1,
                "conv1_scores": {str(k): _r(v, 4) for k, v in conv1_scores.items()},
                "conv1_kinds": {str(ch): self.filter_profiles[ch].kind for ch in named_conv1},
            }
        self.results["circuits"] = out

    # ------------------------------------------------------------------ 7. causal checks
    def stage_ablations(self) -> None:
        model, x, y = self.model, self.x, self.y
        cfg = self.cfg
        clean = self.clean_logits
        means2 = A.channel_means(model, x, "pool2")
        res: dict[str, Any] = {"layer": "pool2", "eval_images": len(x), "k": cfg.k_channels, "draws": cfg.random_draws}
        # random controls: each draw serves every class (one forward pass per draw)
        draws = A.random_channel_sets(model.c2, cfg.k_channels, cfg.random_draws, cfg.seed)
        rand = [A.ablation_effects(clean, A.ablated_logits(model, x, "pool2", s, "mean", means2), y) for s in draws]
        per_class = []
        for d in range(10):
            named = self.named[d]
            eff_m = A.ablation_effects(clean, A.ablated_logits(model, x, "pool2", named, "mean", means2), y)
            eff_z = A.ablation_effects(clean, A.ablated_logits(model, x, "pool2", named, "zero"), y) if d in cfg.circuit_classes else None
            others = [k for k in range(10) if k != d]
            ctrl_acc = [r["accuracy_drop"][d] for r in rand]
            ctrl_logit = [r["logit_drop"][d] for r in rand]
            ctrl_margin = [r["margin_drop"][d] for r in rand]
            per_class.append({
                "class": d,
                "channels": named,
                "clean_accuracy": _r(float((clean[y == d].argmax(1) == d).float().mean()), 4),
                "mean_ablation": {
                    "accuracy_drop": _r(eff_m["accuracy_drop"][d], 4),
                    "logit_drop": _r(eff_m["logit_drop"][d], 3),
                    "margin_drop": _r(eff_m["margin_drop"][d], 3),
                    "other_classes_accuracy_drop": _r(float(np.mean([eff_m["accuracy_drop"][k] for k in others])), 4),
                    "other_classes_margin_drop": _r(float(np.mean([eff_m["margin_drop"][k] for k in others])), 3),
                },
                "zero_ablation": None if eff_z is None else {
                    "accuracy_drop": _r(eff_z["accuracy_drop"][d], 4),
                    "margin_drop": _r(eff_z["margin_drop"][d], 3),
                    "other_classes_accuracy_drop": _r(float(np.mean([eff_z["accuracy_drop"][k] for k in others])), 4),
                },
                "random_control": {
                    "accuracy_drop": _rounded(A.summarize(ctrl_acc), 4),
                    "logit_drop": _rounded(A.summarize(ctrl_logit), 3),
                    "margin_drop": _rounded(A.summarize(ctrl_margin), 3),
                    "fraction_at_least_as_large_margin": _r(float(np.mean([m >= eff_m["margin_drop"][d] for m in ctrl_margin])), 3),
                },
            })
        res["per_class"] = per_class
        res["random_sets"] = draws
        named_m = np.array([pc["mean_ablation"]["margin_drop"] for pc in per_class])
        ctrl_m = np.array([pc["random_control"]["margin_drop"]["mean"] for pc in per_class])
        res["summary"] = {
            "classes_named_beats_random_margin": int((named_m > ctrl_m).sum()),
            "mean_named_margin_drop": _r(float(named_m.mean()), 3),
            "mean_random_margin_drop": _r(float(ctrl_m.mean()), 3),
            "mean_named_accuracy_drop": _r(float(np.mean([pc["mean_ablation"]["accuracy_drop"] for pc in per_class])), 4),
            "mean_random_accuracy_drop": _r(float(np.mean([pc["random_control"]["accuracy_drop"]["mean"] for pc in per_class])), 4),
            "mean_named_other_classes_margin_drop": _r(float(np.mean([pc["mean_ablation"]["other_classes_margin_drop"] for pc in per_class])), 3),
        }
        usage = {c: [d for d in range(10) if c in self.named[d]] for c in range(model.c2)}
        res["channel_reuse"] = {str(c): v for c, v in usage.items() if v}
        labels = [str(d) for d in range(10)]
        p = fig.bar_comparison(labels, named_m, ctrl_m, [pc["random_control"]["margin_drop"]["std"] for pc in per_class],
                               self.fig_dir / "ablation_pool2_margin.png",
                               title=f"Mean-ablating the {cfg.k_channels} named pool2 channels vs {cfg.random_draws} random {cfg.k_channels}-channel sets",
                               ylabel="drop in logit margin of the true class")
        self.add_figure(p, "ablations", "Ablation: named vs random pool2 channels (margin)",
                        f"For each digit d: mean drop, over the d test images among {len(x)}, of (logit d minus the largest other logit) when the "
                        f"{cfg.k_channels} pool2 channels named for d are replaced by their dataset mean (red), vs random sets of {cfg.k_channels} channels "
                        f"(grey, mean and standard deviation over {cfg.random_draws} seeded draws).")
        p = fig.bar_comparison(labels, [100 * pc["mean_ablation"]["accuracy_drop"] for pc in per_class],
                               [100 * pc["random_control"]["accuracy_drop"]["mean"] for pc in per_class],
                               [100 * pc["random_control"]["accuracy_drop"]["std"] for pc in per_class],
                               self.fig_dir / "ablation_pool2_accuracy.png",
                               title="Accuracy drop of each digit (percentage points)", ylabel="accuracy drop (points)")
        self.add_figure(p, "ablations", "Ablation: named vs random pool2 channels (accuracy)", "As above, as the fall in the digit's test accuracy.")

        # the circuit's conv1 channels (ablated after pooling, i.e. everything conv2 sees of them)
        means1 = A.channel_means(model, x, "pool1")
        n1 = len(next(iter(self.circuit_conv1.values()))) if self.circuit_conv1 else 2
        draws1 = A.random_channel_sets(model.c1, n1, cfg.conv1_draws, cfg.seed + 1)
        rand1 = [A.ablation_effects(clean, A.ablated_logits(model, x, "pool1", s, "mean", means1), y) for s in draws1]
        circ = {}
        for d, chs in self.circuit_conv1.items():
            eff = A.ablation_effects(clean, A.ablated_logits(model, x, "pool1", chs, "mean", means1), y)
            others = [k for k in range(10) if k != d]
            ctrl = [r["margin_drop"][d] for r in rand1]
            circ[str(d)] = {
                "conv1_channels": chs,
                "margin_drop": _r(eff["margin_drop"][d], 3),
                "accuracy_drop": _r(eff["accuracy_drop"][d], 4),
                "other_classes_margin_drop": _r(float(np.mean([eff["margin_drop"][k] for k in others])), 3),
                "random_control_margin_drop": _rounded(A.summarize(ctrl), 3),
                "random_control_accuracy_drop": _rounded(A.summarize([r["accuracy_drop"][d] for r in rand1]), 4),
                "fraction_random_at_least_as_large": _r(float(np.mean([m >= eff["margin_drop"][d] for m in ctrl])), 3),
            }
        res["conv1_circuit"] = circ
        res["conv1_random_sets"] = draws1
        self.results["ablations"] = res


# =============================================================================== small helpers

def _overlay(image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    from ..images import overlay

    return overlay(image, heat[0] if heat.ndim == 3 else heat, alpha=0.75)


def _short_kind(kind: str) -> str:
    """'oriented edge detector at 34 deg' -> 'edge 34 deg' (figure titles have little room)."""
    k = kind.split(":")[0].replace("oriented ", "").replace(" detector", "").replace("bar/stroke", "bar")
    return k.split(",")[0]


def _display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (reports stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _capture_one(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    from ..capture import capture

    return capture(model, x, [layer], detach=True)[layer]


def _layer_hw(model, layer: str) -> tuple[int, int]:
    from ..units import layer_shape

    s = layer_shape(model, layer)
    return int(s[-2]), int(s[-1])


# =============================================================================== entry point

def run_mnist_exercise(config: ExerciseConfig | None = None, **overrides: Any) -> dict:
    """Run the whole exercise and write ``report.md``, ``report.html``, ``results.json`` and figures.

    Returns the results dictionary (also written as JSON). Deterministic for a given seed (and
    thread count). Errors in the configuration or missing data are raised before any work.
    """
    from ..data.mnist import ensure_mnist
    from ..zoo.mnist_cnn import DEFAULT_CHECKPOINT

    cfg = (config or ExerciseConfig())
    if overrides:
        cfg = ExerciseConfig(**{**asdict(cfg), **overrides})
    cfg.validate()
    cfg = cfg.resolved()
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else DEFAULT_CHECKPOINT
    if not cfg.retrain and not ckpt.is_file():
        raise FileNotFoundError(f"no MNIST CNN checkpoint at {ckpt}; pass --retrain to train one")
    ensure_mnist(cfg.data_dir, download=True, progress=cfg.progress)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_stages(cfg, out)
    finally:
        torch.set_num_threads(old_threads)


def _run_stages(cfg: ExerciseConfig, out: Path) -> dict:
    from .report import write_report

    ex = _Exercise(cfg)
    t0 = time.perf_counter()
    stages = _Stages(8, cfg.progress)
    stages.run("model (train)" if cfg.retrain else "model (load checkpoint)", ex.stage_model)
    stages.run("evaluation", ex.stage_evaluate)
    stages.run("first-layer filters", ex.stage_filters)
    stages.run("feature visualization", ex.stage_featvis)
    stages.run("attribution", ex.stage_attribution)
    stages.run("circuits", ex.stage_circuits)
    stages.run("ablations", ex.stage_ablations)
    ex.results["figures"] = ex.figures
    ex.results["timing_seconds"] = dict(stages.times)

    def _write() -> None:
        ex.results["timing_seconds"]["total"] = round(time.perf_counter() - t0, 2)
        write_report(ex.results, out)

    stages.run("report", _write)
    ex.results["timing_seconds"]["report"] = stages.times["report"]
    vio.save_json(out / "results.json", _jsonable(ex.results))
    return ex.results


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
