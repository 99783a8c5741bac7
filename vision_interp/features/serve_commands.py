"""`vision-interp serve`: attribution-graph pages whose interventions run in the real network.

Thin: parses arguments and calls :func:`vision_interp.serve.serve` (bound to 127.0.0.1 only)."""

from __future__ import annotations

import argparse

from ..cli_common import Formatter, UsageError, add_model, existing_dir, int_arg, load_model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve attribution-graph pages on 127.0.0.1; interventions chosen on a page run in the real network",
        description="Serve a folder of attribution-graph pages (e.g. galleries/features/mnist_cnn_tc/graphs) on "
                    "http://127.0.0.1:PORT/. A page opened from this server sends the nodes you set to zero or scale "
                    "and shows the real network's logit change beside the frozen linear model's prediction; opened as a "
                    "file, the same page shows the changes precomputed when it was built, and says so. The server binds "
                    "to the loopback interface only, refuses a graph whose recorded logit the model does not reproduce, "
                    "and bounds every request (body size, --max-nodes). Ctrl+C stops it.\n\n"
                    "example: vision-interp serve galleries/features/mnist_cnn_tc/graphs --model mnist_cnn",
        formatter_class=Formatter)
    add_model(p)
    p.add_argument("dir", type=existing_dir, help="the folder of graph pages (each page's folder holds its graph.json)")
    p.add_argument("--port", type=int_arg(0, 65535), default=8765, help="port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--max-nodes", type=int_arg(1, 4096), default=64, help="most nodes one intervention request may change")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("tornado") is None:
        raise UsageError("serve needs the tornado web server: pip install 'vision_interp[serve]'")
    from ..serve import serve

    model = load_model_from_args(args)
    serve(args.dir, model, port=args.port, max_nodes=args.max_nodes,
          ready=lambda port, _stop: print(f"serving {args.dir} on http://127.0.0.1:{port}/ (Ctrl+C stops)", flush=True))
    return 0
