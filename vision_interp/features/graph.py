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
feature and the logit, incoming edges plus a bias (its value with all leaves at zero) equal its
pre-activation: :meth:`AttributionGraph.sum_rule_residual`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .transcoders import INPUT, Transcoder

__all__ = ["AttributionGraph", "GraphBuilder", "attribution_graph", "check_chain"]


@dataclass
class AttributionGraph:
    """Nodes (dicts) in topological order and ``edges[t, s]``: the direct effect of node s on node t."""

    nodes: list[dict]
    edges: torch.Tensor  # (n, n) float64, row = target, column = source
    target: int
    logit: float  # the model's own logit (float64 model)
    meta: dict = field(default_factory=dict)

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
    if not transcoders:
        raise ValueError("an attribution graph needs at least one transcoder")
    tcs = list(transcoders)
    for a, b in zip(tcs, tcs[1:]):
        if b.in_layer != a.out_layer:
            raise ValueError(f"transcoders must form a chain: {b.feature_layer!r} reads {b.in_layer!r}, "
                             f"but the previous block {a.feature_layer!r} ends at {a.out_layer!r}")
    return tcs


class GraphBuilder:
    """Builds graphs for one model and chain of transcoders (float64 copies made once; the user's
    model is not touched)."""

    def __init__(self, model: nn.Module, transcoders: Sequence[Transcoder], *, pixel_group: int = 4):
        from ..units import default_input_shape

        self.tcs = check_chain(transcoders)
        if pixel_group < 1:
            raise ValueError(f"pixel_group must be >= 1, got {pixel_group}")
        self.pixel_group = pixel_group
        self.model = copy.deepcopy(model).double().eval()
        self.input_shape = default_input_shape(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.modules = [copy.deepcopy(tc.module).double().eval() for tc in self.tcs]
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
        ins, outs, logits = self.activations(x)
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"target must be a logit index in 0..{logits.shape[1] - 1}, got {target}")
        with torch.no_grad():
            zs = [m(a) for m, a in zip(self.modules, ins)]
            errs = [o - m.decode(z, a) for m, z, a, o in zip(self.modules, zs, ins, outs)]
        base = [x, *zs, *errs]
        a_true = outs[-1].detach().clone().requires_grad_(True)
        logit_true = self._head(a_true)[0, target]  # the head, linearised at the true last-block output
        (j_head,) = torch.autograd.grad(logit_true, a_true)  # (max-pool choices, ReLU signs frozen)
        active = [(z[0] > 0).nonzero().tolist() for z in zs]
        grads = [torch.zeros((0, *t.shape[1:]), dtype=t.dtype) for t in base]
        for depth in range(len(zs) + 1):  # targets of block `depth` (the logit: depth == number of blocks)
            rows = active[depth] if depth < len(zs) else [None]
            for i, g in enumerate(self._target_grads(base, depth, rows, j_head)):
                grads[i] = torch.cat([grads[i], g])
        with torch.no_grad():
            zero = [torch.zeros_like(t) for t in base]
            pres0, a0 = self._frozen(zero[0], zero[1:1 + len(zs)], zero[1 + len(zs):])
            head0 = float(self._head(torch.zeros_like(a_true))[0, target])
        return self._assemble(x, zs, errs, active, pres0, grads, head0 + float((j_head * a0).sum()),
                              float(logits[0, target]), float(logit_true.detach()), target)

    def _target_grads(self, base: list[torch.Tensor], depth: int, rows: list, j_head: torch.Tensor) -> list[torch.Tensor]:
        """d target_i / d leaf for each target of one block (or the logit): the leaves are repeated once
        per target along the batch axis, so one backward pass gives every target's gradient."""
        n_blocks = (len(base) - 1) // 2
        leaves = [t.detach().repeat(len(rows), 1, 1, 1).requires_grad_(True) for t in base]
        lz, le = leaves[1:1 + n_blocks], leaves[1 + n_blocks:]
        a = leaves[0]
        for li in range(depth):
            a = self.modules[li].decode(lz[li], a) + le[li]
        if depth == n_blocks:
            values = (j_head * a).flatten(1).sum(1)
        else:
            pre = self.modules[depth].linear_pre_activations(a)
            idx = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
            values = pre[torch.arange(len(rows)), idx[:, 0], idx[:, 1], idx[:, 2]]
        grads = torch.autograd.grad(values.sum(), leaves, allow_unused=True)
        return [torch.zeros_like(l) if g is None else g for g, l in zip(grads, leaves)]

    def _assemble(self, x, zs, errs, active, pres0, grads, logit_bias, logit, logit_head, target) -> AttributionGraph:
        nodes, cols = [], []  # cols: one function per node mapping per-leaf grads (n_targets, ...) to (n_targets,)
        g = self.pixel_group
        _, _, h, w = x.shape
        gx = grads[0] * x  # direct effect of every pixel
        for gy in range(0, h, g):
            for gxp in range(0, w, g):
                nodes.append({"kind": "pixels", "layer": "input", "y": gy // g, "x": gxp // g, "box": [gy, gxp, min(h, gy + g), min(w, gxp + g)],
                              "value": float(x[0, :, gy:gy + g, gxp:gxp + g].mean())})
                cols.append(gx[:, :, gy:gy + g, gxp:gxp + g].sum((1, 2, 3)))
        for li, (z, act, p0) in enumerate(zip(zs, active, pres0)):
            gz = grads[1 + li] * z
            for f, y, xx in act:
                v = float(z[0, f, y, xx])
                nodes.append({"kind": "feature", "layer": self.names[li], "block": li, "feature": f, "y": y, "x": xx,
                              "value": v, "pre": v, "bias": float(p0[0, f, y, xx])})
                cols.append(gz[:, f, y, xx])
            e = errs[li]
            ge = (grads[1 + len(zs) + li] * e).sum(1)  # (n_targets, H, W)
            for y in range(e.shape[2]):
                for xx in range(e.shape[3]):
                    nodes.append({"kind": "error", "layer": self.names[li], "block": li, "y": y, "x": xx,
                                  "value": float(e[0, :, y, xx].norm())})
                    cols.append(ge[:, y, xx])
        nodes.append({"kind": "logit", "layer": "logits", "target": target, "value": logit, "pre": logit_head, "bias": logit_bias})
        by_target = torch.stack(cols, 1)  # (n_targets, n_nodes - 1)
        n = len(nodes)
        edges = torch.zeros(n, n, dtype=torch.float64)
        target_rows = [i for i, nd in enumerate(nodes) if nd["kind"] in ("feature", "logit")]
        edges[target_rows, :n - 1] = by_target
        meta = {"feature_layers": self.names, "pixel_group": g, "input_shape": list(x.shape[1:]),
                "logit_reproduced_error": abs(logit_head - logit)}
        return AttributionGraph(nodes, edges, target, logit, meta)


def _as_batch(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    x = image if image.ndim == 4 else image[None]
    if x.shape[0] != 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"image must be one input of shape {tuple(shape)}, got {tuple(image.shape)}")
    return x.detach().to(torch.float64)


def attribution_graph(model: nn.Module, transcoders: Sequence[Transcoder], image: torch.Tensor, target: int, *,
                      pixel_group: int = 4) -> AttributionGraph:
    """One graph (see :class:`GraphBuilder` for many graphs of one model)."""
    return GraphBuilder(model, transcoders, pixel_group=pixel_group).build(image, target)
