"""The MNIST exercise, end to end: evaluate a small CNN, then try to understand it and test the story.

Stages (each prints its progress and time; the mechanism stages live in :mod:`.stages`):

1. model: the committed checkpoint, or a fresh one trained from ``seed`` (``retrain``);
2. evaluation: accuracy, per-class accuracy, confusion matrix;
3. conv1 exactly: the exact optimal stimulus of each unit, tuning to synthetic strokes, checked labels;
4. feature visualization of every conv1/conv2 centre neuron (vs the best test image) and every logit;
5. conv2 named from evidence (top/bottom patches, class histogram, synthetic parts at 9 positions);
6. a circuit for every digit from the classifier weights, each clause ablated against 100 controls;
7. attribution with four IG baselines and occlusion, deletion/insertion faithfulness;
8. the most frequent confusions and the channels that push the wrong way;
9. a deep dive: conv2:4 rewritten by hand from a written description.

Selection and test use different data (issue 37): conv2 names, clauses and their positions, and the
completeness baselines' rankings are chosen on the last training images (:data:`SELECTION_IMAGES`); every
verdict is measured on the test images. ``results["selection_data"]`` records both.

Everything measured goes into ``results.json``; :mod:`.report` turns it into report.md/report.html
with findings written from the numbers.

Stages 3-9 are written to ``<out>/.stages/`` as each finishes (:mod:`.resume`); a rerun after a failure
with the same checkpoint, data and settings reuses them and computes only the rest. The folder is
removed once ``results.json`` is written. ``--retrain`` reuses a finished ``<out>/model`` the same way.
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
from ..environment import environment_report
from .resume import StageCache
from .resume import fingerprint as stage_fingerprint

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
    circuit_classes: tuple[int, ...] | None = None  # digits whose circuit is traced; default all ten
    k_channels: int = 3  # clauses per digit (channel + positions, by class-contrastive direct logit attribution)
    random_draws: int | None = None  # random controls per clause; default 100 (at least 100 for a verdict)
    conv1_draws: int | None = None  # random conv1 channel sets (circuit control); default 12 (quick 6)
    eval_images: int | None = None  # seeded test subset for all analyses; default 10000 = the whole test set (quick 2000)
    featvis_steps: int | None = None  # default: featvis's default for the model (the steps run are recorded in results['featvis'])
    ig_per_class: int | None = None  # images per class for attribution; default 40 (quick 6)
    ig_steps: int | None = None  # integrated-gradients steps; default 16 (quick 8)
    top_k: int = 8  # top-activating examples per channel
    retrain_epochs: int | None = None  # default 6 (quick 1)
    threads: int | None = None  # torch CPU threads during the run (restored afterwards); default: torch's

    def resolved(self) -> "ExerciseConfig":
        """A copy with every ``None`` default filled for the chosen mode (recorded in results.json)."""
        q = self.quick
        c = ExerciseConfig(**asdict(self))
        c.circuit_classes = tuple(self.circuit_classes) if self.circuit_classes is not None else tuple(range(10))
        c.random_draws = self.random_draws or 100
        c.conv1_draws = self.conv1_draws or (6 if q else 12)
        c.eval_images = self.eval_images or (2000 if q else 10000)
        c.ig_per_class = self.ig_per_class or (6 if q else 40)
        c.ig_steps = self.ig_steps or (8 if q else 16)
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
        if self.random_draws is not None and self.random_draws < 100:
            raise ValueError(f"random_draws (random controls per clause) must be at least 100 for a percentile verdict, got {self.random_draws}")
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

    def run_cached(self, name: str, cache: "StageCache", key: str, fn: Callable[[Any], None], ex: "_Exercise") -> bool:
        """Like :meth:`run`, but a stage finished by an earlier, interrupted run is restored instead of recomputed.

        Returns whether it was reused; its recorded time is then the time it took when it was computed.
        """
        reused, seconds = cache.run(ex, key, fn, lambda call: self._timed(name, call))
        if reused:
            self.i += 1
            self.times[name] = round(seconds, 2)  # the time it took when it was computed
            if self.enabled:
                print(f"[{self.i}/{self.total}] {name}: reused from {cache.folder / key}.json", file=sys.stderr, flush=True)
        return reused

    def _timed(self, name: str, call: Callable[[], None]) -> float:
        self.run(name, call)
        return self.times[name]


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
            card = retrained_card(self.out / "model", tc, cfg.data_dir)
            if card is None:  # training itself resumes from its last finished epoch after an interruption
                card = train_and_save(cfg.data_dir, self.out / "model", tc, progress=cfg.progress)
            elif cfg.progress:
                print(f"mnist-exercise: reusing {self.out / 'model'}/mnist_cnn.safetensors, trained earlier with the same settings and data",
                      file=sys.stderr)
            path = self.out / "model" / "mnist_cnn.safetensors"
            self.results["model"] = {"source": "retrained", "checkpoint": str(path.relative_to(self.out)), "card": card}
        else:
            from ..zoo.mnist_cnn import DEFAULT_CHECKPOINT

            path = Path(cfg.checkpoint) if cfg.checkpoint else DEFAULT_CHECKPOINT
            self.results["model"] = {"source": "checkpoint", "checkpoint": _display_path(path), "sha256": vio.sha256_file(path) if path.is_file() else None}
        self.model = mnist_cnn(pretrained=True, path=path)
        from ..gallery.build import weights_fingerprint

        self.results["model"]["fingerprint"] = weights_fingerprint(self.model)
        self.results["model"]["channels"] = {"conv1": self.model.c1, "conv2": self.model.c2}
        test = load_mnist("test", cfg.data_dir, download=True)
        self.test_x, self.test_y = test.images, test.labels
        # eval subset: seeded, stratified enough by being a random permutation of the test set
        n = min(cfg.eval_images, len(test))
        perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(cfg.seed))[:n] if n < len(test) else torch.arange(len(test))
        self.x, self.y = test.images[perm], test.labels[perm]
        self.eval_index = perm
        # Selection data (issue 37): clauses, their positions and the baselines' rankings are chosen on a slice of
        # the TRAINING set; every verdict is measured on the test images above.
        train = load_mnist("train", cfg.data_dir, download=True)
        stop = len(train)
        start = max(0, stop - (SELECTION_IMAGES_QUICK if cfg.quick else SELECTION_IMAGES))
        self.sel_x, self.sel_y = train.images[start:stop], train.labels[start:stop]
        self.results["selection_data"] = selection_record(self.sel_x, self.x, start, stop, self.eval_index)

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
        from .plots import annotated_heatmap

        p = annotated_heatmap(conf, self.fig_dir / "confusion.png", row_labels=[str(d) for d in range(10)], col_labels=[str(d) for d in range(10)],
                              title=f"Confusion matrix on {len(self.test_y)} test images (accuracy {100 * ev['accuracy']:.2f}%)",
                              xlabel="predicted", ylabel="true", fmt="{:.0f}", counts=True)
        self.add_figure(p, "evaluation", "Confusion matrix", "Rows: true digit; columns: predicted digit; counts on the full test set (log grey scale).")


# =============================================================================== small helpers

SELECTION_IMAGES = 10000  # the last training images: where clauses and rankings are chosen
SELECTION_IMAGES_QUICK = 2000


def image_hashes(images: torch.Tensor) -> list[str]:
    """One sha256 per image of its 8-bit pixels: identical digits across splits have the same hash."""
    import hashlib

    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).reshape(len(images), -1).numpy()
    return [hashlib.sha256(row.tobytes()).hexdigest() for row in u8]


def selection_record(sel_x: torch.Tensor, test_x: torch.Tensor, start: int, stop: int, eval_index: torch.Tensor) -> dict:
    """What results.json records about the selection and test data: which images, and that no selection image is
    pixel-identical to a test image (measured here, and re-checked by a test from the recorded indices)."""
    import hashlib

    sel, test = set(image_hashes(sel_x)), set(image_hashes(test_x))
    idx = eval_index.tolist()
    return {"selection": {"split": "train", "start": start, "stop": stop, "images": stop - start},
            "test": {"split": "test", "images": len(idx),
                     "indices": "all" if idx == list(range(len(idx))) else idx,
                     "indices_sha256": hashlib.sha256(",".join(map(str, idx)).encode()).hexdigest()},
            "identical_images_in_both": len(sel & test),
            "rule": "clauses, their positions and the baselines' rankings are chosen on the selection images; every verdict, "
                    "ablation and completeness figure is measured on the test images"}

def retrained_card(model_dir: Path, config: Any, data_dir: str | os.PathLike | None) -> dict | None:
    """The card of a model already trained into ``model_dir`` with exactly ``config`` on the same data, else None.

    A rerun of ``--retrain`` after a failure in a later stage reuses the finished checkpoint (training is
    deterministic, so retraining would give the same weights). The weights must still match the card's hash.
    """
    from ..data.mnist import data_checksum

    weights, card_path = model_dir / "mnist_cnn.safetensors", model_dir / "mnist_cnn.json"
    if not (weights.is_file() and card_path.is_file()):
        return None
    try:
        card = vio.load_json(card_path)
    except vio.CorruptFileError:
        return None
    if not isinstance(card, dict) or card.get("config") != asdict(config) or card.get("data_sha256") != data_checksum(data_dir):
        return None
    if card.pop("weights_sha256", None) != vio.sha256_file(weights):
        return None
    return card  # as train_and_save returns it (without the weights hash that the saved copy adds)


def _display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (reports stay portable)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
    from . import stages as S

    steps = [("conv1 (exact optimum, tuning)", "conv1", S.stage_conv1), ("feature visualization", "featvis", S.stage_featvis),
             ("conv2 (naming)", "conv2", S.stage_conv2), ("circuits and causal tests", "circuits", S.stage_circuits),
             ("completeness (named parts, replacement model)", "completeness", S.stage_completeness),
             ("attribution", "attribution", S.stage_attribution), ("confusions", "confusions", S.stage_confusions),
             ("deep dive", "deep_dive", S.stage_deep_dive)]
    stages = _Stages(3 + len(steps), cfg.progress)
    stages.run("model (train)" if cfg.retrain else "model (load checkpoint)", ex.stage_model)
    stages.run("evaluation", ex.stage_evaluate)
    cache = StageCache(out, _stage_fingerprint(ex))
    reused_seconds = 0.0  # the total counts the time reused stages took when they were computed
    for name, key, fn in steps:
        if stages.run_cached(name, cache, key, fn, ex):
            reused_seconds += stages.times[name]
    if cache.reused:
        print(f"mnist-exercise: reused {len(cache.reused)} stage(s) finished by an earlier run: {', '.join(cache.reused)}", file=sys.stderr)
    ex.results["figures"] = ex.figures
    ex.results["timing_seconds"] = dict(stages.times)

    def _write() -> None:
        ex.results["timing_seconds"]["total"] = round(time.perf_counter() - t0 + reused_seconds, 2)
        write_report(ex.results, out)

    stages.run("report", _write)
    ex.results["timing_seconds"]["report"] = stages.times["report"]
    ex.results["environment"] = environment_report(browser=False)
    vio.save_json(out / "results.json", _jsonable(ex.results))
    cache.clear()
    return ex.results


def _stage_fingerprint(ex: "_Exercise") -> str:
    """What every stage's output depends on: weights, data, resolved settings (not output or display), versions."""
    from .. import __version__
    from ..data.mnist import data_checksum

    settings = {k: v for k, v in asdict(ex.cfg).items() if k not in ("out", "data_dir", "progress", "checkpoint")}
    return stage_fingerprint({"weights": ex.results["model"]["fingerprint"], "data": data_checksum(ex.cfg.data_dir), "settings": settings,
                              "threads": torch.get_num_threads(), "vision_interp": __version__, "torch": torch.__version__,
                              "numpy": np.__version__})


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
