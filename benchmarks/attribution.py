"""Attribution speed on the MNIST CNN: images per second, and our API's overhead over raw Captum.

    python benchmarks/attribution.py [--n 1000] [--batch-size 100] [--repeats 3] [--threads N]

For saliency and integrated gradients (50 steps) it times, on the same batches of the MNIST test
set (targets = true labels): ``attribute_dataset`` (our API: validation, target resolution,
batching, progress bar off) and Captum called directly. Each is timed ``--repeats`` times,
alternating, and the fastest run is kept (the machine may be shared).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from captum.attr import IntegratedGradients, Saliency

    from vision_interp.attribution import attribute_dataset
    from vision_interp.attribution.methods import quiet_captum
    from vision_interp.data import load_mnist
    from vision_interp.zoo import mnist_cnn

    model = mnist_cnn().to(args.device)
    test = load_mnist("test", args.data_dir, limit=args.n)
    x, y = test.images.to(args.device), test.labels.to(args.device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    bs = args.batch_size

    def ours(method: str, **opts) -> None:
        attribute_dataset(model, x, y, method, batch_size=bs, progress=False, **opts)

    def captum(method: str, **opts) -> None:
        algo = Saliency(model) if method == "saliency" else IntegratedGradients(model)
        with quiet_captum():
            for i in range(0, len(x), bs):
                algo.attribute(x[i : i + bs], target=y[i : i + bs], **opts).detach().cpu()  # ours returns CPU tensors too

    print(f"MNIST CNN on {args.device}, {len(x)} test images, batches of {bs}, torch threads {torch.get_num_threads()}")
    for method, opts in (("saliency", {}), ("integrated_gradients", {"n_steps": 50})):
        ours(method, **opts)  # warm up (and fill the model profile cache, as in real use)
        best = {"ours": float("inf"), "captum": float("inf")}
        for _ in range(args.repeats):
            for name, fn in (("captum", captum), ("ours", ours)):
                t0 = time.perf_counter()
                fn(method, **opts)
                sync()
                best[name] = min(best[name], time.perf_counter() - t0)
        overhead = 100 * (best["ours"] / best["captum"] - 1)
        label = method + (" (50 steps)" if opts else "")
        print(f"{label:34s} ours {len(x) / best['ours']:9.1f} img/s   captum {len(x) / best['captum']:9.1f} img/s   "
              f"overhead {overhead:+.1f}%")


if __name__ == "__main__":
    main()
