"""All per-head scores of one model in one object: a ranked table, layer x head heatmaps, attention pictures, JSON.

``analyze_induction(model)`` validates the probe size, builds ``[BOS] + R + R``, computes the attention scores
(stopping after the last layer's pattern), the weight-based scores (copying, composition and its chance level),
the per-position loss, the exact ablation scan, attribution patching and the joint / path ablations.
``InductionReport.save(out_dir)`` writes every number to ``induction.json``, the pictures, and ``index.html``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import io as vio
from ..checks import InputError, check_int, check_number
from ..model_state import runs_model
from ..environment import environment_report
from . import figures
from .ablation import (ABLATION_MODES, ablation_line, ablation_scan, attribution_patching, integrated_attribution_patching,
                       joint_ablations)
from .html import write_page
from .rules import (AGREEMENT_THRESHOLD, INDUCTION_THRESHOLD, PREV_TOKEN_THRESHOLD, SCORE_DEFINITIONS, SCORE_SCALES,
                    detected_heads, format_head, top_heads)
from .scores import (check_probe, composition_baseline, composition_scores, copy_slices, copying_scores,
                     fast_pattern_scores, head_weights, repeated_tokens, token_losses)

__all__ = ["InductionReport", "analyze_induction", "top_heads", "format_head", "detected_heads",
           "INDUCTION_THRESHOLD", "PREV_TOKEN_THRESHOLD", "AGREEMENT_THRESHOLD"]

# Integrated-gradients attribution patching: points on the line from clean to ablated z, and which heads move together.
IG_STEPS = 8
IG_SCOPE = "all"
# Points t at which the loss along the line z + t (z_ablated - z) is reported for the head with the largest effect.
LINE_POINTS = tuple(k / 10 for k in range(11))
# Estimators compared with the exact scan: report attribute -> name in the JSON, the table and the page.
ESTIMATORS = {"attribution": "attribution_patching", "integrated": "integrated_attribution_patching"}

# Ranking columns of the terminal table, in order.
TABLE_SCORES = ("induction", "previous_token", "duplicate_token", "copying", "ablation_mean", "ablation_zero")


def _nan_to_none(a: np.ndarray):
    if np.ndim(a) == 0:
        v = float(a)
        return None if np.isnan(v) else v
    return [_nan_to_none(x) for x in a]


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    rank = lambda x: np.argsort(np.argsort(np.asarray(x).ravel(), kind="stable"), kind="stable").astype(np.float64)
    return _pearson(rank(a), rank(b))


@dataclass
class InductionReport:
    """Scores of every head; ``scores[name]`` is ``(n_layer, n_head)``, ``composition[kind]`` is ``(L, H, L, H)``."""

    model_name: str
    config: dict
    seq_len: int
    batch: int
    seed: int
    tokens: torch.Tensor
    scores: dict[str, np.ndarray]
    composition: dict[str, np.ndarray]
    losses: dict[str, float]
    example_patterns: torch.Tensor  # (L, H, T, T) of the first sequence
    mean_patterns: torch.Tensor | None = None  # (L, H, T, T) averaged over the batch
    position_loss: np.ndarray | None = None  # (T-1,) batch-mean loss of predicting token t+1
    attribution: dict[str, np.ndarray] = field(default_factory=dict)
    integrated: dict[str, np.ndarray] = field(default_factory=dict)  # integrated-gradients attribution patching
    integrated_settings: dict = field(default_factory=dict)  # {"steps", "scope"}
    ablation_lines: dict = field(default_factory=dict)  # mode -> {"head", "t", "loss_rise", "slope_at_0"}
    joint: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    token_text: list[str] | None = None  # labels of the first sequence's tokens
    timings: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:  # short; the pictures are in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    @property
    def n_layer(self) -> int:
        return int(self.config["n_layer"])

    @property
    def n_head(self) -> int:
        return int(self.config["n_head"])

    def top(self, score: str = "induction", k: int = 5) -> list[tuple[int, int, float]]:
        if score not in self.scores:
            raise KeyError(f"no score {score!r}; available: {', '.join(self.scores)}")
        return top_heads(self.scores[score], k)

    @property
    def induction_heads(self) -> list[tuple[int, int]]:
        return detected_heads(self.scores["induction"], INDUCTION_THRESHOLD)

    @property
    def previous_token_heads(self) -> list[tuple[int, int]]:
        return detected_heads(self.scores["previous_token"], PREV_TOKEN_THRESHOLD)

    def composition_into(self, layer: int, head: int, kind: str = "k_composition") -> np.ndarray:
        """``(layer, H)`` scores of every earlier head composing into ``layer.head`` (rows = earlier layers)."""
        return self.composition[kind][:layer, :, layer, head]

    def times_chance(self, kind: str = "k_composition") -> np.ndarray:
        """Composition scores divided by the random-matrix baseline (1 = chance)."""
        return self.composition[kind] / self.baseline["mean"]

    def estimates(self) -> dict[str, dict[str, np.ndarray]]:
        """Every estimator of the ablation effects that was computed: ``{name: {mode: (L, H)}}``."""
        return {name: getattr(self, attr) for attr, name in ESTIMATORS.items() if getattr(self, attr)}

    def agreement(self) -> dict:
        """Per estimator and mode: Pearson and Spearman correlation with the exact scan over all heads, the largest
        absolute error, and the verdict of the one rule (``tracks_exact``: Pearson r >= AGREEMENT_THRESHOLD)."""
        out: dict = {}
        for name, per_mode in self.estimates().items():
            for mode, est in per_mode.items():
                exact = self.scores.get(f"ablation_{mode}")
                if exact is None:
                    continue
                r = _pearson(est, exact)
                out.setdefault(name, {})[mode] = {
                    "pearson": r, "spearman": _spearman(est, exact),
                    "max_abs_error": float(np.max(np.abs(np.asarray(est) - exact))),
                    "tracks_exact": None if r is None else bool(r >= AGREEMENT_THRESHOLD)}
        return out

    def table(self, k: int = 10) -> str:
        """The ``k`` top heads by induction score with all their scores, then the top 3 of every other score."""
        names = [s for s in TABLE_SCORES if s in self.scores]
        lines = [f"{self.model_name}: {self.n_layer} layers x {self.n_head} heads; probe [BOS]+R+R, seq_len "
                 f"{self.seq_len}, batch {self.batch}, seed {self.seed}",
                 f"loss first copy {self.losses['first_copy']:.3f}, second copy {self.losses['second_copy']:.3f}",
                 "", "rank  head   " + "  ".join(f"{n:>15s}" for n in names)]
        for r, (l, h, _) in enumerate(self.top("induction", k), 1):
            lines.append(f"{r:4d}  {format_head(l, h):5s}  " + "  ".join(f"{self.scores[n][l, h]:15.3f}" for n in names))
        lines.append("")
        for n in names[1:]:
            best = ", ".join(f"{format_head(l, h)} ({v:.3f})" for l, h, v in self.top(n, 3))
            lines.append(f"top {n}: {best}")
        l, h, _ = self.top("induction", 1)[0]
        if l > 0 and self.composition:
            src = top_heads(self.composition_into(l, h), 3)
            lines.append(f"K-composition into {format_head(l, h)}: " + ", ".join(
                f"{format_head(a, b)} ({v:.3f} = {v / self.baseline['mean']:.1f}x chance)" for a, b, v in src))
        for name, per_mode in self.agreement().items():
            for mode, ag in per_mode.items():
                if ag["pearson"] is not None:
                    verdict = "tracks" if ag["tracks_exact"] else "does not track"
                    lines.append(f"{name} vs exact {mode} ablation: Pearson r = {ag['pearson']:.3f}, Spearman = "
                                 f"{ag['spearman']:.3f}, max |error| {ag['max_abs_error']:.3f} nats: {verdict} "
                                 f"(rule: r >= {AGREEMENT_THRESHOLD})")
        for mode, line in self.ablation_lines.items():
            lines.append(f"loss rise along z + t (z_{mode} - z) of {line['head']}: " + ", ".join(
                f"t={t:g} {v:+.3f}" for t, v in zip(line["t"], line["loss_rise"])))
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Every number of the report, JSON-ready (NaN -> null)."""
        data = {
            "model": self.model_name,
            "config": self.config,
            "probe": {"layout": "[BOS] + R + R", "seq_len": self.seq_len, "batch": self.batch, "seed": self.seed,
                      "tokens": self.tokens.tolist()},
            "losses": self.losses,
            "position_loss": None if self.position_loss is None else [float(x) for x in self.position_loss],
            "scores": {k: np.asarray(v).tolist() for k, v in self.scores.items()},
            "composition": {k: _nan_to_none(v) for k, v in self.composition.items()},
            "composition_baseline": self.baseline,
            "attribution_patching": {k: np.asarray(v).tolist() for k, v in self.attribution.items()},
            "integrated_attribution_patching": {**{k: np.asarray(v).tolist() for k, v in self.integrated.items()},
                                                **({"settings": self.integrated_settings} if self.integrated else {})},
            "attribution_vs_exact": {"rule": f"an estimator tracks the exact scan when Pearson r over all heads >= "
                                             f"{AGREEMENT_THRESHOLD}", **self.agreement()},
            "ablation_line": self.ablation_lines,
            "joint_ablations": self.joint,
            "detection": {"induction_threshold": INDUCTION_THRESHOLD, "previous_token_threshold": PREV_TOKEN_THRESHOLD,
                          "induction_heads": [format_head(*x) for x in self.induction_heads],
                          "previous_token_heads": [format_head(*x) for x in self.previous_token_heads]},
            "top_heads": {k: [{"head": format_head(l, h), "layer": l, "index": h, "score": s}
                              for l, h, s in self.top(k, min(10, self.n_layer * self.n_head))] for k in self.scores},
            "timings_seconds": self.timings,
            "environment": environment_report(browser=False),
            "definitions": SCORE_DEFINITIONS,
            "colour_scales": {k: v[4] for k, v in figures.SCALES.items()},
        }
        return data

    def pattern_heads(self) -> list[tuple[int, int]]:
        """Heads whose attention is drawn: the top 4 by induction score and the top 2 by previous-token score,
        in layer, head order."""
        heads = {(a, b) for a, b, _ in self.top("induction", 4)} | {(a, b) for a, b, _ in self.top("previous_token", 2)}
        return sorted(heads)

    def save(self, out_dir: str | os.PathLike, *, window: int = 20) -> list[Path]:
        """Write ``induction.json``, the PNGs and ``index.html`` (the page that shows them all)."""
        out = Path(out_dir)
        paths = [vio.save_json(out / "induction.json", self.to_json())]
        paths += self._save_figures(out, window)
        paths.append(write_page(self, out, [p.name for p in paths]))
        return paths

    def _save_figures(self, out: Path, window: int) -> list[Path]:
        paths = []
        for name, arr in self.scores.items():
            paths.append(figures.score_grid(arr, out / f"heatmap_{name}.png", scale=SCORE_SCALES.get(name, "unit"),
                                            title=f"{name} ({self.model_name}); scale: {figures.SCALES[SCORE_SCALES.get(name, 'unit')][4]}"))
        for mode, est in self.attribution.items():
            paths.append(figures.score_grid(est, out / f"heatmap_attribution_{mode}.png", scale="loss",
                                            title=f"attribution patching, {mode} ablation (first-order estimate, nats)"))
        for mode, est in self.integrated.items():
            paths.append(figures.score_grid(est, out / f"heatmap_integrated_attribution_{mode}.png", scale="loss",
                                            title=f"integrated-gradients attribution patching, {mode} ablation "
                                                  f"({self.integrated_settings.get('steps')} steps, nats)"))
        if self.composition:
            l, h, _ = self.top("induction", 1)[0]
            if l > 0:
                paths.append(figures.score_grid(self.times_chance()[:l, :, l, h], out / "heatmap_k_composition_into_top_induction.png",
                                                scale="chance", title=f"K-composition into {format_head(l, h)}, times chance"))
            ind, prev = self.induction_heads, self.previous_token_heads
            if ind and prev:
                paths.append(figures.composition_graph(prev, ind, self.times_chance(), out / "composition_graph.png",
                                                       n_layer=self.n_layer, n_head=self.n_head,
                                                       title="K-composition, previous-token -> induction heads (times chance)"))
        if self.position_loss is not None:
            paths.append(figures.loss_curve(self.position_loss, self.seq_len, out / "loss_per_position.png",
                                            uniform=float(np.log(self.config["vocab_size"])),
                                            title=f"{self.model_name}: loss per position on [BOS] + R + R (batch {self.batch})"))
        paths.append(self._attention_figure(out / "attention_top_heads.png", window))
        return paths

    def _attention_figure(self, path: Path, window: int) -> Path:
        T = self.example_patterns.shape[-1]
        nq = min(window, T)
        q0 = T - nq
        s = self.seq_len
        pos_label = lambda t: "BOS" if t == 0 else (f"{t}" if t <= s else f"{t}'")
        tok = self.token_text or [str(int(x)) for x in self.tokens[0]]
        key_labels = [f"{pos_label(t)}:{tok[t]}" for t in range(T)]
        query_labels = [f"{pos_label(t)}:{tok[t]}" for t in range(q0, T)]
        panels = []
        for l, h in self.pattern_heads():
            tag = f"head {format_head(l, h)} (induction {self.scores['induction'][l, h]:.2f}, previous-token {self.scores['previous_token'][l, h]:.2f})"
            if self.mean_patterns is not None:
                panels.append((f"{tag}, mean over the batch of {self.batch}", self.mean_patterns[l, h, q0:].numpy()))
            panels.append((f"{tag}, sequence 0", self.example_patterns[l, h, q0:].numpy()))
        return figures.attention_windows(
            panels, path, seq_len=s, key_labels=key_labels, query_labels=query_labels, first_query=q0,
            title=f"{self.model_name}: attention of the last {nq} queries to every key; labels 'position:token' of "
                  f"sequence 0 (position n' = second copy)")


def _token_text(model: torch.nn.Module, tokens: torch.Tensor, tokenizer) -> list[str] | None:
    if tokenizer is None:
        return None
    return [tokenizer.decode([int(t)]).replace("\n", "\\n") for t in tokens[0]]


@runs_model
def analyze_induction(model: torch.nn.Module, *, model_name: str = "model", seq_len: int = 50, batch: int = 10,
                      seed: int = 0, ablation: Sequence[str] = ABLATION_MODES, fold_ln: bool = True,
                      composition: bool = True, max_rows: int = 64, progress: bool = True,
                      attribution: bool = True, ig_steps: int = IG_STEPS, tokenizer=None) -> InductionReport:
    """Compute every per-head score of a GPT-2 (see :data:`SCORE_DEFINITIONS`).

    ``ablation=()`` skips the exact scan and the joint ablations, ``composition=False`` the head-pair
    composition scores, ``attribution=False`` both attribution-patching estimators (plain and integrated gradients
    with ``ig_steps`` points). ``tokenizer`` (optional) labels tokens.
    """
    check_probe(model, seq_len, batch)
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, (int, np.integer)) or ig_steps < 1:
        raise ValueError(f"ig_steps must be a positive integer, got {ig_steps!r}")
    ablation = list(ablation)
    bad = [m for m in ablation if m not in ABLATION_MODES]
    if bad:
        raise ValueError(f"unknown ablation mode(s) {bad}; choose from {', '.join(ABLATION_MODES)}")
    timings: dict[str, float] = {}
    tokens = repeated_tokens(model, seq_len, batch, seed)

    t0 = time.perf_counter()
    scores, mean_patterns, example = fast_pattern_scores(model, tokens, keep_patterns=True)
    timings["attention_scores"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    w = head_weights(model, fold_ln)
    scores.update(copying_scores(model, fold_ln, weights=w))
    timings["copying_scores"] = time.perf_counter() - t0
    comp: dict[str, np.ndarray] = {}
    cfg = model.config
    baseline = composition_baseline(cfg.n_embd, cfg.n_embd // cfg.n_head)
    if composition:
        t0 = time.perf_counter()
        comp = composition_scores(model, fold_ln, weights=w)
        timings["composition_scores"] = time.perf_counter() - t0

    with torch.no_grad():
        lt = token_losses(model(tokens.to(next(model.parameters()).device)).logits, tokens)
    s1, s2 = copy_slices(seq_len)
    losses = {"first_copy": float(lt[:, s1].mean()), "second_copy": float(lt[:, s2].mean())}
    position_loss = lt.mean(0).double().cpu().numpy()
    attr: dict[str, np.ndarray] = {}
    integrated: dict[str, np.ndarray] = {}
    lines: dict = {}
    joint: dict = {}
    if ablation:
        t0 = time.perf_counter()
        scan = ablation_scan(model, tokens, ablation, max_rows=max_rows, progress=progress)
        timings["ablation_scan"] = time.perf_counter() - t0
        for m in ablation:
            scores[f"ablation_{m}"] = scan[m]
        losses["clean_second_copy_recomputed"] = scan["clean_loss_recomputed"]
        if attribution:
            t0 = time.perf_counter()
            attr = attribution_patching(model, tokens, ablation)
            timings["attribution_patching"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            integrated = integrated_attribution_patching(model, tokens, ablation, steps=int(ig_steps), scope=IG_SCOPE)
            timings["integrated_attribution_patching"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for m in ablation:
                (l, h, _), = top_heads(np.abs(scan[m]), 1)
                rise = ablation_line(model, tokens, (l, h), m, LINE_POINTS)
                lines[m] = {"head": format_head(l, h), "t": list(LINE_POINTS), "loss_rise": rise,
                            "slope_at_0": float(attr[m][l, h]), "exact": float(scan[m][l, h])}
            timings["ablation_line"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        joint = joint_ablations(model, tokens, detected_heads(scores["induction"], INDUCTION_THRESHOLD),
                                detected_heads(scores["previous_token"], PREV_TOKEN_THRESHOLD), ablation)
        timings["joint_ablations"] = time.perf_counter() - t0
    config = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions")}
    return InductionReport(model_name=model_name, config=config, seq_len=seq_len, batch=batch, seed=seed,
                           tokens=tokens, scores=scores, composition=comp, losses=losses,
                           example_patterns=example, mean_patterns=mean_patterns, position_loss=position_loss,
                           attribution=attr, integrated=integrated,
                           integrated_settings={"steps": int(ig_steps), "scope": IG_SCOPE} if integrated else {},
                           ablation_lines=lines, joint=joint, baseline=baseline,
                           token_text=_token_text(model, tokens, tokenizer),
                           timings={k: round(v, 3) for k, v in timings.items()})
