"""How far apart InceptionV1 ports are on the same weights: LRN settings and fixed vs TF "SAME" padding.

Runs vision_interp's InceptionV1 (Lucid's inception5h semantics) and the same module tree with the
LRN / padding of other PyTorch ports, on identical random weights and inputs, and prints the
relative difference per layer (max |a - b| / max |b| and ||a - b|| / ||b||) plus the output shapes
that fixed pads give at input sizes where TF's SAME padding differs.

    PYTHONPATH=. python benchmarks/inceptionv1_ports.py [--seed 0] [--batch 4]

Ports compared (LRN written in TF's terms: x / (bias + alpha * sum_{|d|<=r} x_d^2) ** beta):

* lucid/tf (this model): r=5, bias=2, alpha=1e-4, beta=0.5 -- the graph's LRN node attributes.
* lucent (and the neural-dream inception5h it was copied from): F.local_response_norm(size=9,
  alpha=1e-4, beta=0.5, k=1), i.e. r=4, bias=1, alpha=1e-4/9; fixed pads (2,3,2,3) for conv2d0 and
  (0,1,0,1) for every stride-2 max pool.
* vision_interp before issue 11: r=4, bias=1, alpha=1e-4 (TF-style), fixed pads as lucent.
"""

from __future__ import annotations

import argparse

import torch

from vision_interp.capture import capture
from vision_interp.zoo import inceptionv1

LAYERS = ["conv2d0", "localresponsenorm0", "conv2d1", "conv2d2", "mixed3a", "mixed4a", "mixed4e", "mixed5b", "logits"]
LRN = {
    "lucid/tf": dict(depth_radius=5, bias=2.0, alpha=1e-4),
    "lucent": dict(depth_radius=4, bias=1.0, alpha=1e-4 / 9),
    "vision_interp<=#11": dict(depth_radius=4, bias=1.0, alpha=1e-4),
}


def set_lrn(model, depth_radius: int, bias: float, alpha: float) -> None:
    for name in ("localresponsenorm0", "localresponsenorm1"):
        m = getattr(model, name)
        m.depth_radius, m.size, m.bias, m.alpha = depth_radius, 2 * depth_radius + 1, bias, alpha


def set_fixed_pads(model) -> None:
    """The fixed pads of lucent / ProGamerGov's converted definition, right only for even sizes."""
    model.conv2d0_pre_relu_conv.pad_amounts = lambda h, w: (2, 3, 2, 3)
    for name in ("maxpool0", "maxpool1", "maxpool4", "maxpool10"):
        getattr(model, name).pad_amounts = lambda h, w: (0, 1, 0, 1)


def he_init(model) -> None:
    """He-normal weights and zero biases: activations keep their scale through the depth, so LRN
    differences are not washed out by biases as they are with PyTorch's default init."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            else:
                fan_in = p[0].numel()
                p.normal_(0.0, (2.0 / fan_in) ** 0.5)


def set_ceil_mode_pools(model) -> None:
    """captum.optim's stride-2 pools: MaxPool2d(3, 2, padding=0, ceil_mode=True), i.e. no pad before,
    one window overhanging the end for even sizes and none for odd ones (its convs are TF SAME)."""
    for name in ("maxpool0", "maxpool1", "maxpool4", "maxpool10"):
        getattr(model, name).pad_amounts = lambda h, w: (0, int(h % 2 == 0), 0, int(w % 2 == 0))


def rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max()), float((a - b).norm() / b.norm())


def compare_lrn(model, x: torch.Tensor, title: str) -> None:
    acts = {}
    for port, lrn in LRN.items():
        set_lrn(model, **lrn)
        cache = capture(model, x, LAYERS, stop_early=False)
        acts[port] = {n: cache[n] for n in LAYERS}
    set_lrn(model, **LRN["lucid/tf"])
    print(f"{title}; relative difference to lucid/tf: max|a-b|/max|b| (||a-b||/||b||)")
    print(f"{'layer':<20}" + "".join(f"{p:>28}" for p in LRN if p != "lucid/tf"))
    for n in LAYERS:
        cells = [rel(acts[p][n], acts["lucid/tf"][n]) for p in LRN if p != "lucid/tf"]
        print(f"{n:<20}" + "".join(f"{m:>18.3f} ({l2:.3f})" for m, l2 in cells))
    lrn_in = capture(model, x, ["maxpool0"])["maxpool0"]
    window = torch.nn.functional.avg_pool3d((lrn_in**2).unsqueeze(1), (11, 1, 1), stride=1, padding=(5, 0, 0)).squeeze(1) * 11
    load = (1e-4 * window).flatten()
    print(f"  localresponsenorm0: alpha*sum(x^2) over 11 channels has median {float(load.median()):.3f}, "
          f"90th percentile {float(load.quantile(0.9)):.3f} (compare with the bias: 2 here, 1 in lucent)")


def compare_shapes(model) -> None:
    print("output shapes (H x W): TF SAME padding (this model), fixed pads (lucent), ceil-mode pools (captum.optim)")
    fixed, ceil = inceptionv1(), inceptionv1()
    set_fixed_pads(fixed)
    set_ceil_mode_pools(ceil)
    for size in (224, 227, 236):
        xi = torch.rand(1, 3, size, size)
        for label, m in (("tf", model), ("lucent", fixed), ("captum", ceil)):
            c = capture(m, xi, ["conv2d0", "mixed3a", "mixed4a", "mixed5b"])
            print(f"  {size}px {label:<7} " + " ".join(f"{k}={v.shape[2]}x{v.shape[3]}" for k, v in c.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = inceptionv1()
    x = torch.rand(args.batch, 3, 224, 224)
    compare_lrn(model, x, f"random weights, PyTorch default init (seed {args.seed}), {args.batch} random 224x224 inputs")
    he_init(model)
    compare_lrn(model, x, f"random weights, He-normal init and zero biases (seed {args.seed}), same inputs")
    compare_shapes(model)


if __name__ == "__main__":
    main()
