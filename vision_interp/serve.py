"""``vision-interp serve``: a local server for the attribution-graph pages, so a page can ask the *real*
network what an intervention does.

The graph page predicts an intervention's effect from the frozen linear model (the graph's edges); only
the network itself can say what really happens. This module serves a folder of graph pages (each
``<folder>/graph.json`` + ``index.html``) and one endpoint, ``POST /api/intervene``: the page sends its
graph's folder, the chosen feature nodes and a scale, and gets back the change of every logit when all
those nodes are scaled together in the real model (one forward pass of two images).

Built on tornado (a well-kept server library, already present wherever Jupyter is); it listens on the
loopback interface only (``127.0.0.1``, ``::1`` or ``localhost``), refuses bodies over
:data:`MAX_BODY` bytes, more than ``max_nodes`` nodes per request, graph folders outside its root, and
anything that is not a finite scale within ``[-MAX_SCALE, MAX_SCALE]``. The model runs as a float64 copy
(the caller's model is never touched).
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .checks import InputError, InputTypeError, check_int, check_number
from .errors import FileContentError, check_model

__all__ = ["intervene", "GraphSession", "make_app", "serve", "LOOPBACK", "MAX_BODY", "MAX_SCALE", "image_from_doc"]

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_BODY = 64 * 1024  # bytes per request: a node list, never a payload
MAX_SCALE = 1000.0


@torch.no_grad()
def intervene(builder: Any, image: torch.Tensor, nodes: Sequence[dict], scale: float) -> dict:
    """The real network's logits with every feature node in ``nodes`` scaled by ``scale`` at once: to the
    output of the node's block, ``(scale - 1) * activation * decoder direction`` is added at the node's
    position and every later layer (the true blocks, not their transcoders) recomputes. Same rule as
    :func:`vision_interp.features.interventions.measure_interventions`, for a set of nodes together.
    ``builder`` is a :class:`~vision_interp.features.graph.GraphBuilder` (its float64 copy of the model runs)."""
    from .capture import hooks
    from .features.graph import _as_batch

    scale = check_number(scale, "scale", minimum=-MAX_SCALE, maximum=MAX_SCALE)
    x = _as_batch(image, builder.input_shape)
    if not nodes:
        raise InputError("nodes: empty; choose at least one feature node")
    bad = [n.get("id", n.get("index")) for n in nodes if n.get("kind") != "feature"]
    if bad:
        raise InputError(f"nodes: {bad[:5]} are not feature nodes; interventions act on transcoder features only")
    blocks = len(builder.tcs)
    fns = {}
    for b, tc in enumerate(builder.tcs):
        rows = [n for n in nodes if n["block"] == b]
        if rows:
            d = tc.module.directions.detach().cpu().double()
            fns[tc.out_layer] = _adder(rows, d, scale)
    if any(not 0 <= n["block"] < blocks for n in nodes):
        raise InputError(f"nodes: a node's block is outside 0..{blocks - 1}")
    batch = x.expand(2, *x.shape[1:])  # row 0: untouched, row 1: intervened
    from .features.graph import model_logits

    with hooks(builder.model, fns):  # the logits layer the graph explains (spec.logits_layer), not whatever forward returns
        logits = model_logits(builder.model, batch, builder.logits_path).double()
    before, after = logits[0], logits[1]
    if not torch.isfinite(after).all():
        raise InputError(f"scale: {scale} makes the network's logits non-finite")
    return {"scale": scale, "nodes": len(nodes), "logits_before": [round(float(v), 6) for v in before],
            "logits_after": [round(float(v), 6) for v in after], "change": [float(f"{float(v):.9g}") for v in after - before]}


def _adder(rows: list[dict], directions: torch.Tensor, scale: float):
    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for n in rows:
            out[1, :, n["y"], n["x"]] += (scale - 1.0) * n["value"] * directions[n["feature"]].to(out.dtype)
        return out
    return hook


def image_from_doc(doc: dict) -> torch.Tensor:
    """The graph's input image from a graph document: the exact float32 copy the page extras carry
    (``page.image_f32``), else the rounded rows older files hold."""
    page = doc.get("page") or {}
    if "image_f32" in page:
        shape = page["image_shape"]
        raw = base64.b64decode(page["image_f32"])
        t = torch.frombuffer(bytearray(raw), dtype=torch.float32)
        if t.numel() != math.prod(shape):
            raise FileContentError(f"graph.json: image_f32 holds {t.numel()} values, image_shape says {shape}")
        return t.reshape(shape).clone()
    if "image" not in doc:
        raise FileContentError("graph.json: no input image (neither page.image_f32 nor image)")
    rows = torch.tensor(doc["image"], dtype=torch.float32)
    c = (doc.get("meta") or {}).get("input_shape", [1])[0]
    return rows.reshape(c, -1, rows.shape[-1])


class GraphSession:
    """The graphs under one folder and the model they were built for: a graph is read (and checked
    against the model: the logit it records must be what the model computes) the first time a page asks."""

    def __init__(self, root: str | Path, model: nn.Module, *, max_nodes: int = 64):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise InputError(f"root: {root} is not a folder of graph pages")
        self.model = check_model(model)
        self.max_nodes = check_int(max_nodes, "max_nodes", minimum=1, maximum=4096)
        self._graphs: dict[str, tuple] = {}
        self._builders: dict[tuple, Any] = {}

    def _folder(self, graph: object) -> Path:
        if not isinstance(graph, str) or len(graph) > 500 or "\\" in graph or "\x00" in graph:
            raise InputError(f"graph: {graph!r}; give the graph's folder relative to the served root, e.g. 'digit_3'")
        folder = (self.root / graph).resolve()
        if folder != self.root and self.root not in folder.parents:
            raise InputError(f"graph: {graph!r} is outside the served folder")
        if not (folder / "graph.json").is_file():
            raise InputError(f"graph: {graph!r} has no graph.json under the served folder")
        return folder

    def graph(self, graph: str) -> tuple[dict, Any, torch.Tensor, dict[int, dict]]:
        """(document, builder, image, nodes by page id) of one graph folder."""
        from .features.graph import model_logits

        folder = self._folder(graph)
        key = str(folder)
        if key not in self._graphs:
            from . import io as vio
            from .features.graph import GraphBuilder
            from .features.transcoders import load_transcoder

            doc = vio.load_json(folder / "graph.json")
            names = tuple(doc.get("transcoders") or ())
            if not names:
                raise FileContentError(f"{folder / 'graph.json'}: names no transcoders; rebuild it with 'vision-interp graph'")
            if names not in self._builders:
                self._builders[names] = GraphBuilder(self.model, [load_transcoder(n) for n in names],
                                                     pixel_group=(doc.get("meta") or {}).get("pixel_group", 4))
            builder = self._builders[names]
            image = image_from_doc(doc)
            with torch.no_grad():
                got = float(model_logits(builder.model, image[None].double(), builder.logits_path)[0, int(doc["target"])])
            want = float(doc["summary"]["logit"])
            if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                raise FileContentError(f"{folder / 'graph.json'}: records logit {want:.6g}, the served model computes {got:.6g}; "
                                       "the graph was built for another model")
            from .features.graph_files import page_nodes

            page = doc.get("page")
            if page:  # the whole graph's nodes, by their index in it (the page's ids)
                nodes = {n["id"]: n for n in page_nodes(page, exact=True)}
            else:  # an older file: the pruned nodes, by their ids in the page
                nodes = {int(n["id"]): n for n in doc["nodes"]}
            self._graphs[key] = (doc, builder, image, nodes)
        return self._graphs[key]

    def request(self, body: object) -> dict:
        """Answer one intervention request ``{"graph": folder, "nodes": [ids], "scale": s}`` (checked)."""
        if not isinstance(body, dict):
            raise InputError("request: expected a JSON object {graph, nodes, scale}")
        unknown = sorted(set(body) - {"graph", "nodes", "scale"})
        if unknown:
            raise InputError(f"request: unknown fields {unknown}; expected graph, nodes, scale")
        ids = body.get("nodes")
        if not isinstance(ids, list) or not ids:
            raise InputError("nodes: expected a non-empty list of node ids")
        if len(ids) > self.max_nodes:
            raise InputError(f"nodes: {len(ids)} nodes; at most {self.max_nodes} per request")
        ids = [check_int(i, "nodes", minimum=0) for i in ids]
        scale = check_number(body.get("scale", 0.0), "scale", minimum=-MAX_SCALE, maximum=MAX_SCALE)
        doc, builder, image, nodes = self.graph(body.get("graph"))
        missing = [i for i in ids if i not in nodes]
        if missing:
            raise InputError(f"nodes: {missing[:5]} are not nodes of this graph")
        chosen = [nodes[i] for i in dict.fromkeys(ids)]
        out = intervene(builder, image, chosen, scale)
        t = int(doc["target"])
        return {**out, "target": t, "measured": out["change"][t], "source": "server"}


def make_app(session: GraphSession):
    """The tornado application: the graph pages as static files and ``/api/info``, ``/api/intervene``."""
    try:
        import tornado.web
    except ImportError as e:  # pragma: no cover - tornado ships with Jupyter; the message says what to install
        raise ImportError("vision-interp serve needs tornado: pip install tornado") from e

    class Info(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"server": "vision-interp serve", "max_nodes": session.max_nodes, "max_scale": MAX_SCALE})

    class Intervene(tornado.web.RequestHandler):
        def post(self) -> None:
            # Only our own pages on loopback: a JSON content type (a cross-site "simple" POST cannot send one without
            # a preflight, which this server never answers) and a loopback Host (no DNS rebinding).
            host = self.request.host.rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                self.set_status(403)
                self.write({"error": f"request: Host {self.request.host!r}; this server answers loopback requests only"})
                return
            if not self.request.headers.get("Content-Type", "").lower().startswith("application/json"):
                self.set_status(415)
                self.write({"error": "request: Content-Type must be application/json"})
                return
            if len(self.request.body) > MAX_BODY:
                self.set_status(413)
                self.write({"error": f"request: {len(self.request.body)} bytes; at most {MAX_BODY}"})
                return
            try:
                body = json.loads(self.request.body or b"null")
            except ValueError as e:
                self.set_status(400)
                self.write({"error": f"request: not JSON ({e})"})
                return
            try:
                self.write(session.request(body))
            except (InputError, InputTypeError) as e:  # the checked errors: the request's fault, named
                self.set_status(400)
                self.write({"error": str(e)})

    class Static(tornado.web.StaticFileHandler):
        def set_default_headers(self) -> None:  # how a page learns it is served by us, without a request that may 404
            self.set_header("Server-Timing", "vision-interp-serve")

    return tornado.web.Application([
        (r"/api/info", Info),
        (r"/api/intervene", Intervene),
        (r"/(.*)", Static, {"path": str(session.root), "default_filename": "index.html"}),
    ])


def serve(root: str | Path, model: nn.Module, *, host: str = "127.0.0.1", port: int = 8765, max_nodes: int = 64,
          ready=None) -> None:
    """Serve ``root`` (a folder of graph pages, e.g. ``galleries/features/mnist_cnn_tc/graphs``) on
    ``http://host:port/`` until interrupted. ``ready(port, stop)`` is called once it listens (port 0 picks a
    free one); ``stop()``, callable from any thread, shuts the server down and returns from ``serve``."""
    if host not in LOOPBACK:
        raise InputError(f"host: {host!r}; the server binds to the loopback interface only ({', '.join(LOOPBACK)})")
    port = check_int(port, "port", minimum=0, maximum=65535)
    session = GraphSession(root, model, max_nodes=max_nodes)
    import asyncio

    import tornado.httpserver

    import tornado.netutil

    async def main() -> None:
        server = tornado.httpserver.HTTPServer(make_app(session), max_body_size=MAX_BODY)
        sockets = tornado.netutil.bind_sockets(port, host)
        server.add_sockets(sockets)
        done, loop = asyncio.Event(), asyncio.get_running_loop()
        if ready is not None:
            ready(sockets[0].getsockname()[1], lambda: loop.call_soon_threadsafe(done.set))
        try:
            await done.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    asyncio.run(main())
