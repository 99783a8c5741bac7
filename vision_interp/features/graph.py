"""Attribution graphs through a chain of transcoders, for one input and one target logit.

The *local replacement* of a model at an input ``x``: every transcoded block's output is written as
``decode(z) + skip(a_in) + error``, where ``z`` are the transcoder's features read from the block's
true input and ``error`` is what the transcoder misses at this input. It reproduces the model's
activations, and so its logits, exactly. With the sparse selections (which features are active)
and the layers after the last block frozen at ``x`` (their max-pool choices, ReLU / PReLU / LeakyReLU
slopes: the autograd Jacobian), every feature's pre-activation and the target logit are linear in the
leaves: the first block's input (pixels, or a hidden layer's values), active features, error vectors.
Nodes:

* ``pixels`` -- a ``g x g`` group of input pixels (all channels), when the chain starts at the model
  input (its first transcoder's ``in_layer`` is ``"input"``);
* ``activation`` -- a ``g x g`` group of positions (all channels) of the first block's input layer,
  when the chain starts at a hidden layer (e.g. ``[t2]`` alone for ``pool1 -> pool2``): the graph then
  explains the logit from that layer's values, and what happens before it is not part of the graph;
* ``feature`` -- an active transcoder feature at (layer, y, x); value = its activation;
* ``error`` -- a block's error vector at one position (all channels);
* ``logit`` -- the target logit.

An edge ``s -> t`` is the exact direct effect: the part of t's pre-activation that flows from s along
paths through no other node (through decoders, skips, the next encoder, the frozen head). For every
feature and the logit, incoming edges plus a bias (its value with all leaves at zero; for the logit
through a head that is not affine given the frozen choices, its linearisation's constant) equal its
pre-activation: :meth:`AttributionGraph.sum_rule_residual`.

The logits are the model's output when it is one ``(N, K)`` tensor, or the output of the spec's
``logits_layer`` when the model declares one (a model with several output heads must declare it).
The graph needs the logits to depend on the last block's output only (no skip connection from an
earlier layer around it): checked on every graph, refused otherwise.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import InputError, TargetRangeError, check_images, check_index, check_int, check_model, check_number
from ..model_state import using
from .graph_store import read_graph_files, write_graph_files
from .transcoder import ConvTranscoder
from .transcoders import INPUT, Transcoder, block_input_shape, check_transcoders, input_reader

__all__ = ["AttributionGraph", "GraphBuilder", "attribution_graph", "check_chain", "logits_path", "model_logits"]

LEAF_KINDS = ("pixels", "activation")
"""Node kinds of a graph's input leaves: pixel groups (chain from the model input) or groups of a hidden layer."""


def check_threshold(threshold: Any, arg: str = "threshold") -> float:
    """A share of influence in (0, 1] (a bool or a string is refused before any work)."""
    return check_number(threshold, arg, minimum=0.0, strict_min=True, maximum=1.0)


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

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole graph as ``path.safetensors`` (sparse edges) + ``path.json`` (nodes, target, logit,
        meta, format version, the tensors' sha256; ``docs/graph_schema.md``); returns the JSON path."""
        return write_graph_files(self.nodes, self.edges, self.target, self.logit, self.meta, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributionGraph":
        """The graph :meth:`save` wrote, checked (format, sha256, shapes, node kinds, forward edges): the same
        numbers bit for bit (influence, pruning, total effects, the sum rule)."""
        return cls(*read_graph_files(path))

    @property
    def logit_index(self) -> int:
        return len(self.nodes) - 1

    @property
    def leaf_layer(self) -> str:
        """Where the graph's input leaves sit: ``"input"`` (pixels) or the first block's input layer."""
        return self.nodes[0]["layer"]

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
        """The smallest set of nodes carrying ``threshold`` (a share in (0, 1]) of the total influence on the logit."""
        threshold = check_threshold(threshold)
        infl = self.influence()
        total = float(infl.sum())
        order = torch.argsort(infl, descending=True)
        cum = torch.cumsum(infl[order], 0) / max(total, 1e-30)
        n_keep = int((cum < threshold).sum()) + 1
        keep = sorted(int(i) for i in order[:n_keep])
        kinds = self.kinds()
        err = sum(float(infl[i]) for i, k in enumerate(kinds) if k == "error") / max(total, 1e-30)
        leaf = next((k for k in kinds if k in LEAF_KINDS), "pixels")
        return {"threshold": threshold, "kept": keep, "kept_nodes": n_keep, "nodes": len(self.nodes) - 1,
                "kept_by_kind": {k: sum(1 for i in keep if kinds[i] == k) for k in (leaf, "feature", "error")},
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
        """Sizes, the sum rule and the pruned figures at ``threshold`` (a share in (0, 1]), JSON-ready."""
        p = self.prune(threshold)
        kinds = self.kinds()
        leaf = next((k for k in kinds if k in LEAF_KINDS), "pixels")
        return {"target": self.target, "logit": round(self.logit, 6), "nodes": len(self.nodes),
                "by_kind": {k: kinds.count(k) for k in (leaf, "feature", "error", "logit")},
                "sum_rule_residual": self.sum_rule_residual(), **{f"pruned_{k}": v for k, v in p.items() if k != "kept"}}


def check_chain(transcoders: Sequence[Transcoder], arg: str = "transcoders") -> list[Transcoder]:
    """The transcoders as one chain: each block starts where the previous one ends."""
    tcs = check_transcoders(transcoders, arg=arg)
    for a, b in zip(tcs, tcs[1:]):
        if b.in_layer != a.out_layer:
            raise InputError(f"{arg}: must form a chain in model order: {b.feature_layer!r} reads {b.in_layer!r}, "
                             f"but the previous block {a.feature_layer!r} ends at {a.out_layer!r}")
    return tcs


def logits_path(model: nn.Module) -> str | None:
    """The module whose output is the class logits: the spec's ``logits_layer`` (resolved), or None for
    the model's own output."""
    from ..units import resolve_layer
    from ..zoo.spec import model_spec

    declared = model_spec(model).logits_layer
    return None if declared is None else resolve_layer(model, declared)


def model_logits(model: nn.Module, x: torch.Tensor, path: str | None) -> torch.Tensor:
    """``(N, K)`` logits of ``model`` at ``x``: its output, or the output of module ``path``. A model
    whose output is not one 2-D tensor and that declares no logits layer is refused, naming what to do."""
    if path is None:
        out = model(x)
        where = f"{type(model).__name__}'s output"
    else:
        got: dict = {}
        handle = model.get_submodule(path).register_forward_hook(lambda _m, _i, o: got.__setitem__("out", o))
        try:
            model(x)
        finally:
            handle.remove()
        out, where = got.get("out"), f"the logits layer {path!r}"
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise InputError(f"model: {where} is {what}, not (N, K) class logits; declare the logits module "
                         "(model.spec = ModelSpec(logits_layer='<module path>'), e.g. one head of a multi-head model)")
    return out


class GraphBuilder:
    """Builds graphs for one model and chain of transcoders (float64 copies made once, while the model
    is held for this thread; the user's model is not changed and not run again by :meth:`build`).

    The chain may start at the model input (leaves: pixel groups) or at a hidden layer (leaves: groups
    of that layer's positions, all channels). ``pixel_group`` is the side of a leaf group: default 4
    for pixels, 1 (every position its own node) for a hidden layer.
    """

    def __init__(self, model: nn.Module, transcoders: Sequence[Transcoder], *, pixel_group: int | None = None):
        from ..units import default_input_shape

        check_model(model)
        if pixel_group is not None:
            check_int(pixel_group, "pixel_group", minimum=1)
        # the lock for everything that reads or runs the user's model: the checks' trace and the copy (a copy taken
        # while another thread's hooks are on the model would carry those hooks into every graph)
        with using(model, what="GraphBuilder()"):
            check_transcoders(transcoders, model)
            self.tcs = check_chain(transcoders)
            try:
                self.input_shape = default_input_shape(model)
            except ValueError:  # default_input_shape's advice ("pass input_shape=") does not apply: the builder reads the spec
                raise InputError(f"model: {type(model).__name__} declares no input shape, which a graph needs (its leaves and "
                                 "every block's shape); set model.input_shape = (C, H, W) or declare it in the model's spec") from None
            leaf_shape = block_input_shape(model, self.tcs[0].in_layer, self.tcs[0].out_layer)
            self.logits_path = logits_path(model)
            self.reader = input_reader(model, self.tcs[0].out_layer) if self.tcs[0].in_layer == INPUT else None
            self.model = copy.deepcopy(model).cpu().double().eval()  # graphs are computed on the CPU in float64
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.leaf_layer = self.tcs[0].in_layer
        self.pixel_group = int(pixel_group) if pixel_group is not None else (4 if self.leaf_layer == INPUT else 1)
        side = min(leaf_shape[-2:])
        if self.pixel_group > side:
            raise InputError(f"pixel_group: {self.pixel_group}; the leaves ({self.leaf_layer!r}, {tuple(leaf_shape)}) are "
                             f"at most {side} positions on a side, so a group must be 1..{side}")
        self.modules = [copy.deepcopy(tc.module).cpu().double().eval() for tc in self.tcs]
        for m in self.modules:
            m.gradient = "exact"
        self.names = [tc.feature_layer for tc in self.tcs]
        with torch.no_grad():
            self.n_logits = int(self._logits(torch.zeros((1, *self.input_shape), dtype=torch.float64)).shape[1])

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model, x, self.logits_path)

    # -- the real activations and the local replacement
    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Block inputs, block outputs and logits of the (float64) model at ``x`` (1, C, H, W)."""
        from ..capture import capture

        if not (isinstance(x, torch.Tensor) and x.dtype == torch.float64 and x.ndim == 4 and x.shape[0] == 1):
            x = _as_batch(x, self.input_shape, arg="x")
        elif tuple(x.shape[1:]) != tuple(self.input_shape):
            raise InputError(f"x: shape {tuple(x.shape)}; expected one input of shape {tuple(self.input_shape)}")

        layers = [tc.out_layer for tc in self.tcs] + [tc.in_layer for tc in self.tcs if tc.in_layer != INPUT]
        seen: list[torch.Tensor] = []
        handle = None
        if self.reader is not None:  # a block from "input" reads what its first module receives (after inline preprocessing)
            handle = self.model.get_submodule(self.reader).register_forward_pre_hook(
                lambda _m, args: seen.append(args[0].detach().clone()))
        try:
            got = capture(self.model, x, sorted(set(layers)), detach=True)
        finally:
            if handle is not None:
                handle.remove()
        logits = self._logits(x)
        if self.reader is not None and len(seen) != 1:
            raise InputError(f"transcoders: {self.reader!r} (the module that reads the model input) ran {len(seen)} times in "
                             "one forward pass; a block from 'input' needs it to run once")
        ins = [seen[0] if tc.in_layer == INPUT else got[tc.in_layer] for tc in self.tcs]
        outs = [got[tc.out_layer] for tc in self.tcs]
        return ins, outs, logits

    def _head(self, a_last: torch.Tensor) -> torch.Tensor:
        """The model's logits with the last block's output set to ``a_last`` (the layers after it run)."""
        from ..capture import hooks

        x = torch.zeros((1, *self.input_shape), dtype=torch.float64)
        with hooks(self.model, {self.tcs[-1].out_layer: lambda _m, _i, _o: a_last.clone()}):  # clone: in-place layers after it
            return self._logits(x)

    def _frozen(self, leaf: torch.Tensor, zs: list[torch.Tensor], errs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pre-activations of each block and the last block's output, linear in (leaf, zs, errs)."""
        a, pres = leaf, []
        for m, z, e in zip(self.modules, zs, errs):
            pres.append(m.linear_pre_activations(a))
            a = m.decode(z, a) + e
        return pres, a

    def build(self, image: torch.Tensor, target: int) -> AttributionGraph:
        """The attribution graph of ``image`` (C, H, W) for logit ``target`` (an integer index)."""
        target = check_index(target, "target", what="a logit index (an integer)")
        if not 0 <= target < self.n_logits:
            raise TargetRangeError(f"target: {target}; must be a logit index in 0..{self.n_logits - 1}")
        x = _as_batch(image, self.input_shape)
        ins, outs, logits = self.activations(x)
        self._check_chain_values(ins, outs)
        leaf = ins[0]
        with torch.no_grad():
            zs = [m(a) for m, a in zip(self.modules, ins)]
            errs = [o - m.decode(z, a) for m, z, a, o in zip(self.modules, zs, ins, outs)]
        a_true = outs[-1].detach().clone().requires_grad_(True)
        logit_true = self._head(a_true)[0, target]  # the head, linearised at the true last-block output
        self._check_head(float(logit_true.detach()), float(logits[0, target]))
        (j_head,) = torch.autograd.grad(logit_true, a_true)  # (max-pool choices, ReLU signs frozen)
        active = [(z[0] > 0).nonzero() for z in zs]  # (n, 3): feature, y, x
        with torch.no_grad():
            zero_z, zero_e = [torch.zeros_like(z) for z in zs], [torch.zeros_like(e) for e in errs]
            pres0, a0 = self._frozen(torch.zeros_like(leaf), zero_z, zero_e)
            # the head's bias: its value at zero when it is affine given the frozen choices (ReLU, max pool
            # with no bias before them: checked), else the constant of its linearisation at this input
            head0 = float(self._head(torch.zeros_like(a_true))[0, target])
            lin_const = float(logit_true.detach()) - float((j_head * a_true.detach()).sum())
            head_affine = abs(head0 - lin_const) <= 1e-9 * max(1.0, abs(float(logit_true.detach())))
            layout = self._layout(leaf, zs, errs, active, pres0, float(logits[0, target]), float(logit_true.detach()),
                                  (head0 if head_affine else lin_const) + float((j_head * a0).sum()), target)
            edges = self._edges(leaf, zs, errs, active, j_head, layout)
        meta = {"feature_layers": self.names, "pixel_group": self.pixel_group, "input_shape": list(x.shape[1:]),
                "feature_shapes": [list(z.shape[1:]) for z in zs], "head_affine": head_affine,
                "logit_reproduced_error": abs(float(logit_true.detach()) - float(logits[0, target]))}
        return AttributionGraph(layout["nodes"], edges, target, float(logits[0, target]), meta)

    def _check_chain_values(self, ins: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
        """Each block reads exactly what the previous one wrote (a module called twice breaks this)."""
        for b in range(1, len(ins)):
            if ins[b].shape != outs[b - 1].shape or not torch.equal(ins[b], outs[b - 1]):
                raise InputError(f"transcoders: {self.names[b]!r} reads {self.tcs[b].in_layer!r}, whose recorded value differs "
                                 f"from the previous block's output (is the module called more than once?); no exact graph")

    def _check_head(self, head_logit: float, logit: float) -> None:
        """The logit computed from the last block's output alone must be the model's logit."""
        if abs(head_logit - logit) > 1e-7 * max(1.0, abs(logit)):
            out = self.tcs[-1].out_layer
            raise InputError(f"transcoders: the logits are not a function of the last block's output {out!r} alone (with it "
                             f"held fixed and the input changed, the logit moves from {logit:.6g} to {head_logit:.6g}: a skip "
                             f"connection around the block, or {out!r} is called more than once); end the chain at a layer "
                             "that every path to the logits passes through")

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

    def _edges(self, leaf, zs, errs, active, j_head, layout) -> torch.Tensor:
        n = len(layout["nodes"])
        edges = torch.zeros(n, n, dtype=torch.float64)
        in_hws = [tuple(leaf.shape[-2:])] + [tuple(z.shape[-2:]) for z in zs[:-1]]
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
            self._fill(edges, target_rows, grads, leaf, zs, errs, active, layout)
        return edges

    def _fill(self, edges, target_rows, grads, leaf, zs, errs, active, layout) -> None:
        if "x" in grads:
            gx = (grads["x"] * leaf).sum(1, keepdim=True)
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

    def _layout(self, leaf, zs, errs, active, pres0, logit, logit_head, logit_bias, target) -> dict:
        """Nodes in topological order (leaf groups, then per block its features and its error nodes, the logit)."""
        g = self.pixel_group
        _, _, h, w = leaf.shape
        nodes: list[dict] = []
        pooled = F.avg_pool2d(leaf.mean(1, keepdim=True), g, ceil_mode=True)
        kind, layer = ("pixels", "input") if self.leaf_layer == INPUT else ("activation", self.leaf_layer)
        start = len(nodes)
        for gy in range(pooled.shape[2]):
            for gxp in range(pooled.shape[3]):
                nodes.append({"kind": kind, "layer": layer, "y": gy, "x": gxp,
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


def _as_batch(image: torch.Tensor, shape: Sequence[int], arg: str = "image") -> torch.Tensor:
    """One image (C, H, W) or (1, C, H, W), checked (float, finite, in [0, 1]), as a float64 batch on the CPU."""
    x, _ = check_images(image, arg=arg)
    if x.shape[0] != 1 or tuple(x.shape[1:]) != tuple(shape):
        raise InputError(f"{arg}: shape {tuple(image.shape)}; expected one input of shape {tuple(shape)}")
    return x.detach().cpu().to(torch.float64)


def attribution_graph(model: nn.Module, transcoders: Sequence[Transcoder], image: torch.Tensor, target: int, *,
                      pixel_group: int | None = None) -> AttributionGraph:
    """One graph of ``image`` for logit ``target`` (see :class:`GraphBuilder` for many graphs of one model).

    ``transcoders`` is a chain in model order (each block starts where the previous one ends). It may
    start at the model input (``in_layer == "input"``: the leaves are pixel groups, ``pixel_group`` x
    ``pixel_group``, default 4) or at a hidden layer, e.g. ``[t2]`` alone for ``pool1 -> pool2``: the leaves
    are then that layer's values, grouped by position (all channels; default one node per position),
    kind ``"activation"``. The model itself is only read, under its lock: the graph is computed on a float64
    copy (after the layers the chain ends at, the model must compute the logits from its last block alone).
    """
    check_images(image, arg="image")  # a bad image or target is refused before the model is copied
    check_index(target, "target", what="a logit index (an integer)")
    return GraphBuilder(model, transcoders, pixel_group=pixel_group).build(image, target)
