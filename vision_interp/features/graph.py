"""Attribution graphs through a chain of transcoders, for one input and one target logit.

The *local replacement* of a model at an input ``x``: every transcoded block's output is written as
``decode(z) + skip(a_in) + error``, where ``z`` are the transcoder's features read from the block's
true input and ``error`` is what the transcoder misses at this input. It reproduces the model's
activations, and so its logits, exactly. With the sparse selections (which features are active)
and the layers after the last block frozen at ``x`` (their max-pool choices, ReLU signs: the
autograd Jacobian), every feature's pre-activation and the target logit are linear in the leaves:
pixels, active features, error vectors. Nodes:

* ``pixels`` -- a ``g x g`` group of input pixels (all channels);
* ``feature`` -- an active transcoder feature at (layer, y, x); value = its activation;
* ``error`` -- a block's error vector at one position (all channels);
* ``logit`` -- the target logit.

An edge ``s -> t`` is the exact direct effect: the part of t's pre-activation that flows from s along
paths through no other node (through decoders, skips, the next encoder, the frozen head). For every
feature and the logit, incoming edges plus a bias (its value with all leaves at zero; for the logit
through a head that is not affine given the frozen choices, its linearisation's constant) equal its
pre-activation: :meth:`AttributionGraph.sum_rule_residual`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import TargetRangeError, check_images, check_int
from .transcoder import ConvTranscoder
from .transcoders import INPUT, Transcoder, check_transcoders

__all__ = ["AttributionGraph", "GraphBuilder", "attribution_graph", "check_chain"]


@dataclass
class AttributionGraph:
    """Nodes (dicts) in topological order and ``edges[t, s]``: the direct effect of node s on node t."""

    nodes: list[dict]
    edges: torch.Tensor  # (n, n) float64, row = target, column = source
    target: int
    logit: float  # the model's own logit (float64 model)
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # short; the drawing is in _repr_html_ (vision_interp.display)
        from ..display import text
        return text(self)

    def _repr_html_(self) -> str:
        from ..display import html
        return html(self)

    @property
    def logit_index(self) -> int:
        return len(self.nodes) - 1

    def kinds(self) -> list[str]:
        return [n["kind"] for n in self.nodes]

    def sum_rule_residual(self) -> float:
        """max |sum of incoming edges + bias - pre-activation| over feature nodes and the logit."""
        worst = 0.0
        for i, n in enumerate(self.nodes):
            if n["kind"] in ("feature", "logit"):
                worst = max(worst, abs(float(self.edges[i].sum()) + n["bias"] - n["pre"]))
        return worst

    def influence(self) -> torch.Tensor:
        """Each node's share of influence on the logit: ``e_logit (A + A^2 + ...)`` with ``A`` the
        absolute edges normalised so that each node's incoming weights sum to 1 (Ameisen et al. 2025)."""
        a = self.edges.abs()
        a = a / a.sum(1, keepdim=True).clamp_min(1e-30)
        n = len(self.nodes)
        eye = torch.eye(n, dtype=a.dtype)
        # nodes are in topological order (edges go from lower to higher index): I - A is lower triangular
        row = a[self.logit_index:self.logit_index + 1]
        infl = torch.linalg.solve_triangular((eye - a).T, row.T, upper=True).T[0]
        infl[self.logit_index] = 0.0
        return infl

    def prune(self, threshold: float = 0.8) -> dict:
        """The smallest set of nodes carrying ``threshold`` of the total influence on the logit."""
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        infl = self.influence()
        total = float(infl.sum())
        order = torch.argsort(infl, descending=True)
        cum = torch.cumsum(infl[order], 0) / max(total, 1e-30)
        n_keep = int((cum < threshold).sum()) + 1
        keep = sorted(int(i) for i in order[:n_keep])
        kinds = self.kinds()
        err = sum(float(infl[i]) for i, k in enumerate(kinds) if k == "error") / max(total, 1e-30)
        return {"threshold": threshold, "kept": keep, "kept_nodes": n_keep, "nodes": len(self.nodes) - 1,
                "kept_by_kind": {k: sum(1 for i in keep if kinds[i] == k) for k in ("pixels", "feature", "error")},
                "error_share": round(err, 5),
                "kept_error_share": round(sum(float(infl[i]) for i in keep if kinds[i] == "error") / max(total, 1e-30), 5)}

    def total_effects(self) -> torch.Tensor:
        """Each node's total effect on the logit in the frozen linear model (its value times the
        derivative of the logit along all paths). Removing a node predicts ``-total_effect``."""
        n = len(self.nodes)
        g = torch.zeros(n, dtype=self.edges.dtype)  # d logit / d (node pre-activation), for feature nodes
        te = self.edges[self.logit_index].clone()
        values = torch.tensor([nd["value"] for nd in self.nodes], dtype=self.edges.dtype)
        for t in range(n - 2, -1, -1):
            if self.nodes[t]["kind"] == "feature":
                g[t] = te[t] / values[t]
                te[:t] += g[t] * self.edges[t, :t]
        return te

    def summary(self, threshold: float = 0.8) -> dict:
        p = self.prune(threshold)
        kinds = self.kinds()
        return {"target": self.target, "logit": round(self.logit, 6), "nodes": len(self.nodes),
                "by_kind": {k: kinds.count(k) for k in ("pixels", "feature", "error", "logit")},
                "sum_rule_residual": self.sum_rule_residual(), **{f"pruned_{k}": v for k, v in p.items() if k != "kept"}}


def check_chain(transcoders: Sequence[Transcoder]) -> list[Transcoder]:
    """The transcoders as one chain: each block starts where the previous one ends."""
    tcs = check_transcoders(transcoders)
    for a, b in zip(tcs, tcs[1:]):
        if b.in_layer != a.out_layer:
            raise ValueError(f"transcoders: must form a chain in model order: {b.feature_layer!r} reads {b.in_layer!r}, "
                             f"but the previous block {a.feature_layer!r} ends at {a.out_layer!r}")
    return tcs


class GraphBuilder:
    """Builds graphs for one model and chain of transcoders (float64 copies made once; the user's
    model is not touched)."""

    def __init__(self, model: nn.Module, transcoders: Sequence[Transcoder], *, pixel_group: int = 4):
        from ..units import default_input_shape

        check_transcoders(transcoders, model)
        self.tcs = check_chain(transcoders)
        self.pixel_group = check_int(pixel_group, "pixel_group", minimum=1)
        self.pixel_group = pixel_group
        self.model = copy.deepcopy(model).cpu().double().eval()  # graphs are computed on the CPU in float64
        self.input_shape = default_input_shape(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.modules = [copy.deepcopy(tc.module).cpu().double().eval() for tc in self.tcs]
        for m in self.modules:
            m.gradient = "exact"
        self.names = [tc.feature_layer for tc in self.tcs]

    # -- the real activations and the local replacement
    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Block inputs, block outputs and logits of the (float64) model at ``x`` (1, C, H, W)."""
        from ..capture import capture

        layers = [tc.out_layer for tc in self.tcs] + [tc.in_layer for tc in self.tcs if tc.in_layer != INPUT]
        got = capture(self.model, x, sorted(set(layers)), detach=True)
        logits = self.model(x)
        ins = [x if tc.in_layer == INPUT else got[tc.in_layer] for tc in self.tcs]
        outs = [got[tc.out_layer] for tc in self.tcs]
        return ins, outs, logits

    def _head(self, a_last: torch.Tensor) -> torch.Tensor:
        """The model's logits with the last block's output set to ``a_last`` (the layers after it run)."""
        from ..capture import hooks

        x = torch.zeros((1, *self.input_shape), dtype=torch.float64)
        with hooks(self.model, {self.tcs[-1].out_layer: lambda _m, _i, _o: a_last}):
            return self.model(x)

    def _frozen(self, x: torch.Tensor, zs: list[torch.Tensor], errs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pre-activations of each block and the last block's output, linear in (x, zs, errs)."""
        a, pres = x, []
        for m, z, e in zip(self.modules, zs, errs):
            pres.append(m.linear_pre_activations(a))
            a = m.decode(z, a) + e
        return pres, a

    def build(self, image: torch.Tensor, target: int) -> AttributionGraph:
        """The attribution graph of ``image`` (C, H, W) for logit ``target``."""
        x = _as_batch(image, self.input_shape)
        target = check_int(target, "target")
        ins, outs, logits = self.activations(x)
        if not 0 <= target < logits.shape[1]:
            raise TargetRangeError(f"target: {target}; must be a logit index in 0..{logits.shape[1] - 1}")
        with torch.no_grad():
            zs = [m(a) for m, a in zip(self.modules, ins)]
            errs = [o - m.decode(z, a) for m, z, a, o in zip(self.modules, zs, ins, outs)]
        a_true = outs[-1].detach().clone().requires_grad_(True)
        logit_true = self._head(a_true)[0, target]  # the head, linearised at the true last-block output
        (j_head,) = torch.autograd.grad(logit_true, a_true)  # (max-pool choices, ReLU signs frozen)
        active = [(z[0] > 0).nonzero() for z in zs]  # (n, 3): feature, y, x
        with torch.no_grad():
            zero_z, zero_e = [torch.zeros_like(z) for z in zs], [torch.zeros_like(e) for e in errs]
            pres0, a0 = self._frozen(torch.zeros_like(x), zero_z, zero_e)
            # the head's bias: its value at zero when it is affine given the frozen choices (ReLU, max pool
            # with no bias before them: checked), else the constant of its linearisation at this input
            head0 = float(self._head(torch.zeros_like(a_true))[0, target])
            lin_const = float(logit_true.detach()) - float((j_head * a_true.detach()).sum())
            head_affine = abs(head0 - lin_const) <= 1e-9 * max(1.0, abs(float(logit_true.detach())))
            layout = self._layout(x, zs, errs, active, pres0, float(logits[0, target]), float(logit_true.detach()),
                                  (head0 if head_affine else lin_const) + float((j_head * a0).sum()), target)
            edges = self._edges(x, zs, errs, active, j_head, layout)
        meta = {"feature_layers": self.names, "pixel_group": self.pixel_group, "input_shape": list(x.shape[1:]),
                "feature_shapes": [list(z.shape[1:]) for z in zs], "head_affine": head_affine,
                "logit_reproduced_error": abs(float(logit_true.detach()) - float(logits[0, target]))}
        return AttributionGraph(layout["nodes"], edges, target, float(logits[0, target]), meta)

    # -- direct effects: cotangents pushed back through decoders and skips, never through a feature
    def _pre_cotangent(self, depth: int, rows: torch.Tensor, n_feat: int, hw: tuple[int, int]) -> torch.Tensor:
        """One-hot cotangents on block ``depth``'s pre-activations, one per target row (feature, y, x)."""
        g = torch.zeros((len(rows), n_feat, *hw), dtype=torch.float64)
        g[torch.arange(len(rows)), rows[:, 0], rows[:, 1], rows[:, 2]] = 1.0
        return g

    def _through_input(self, m: ConvTranscoder, g_out: torch.Tensor, weight: torch.Tensor, in_hw: tuple[int, int]) -> torch.Tensor:
        """VJP of ``conv(pad(a / s_in), weight, stride)`` w.r.t. the block input ``a``."""
        left, right, top, bottom = m.pad
        size = (g_out.shape[0], weight.shape[1], in_hw[0] + top + bottom, in_hw[1] + left + right)
        g = torch.nn.grad.conv2d_input(size, weight, g_out, stride=m.stride)
        return g[:, :, top:top + in_hw[0], left:left + in_hw[1]] / m.s_in

    def _direct(self, depth: int, g_a: torch.Tensor, in_hws: list) -> dict:
        """Per-leaf direct-effect gradients of targets whose cotangent on block ``depth - 1``'s output is ``g_a``."""
        out: dict = {}
        for li in range(depth - 1, -1, -1):
            m = self.modules[li]
            out[("e", li)] = g_a
            out[("z", li)] = torch.einsum("nchw,fc->nfhw", g_a, m.W_dec) * m.s_out
            if m.W_skip is None:
                return out
            g_a = self._through_input(m, g_a * m.s_out, m.W_skip, in_hws[li])
        out["x"] = g_a
        return out

    def _edges(self, x, zs, errs, active, j_head, layout) -> torch.Tensor:
        n = len(layout["nodes"])
        edges = torch.zeros(n, n, dtype=torch.float64)
        in_hws = [tuple(x.shape[-2:])] + [tuple(z.shape[-2:]) for z in zs[:-1]]
        for depth in range(len(zs) + 1):
            if depth < len(zs):
                m, rows = self.modules[depth], active[depth]
                if not len(rows):
                    continue
                g_pre = self._pre_cotangent(depth, rows, m.n_features, tuple(zs[depth].shape[-2:]))
                g_a = self._through_input(m, g_pre, m.W_enc, in_hws[depth])  # cotangent on the block's input
                target_rows = layout["feature_rows"][depth]
            else:
                g_a, target_rows = j_head, torch.tensor([n - 1])
            grads = self._direct(depth, g_a, in_hws)
            self._fill(edges, target_rows, grads, x, zs, errs, active, layout)
        return edges

    def _fill(self, edges, target_rows, grads, x, zs, errs, active, layout) -> None:
        if "x" in grads:
            gx = (grads["x"] * x).sum(1, keepdim=True)
            pooled = F.avg_pool2d(gx, self.pixel_group, ceil_mode=True, divisor_override=1)
            edges[target_rows[:, None], layout["pixel_cols"][None]] = pooled.flatten(1)
        for li in range(len(zs)):
            if ("z", li) in grads and len(active[li]):
                r = active[li]
                gz = grads[("z", li)][:, r[:, 0], r[:, 1], r[:, 2]] * zs[li][0, r[:, 0], r[:, 1], r[:, 2]]
                edges[target_rows[:, None], layout["feature_rows"][li][None]] = gz
            if ("e", li) in grads:
                ge = (grads[("e", li)] * errs[li]).sum(1).flatten(1)
                edges[target_rows[:, None], layout["error_cols"][li][None]] = ge

    def _layout(self, x, zs, errs, active, pres0, logit, logit_head, logit_bias, target) -> dict:
        """Nodes in topological order (pixels, then per block its features and its error nodes, the logit)."""
        g = self.pixel_group
        _, _, h, w = x.shape
        nodes: list[dict] = []
        pooled = F.avg_pool2d(x.mean(1, keepdim=True), g, ceil_mode=True)
        start = len(nodes)
        for gy in range(pooled.shape[2]):
            for gxp in range(pooled.shape[3]):
                nodes.append({"kind": "pixels", "layer": "input", "y": gy, "x": gxp,
                              "box": [gy * g, gxp * g, min(h, gy * g + g), min(w, gxp * g + g)], "value": float(pooled[0, 0, gy, gxp])})
        out = {"pixel_cols": torch.arange(start, len(nodes)), "feature_rows": [], "error_cols": []}
        for li, (z, act, p0, e) in enumerate(zip(zs, active, pres0, errs)):
            start = len(nodes)
            vals, biases = z[0][tuple(act.T)].tolist(), p0[0][tuple(act.T)].tolist()
            for (f, y, xx), v, b in zip(act.tolist(), vals, biases):
                nodes.append({"kind": "feature", "layer": self.names[li], "block": li, "feature": f, "y": y, "x": xx,
                              "value": v, "pre": v, "bias": b})
            out["feature_rows"].append(torch.arange(start, len(nodes)))
            start = len(nodes)
            norms = e[0].norm(dim=0)
            for y in range(e.shape[2]):
                for xx in range(e.shape[3]):
                    nodes.append({"kind": "error", "layer": self.names[li], "block": li, "y": y, "x": xx, "value": float(norms[y, xx])})
            out["error_cols"].append(torch.arange(start, len(nodes)))
        nodes.append({"kind": "logit", "layer": "logits", "target": target, "value": logit, "pre": logit_head, "bias": logit_bias})
        out["nodes"] = nodes
        return out


def _as_batch(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """One image (C, H, W) or (1, C, H, W), checked (float, finite, in [0, 1]), as a float64 batch on the CPU."""
    x, _ = check_images(image, arg="image")
    if x.shape[0] != 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"image: shape {tuple(image.shape)}; expected one input of shape {tuple(shape)}")
    return x.detach().cpu().to(torch.float64)


def attribution_graph(model: nn.Module, transcoders: Sequence[Transcoder], image: torch.Tensor, target: int, *,
                      pixel_group: int = 4) -> AttributionGraph:
    """One graph (see :class:`GraphBuilder` for many graphs of one model); the model itself is not run
    or changed (the graph is computed on a float64 copy)."""
    return GraphBuilder(model, transcoders, pixel_group=pixel_group).build(image, target)
