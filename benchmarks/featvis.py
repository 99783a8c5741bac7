"""Feature visualization: the Lucid recipe (preset "lucid", 512 steps) vs the defaults, as curves.

For InceptionV1 (He-init random weights, seed 0; 8 channel units across mixed3b, mixed4a, mixed4d,
mixed5b, rendered as one batch of 8 at 224 px) and the trained MNIST CNN (all 24 conv units,
centre neurons, one batch), each configuration is run once with the clean (untransformed)
activation of every unit measured at checkpoints (every 16 steps; every 8 up to 64 steps), and
the wall time of every step recorded. Curves are cached as JSON under ``benchmarks/results/`` (keyed by the whole
``RenderSettings.to_dict()``, the units and the seed), so the expensive 512-step reference runs once.

Printed per configuration:
  (a) s/step/image, measured interleaved in one process (``--timing-steps`` steps per config per
      round, alternating configs, median over rounds) so that machine load affects all alike;
  (b) activation reached: mean activation over units / the reference's 512-step mean (as in
      issue 18's "mean channel activation"), and the minimum over units of act/act_ref512;
  (c) wall time to reach the reference's 512-step activation (first checkpoint where the mean
      ratio >= 1.0), as a ratio of the reference's 512 steps: cost(steps_needed) / cost_ref(512),
      where each phase's steps are paid at that phase's (separately timed) s/step: coarse phases
      at their smaller size, the main phase, the pixel-basis polish; for a configuration with
      coarse phases, (a) is the mean over all its steps;
  the whole run's time as a ratio of the reference's;
  the frequency measure: share of spectral power above half Nyquist of the final images (mean
  over images; lower = smoother);
  the robust activation (InceptionV1): each final image's activation averaged over 16 draws of
  Lucid's standard transforms, mean over units, as a ratio of the reference's (does the gain
  survive the jitter/scale/rotation the reference was optimised under?);
  the periodicity: correlation of each final image with itself shifted by half its size (about 0
      for the reference; near 1 for a picture that is still a 2 x 2 tiling of a coarse phase's image);
  and the curve: mean activation ratio at each checkpoint, with the time ratio of that checkpoint.

Usage:
  python benchmarks/featvis.py --run inceptionv1:lucid      # compute one curve (cached)
  python benchmarks/featvis.py --report [--images docs/img]  # tables from cached curves (+ timing)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"

from vision_interp.featvis import RenderSettings, channel, neuron, preset, render  # noqa: E402
from vision_interp.featvis.settings import LARGE_INPUT_DEFAULT  # noqa: E402

INCEPTION_UNITS = [("mixed3b", 30), ("mixed3b", 300), ("mixed4a", 97), ("mixed4a", 476),
                   ("mixed4d", 100), ("mixed4d", 400), ("mixed5b", 200), ("mixed5b", 900)]

# name -> settings; "lucid" is the reference, "lucid-256" the default (measured, see docs/featvis.md)
INCEPTION_CONFIGS: dict[str, RenderSettings] = {
    "lucid": preset("lucid"),
    "lr0.2-cos-128": preset("lucid", lr=0.2, schedule="cosine", steps=128),
    "lr0.4-cos-128": preset("lucid", lr=0.4, schedule="cosine", steps=128),
    "lr0.4-cos-64": preset("lucid", lr=0.4, schedule="cosine", steps=64),
    "lr0.2-cos-64": preset("lucid", lr=0.2, schedule="cosine", steps=64),
    "lr0.1-cos-128": preset("lucid", lr=0.1, schedule="cosine", steps=128),
    "clamp-128": preset("lucid", valid="clamp", steps=128),
    "clamp-lr0.1-cos-128": preset("lucid", valid="clamp", lr=0.1, schedule="cosine", steps=128),
    "clamp-lr0.02-128": preset("lucid", valid="clamp", lr=0.02, steps=128),
    "clamp-lr0.01-128": preset("lucid", valid="clamp", lr=0.01, steps=128),
    "clamp-lr0.02-256": preset("lucid", valid="clamp", lr=0.02, steps=256),
    "lucid-256": preset("lucid-256"),
    "decay1.5-polish-48": preset("lucid", decay_power=1.5, steps=48, polish_fraction=0.125),
    "decay1.5-polish-64": preset("lucid", decay_power=1.5, steps=64, polish_fraction=0.125),
    "polish-64": preset("lucid", steps=64, polish_fraction=0.125),  # the pixel polish without the smoother basis
    "decay1.5-64": preset("lucid", decay_power=1.5, steps=64),  # the smoother basis without the polish
    "decay1.25-64": preset("lucid", decay_power=1.25, steps=64),
    "decay1.5-128": preset("lucid", decay_power=1.5, steps=128),
    "betas0.97-128": preset("lucid", betas=(0.97, 0.999), steps=128),
    "polish-decay1.25-64": preset("lucid", decay_power=1.25, steps=64, polish_fraction=0.125),
    "smooth-256": preset("smooth-256"),
    # coarse-to-fine: most steps on 112 px images (tiled up), then a few at 224 px with a gentler lr
    "pyramid": preset("pyramid"),
    "pyramid-quarter": preset("pyramid", steps=352),
    "pyramid-2of3-384": preset("pyramid", steps=384, coarse_phases=((2, 2 / 3, 0.05),)),
    "pyramid-2of3-576": preset("pyramid", steps=576, coarse_phases=((2, 2 / 3, 0.05),)),
}
MNIST_CONFIGS: dict[str, RenderSettings] = {
    # the Lucid recipe at the only size the MNIST CNN accepts: no size-changing transforms
    "lucid": preset("lucid", transforms="none", decorrelate=False),
    "lucid+shift2": preset("lucid", transforms="small", decorrelate=False),
    "pixel-sigmoid-small-lr0.2-128": preset("exact", valid="sigmoid", transforms="small", steps=128),  # the old default
    "pixel-sigmoid-lr0.2": preset("exact", valid="sigmoid"),
    "exact": preset("exact"),
    "exact-sd0": preset("exact", sd=0.0),
    "fft-lr0.2-cos-128": preset("lucid", transforms="none", decorrelate=False, lr=0.2, schedule="cosine", steps=128),
    "fft-lr0.2-cos-64": preset("lucid", transforms="none", decorrelate=False, lr=0.2, schedule="cosine", steps=64),
    "fft-lr0.4-cos-64": preset("lucid", transforms="none", decorrelate=False, lr=0.4, schedule="cosine", steps=64),
    "fft-lr0.1-128": preset("lucid", transforms="none", decorrelate=False, lr=0.1, steps=128),
    "fft-lr0.1-betas0.7-0.8-128": preset("lucid", transforms="none", decorrelate=False, lr=0.1, betas=(0.7, 0.8), steps=128),
    "fft-lr0.1-polish-128": preset("lucid", transforms="none", decorrelate=False, lr=0.1, steps=128, polish_fraction=0.125),
    "fast-small": preset("fast-small"),
}


def he_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """He (Kaiming normal, fan-in, ReLU gain) weights and zero biases for every conv, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            fan_in = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            mod.weight.data = torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
            if mod.bias is not None:
                mod.bias.data.zero_()
    return model


INCEPTION_SIZE = 224  # --size changes it (the whole table is then measured at that size)


def load(model_name: str):
    """(model, objectives, unit names, configs, input_shape); built once per model and size (the He
    initialisation of InceptionV1 is not free, and every table, timing and check reads the same model)."""
    return _load(model_name, INCEPTION_SIZE)


@functools.lru_cache(maxsize=None)
def _load(model_name: str, inception_size: int):
    """Uncached :func:`load`."""
    if model_name == "inceptionv1":
        from vision_interp.zoo import inceptionv1

        m = he_init(inceptionv1(pretrained=False))
        units = [f"{l}:{c}" for l, c in INCEPTION_UNITS]
        return m, [channel(u) for u in units], units, INCEPTION_CONFIGS, (3, inception_size, inception_size)
    from vision_interp.zoo import mnist_cnn

    m = mnist_cnn()
    units = [f"conv1:{c}" for c in range(8)] + [f"conv2:{c}" for c in range(16)]
    return m, [neuron(u) for u in units], units, MNIST_CONFIGS, (1, 28, 28)


def clean_values(model: nn.Module, objectives, images: torch.Tensor) -> list[float]:
    """Objective i on image i, without transforms, in fp32."""
    from vision_interp.featvis import evaluate_objective

    return [float(evaluate_objective(model, o, images[i : i + 1])[0]) for i, o in enumerate(objectives)]


def robust_values(model: nn.Module, objectives, images: torch.Tensor, draws: int = 16, seed: int = 0) -> list[float]:
    """Objective i on image i averaged over ``draws`` random draws of Lucid's standard transforms (the
    same draws for every configuration): how much of an image's activation survives the jitter, scale
    and rotation the reference was optimised under. A gain that only holds on the exact pixels
    (an adversarial-style perturbation) does not."""
    from vision_interp.featvis import evaluate_objective
    from vision_interp.featvis.transform import make_transforms

    tf, gen = make_transforms("standard"), torch.Generator().manual_seed(seed)
    return [float(evaluate_objective(model, o, tf(images[i : i + 1].repeat(draws, 1, 1, 1), gen)).mean())
            for i, o in enumerate(objectives)]


def robust_curve(model_name: str, name: str, seed: int = 0) -> list[tuple[int, float, float]]:
    """(step, mean clean activation, mean robust activation) at steps 32, 64, 96, 128, 256, 384, 512 (those
    within the configuration's steps): whether a configuration's gains over the steps are robust."""
    model, objs, _units, configs, shape = load(model_name)
    s = configs[name].replace(input_shape=shape)
    steps = sorted({k for k in (32, 64, 96, 128, 256, 384, 512) if k <= s.steps} | {s.steps})
    res = render(model, objs, s, seed=seed, thresholds=steps, progress=False)
    rows = [(k, statistics.mean(clean_values(model, objs, res.snapshots[k])),
             statistics.mean(robust_values(model, objs, res.snapshots[k]))) for k in steps]
    print(f"{model_name} {name}: " + " | ".join(f"{k}: clean {c:.1f} robust {r:.1f}" for k, c, r in rows), flush=True)
    return rows


def seed_check(model_name: str, name: str, seeds=(1, 2, 3)) -> list[tuple[int, float, float]]:
    """(seed, mean activation / the reference's with the same seed, HF share) for other seeds than the
    tables' seed 0: is the configuration's margin over the reference more than a lucky start?"""
    model, objs, _units, configs, shape = load(model_name)
    ref, new = configs["lucid"].replace(input_shape=shape), configs[name].replace(input_shape=shape)
    rows = []
    for seed in seeds:
        r = statistics.mean(clean_values(model, objs, render(model, objs, ref, seed=seed, progress=False).images))
        images = render(model, objs, new, seed=seed, progress=False).images
        rows.append((seed, statistics.mean(clean_values(model, objs, images)) / r, high_frequency_share(images)))
        print(f"{model_name} {name} seed {seed}: {rows[-1][1]:.4f}x the reference (same seed), HF share {rows[-1][2]:.4f}", flush=True)
    return rows


def high_frequency_share(images: torch.Tensor) -> float:
    """Share of spectral power (mean removed) above half the Nyquist frequency, mean over images and channels.

    Frequencies in cycles/pixel: Nyquist is 0.5, so the cut is at radial frequency 0.25.
    """
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(x).abs() ** 2
    fy = torch.fft.fftfreq(x.shape[-2])[:, None]
    fx = torch.fft.rfftfreq(x.shape[-1])[None, :]
    high = (fx ** 2 + fy ** 2).sqrt() > 0.25
    share = (power * high).sum(dim=(-2, -1)) / power.sum(dim=(-2, -1)).clamp_min(1e-12)
    return float(share.mean())


def periodicity(images: torch.Tensor) -> float:
    """Correlation of each image (mean removed) with itself shifted by half its size, mean over the two
    axes and the images: about 0 for a picture with no repeat at that period, 1 for an exact 2 x 2
    tiling (what coarse phases start the full-size steps from). Blank images (a dead unit) count as 0."""
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    energy = x.pow(2).sum(dim=(1, 2, 3))
    corr = []
    for dim in (-2, -1):
        shifted = torch.roll(x, x.shape[dim] // 2, dims=dim)
        corr.append(torch.where(energy > 1e-6, (x * shifted).sum(dim=(1, 2, 3)) / energy.clamp_min(1e-6), torch.zeros_like(energy)))
    return float(torch.stack(corr).mean())


def _cache_path(model_name: str, name: str) -> Path:
    size = f"_{INCEPTION_SIZE}px" if model_name == "inceptionv1" else ""
    return RESULTS / f"featvis_{model_name}{size}_{name}.json"


def _computation_key(settings: RenderSettings, units: list[str], seed: int, every: int) -> dict:
    """What decides a curve: the settings without the preset label, the units, the seed, the checkpoint spacing."""
    d = settings.to_dict()
    d.pop("preset")
    return {"settings": d, "units": units, "seed": seed, "every": every}


def _cached(model_name: str, key: dict) -> dict | None:
    """A cached curve with the same computation key (under any configuration name)."""
    for path in sorted(RESULTS.glob(f"featvis_{model_name}*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        stored = dict(data.get("key") or {})
        # settings added after a curve was cached take their default (the value that curve ran with)
        settings = {**RenderSettings().to_dict(), **(stored.get("settings") or {})}
        stored["settings"] = {k: v for k, v in settings.items() if k != "preset"}
        if stored == key:
            return data
    return None


def run_curve(model_name: str, name: str, *, every: int | None = None, seed: int = 0, force: bool = False) -> dict:
    """One configuration's curve (cached); checkpoints every 16 steps (every 8 up to 64 steps)."""
    model, objs, units, configs, shape = load(model_name)
    s = configs[name].replace(input_shape=shape)
    every = every or (8 if s.steps <= 64 else 16)
    key = _computation_key(s, units, seed, every)
    path = _cache_path(model_name, name)
    cached = None if force else _cached(model_name, key)
    if cached is not None:
        return cached
    checkpoints = list(range(every, s.steps + 1, every))
    if s.steps not in checkpoints:
        checkpoints.append(s.steps)
    times: list[float] = []
    t0 = time.perf_counter()
    res = render(model, objs, s, seed=seed, thresholds=[0] + checkpoints, progress=False,
                 on_step=lambda step, v: times.append(time.perf_counter() - t0))
    curve = {step: clean_values(model, objs, res.snapshots[step]) for step in [0] + checkpoints}
    out = {
        "key": key, "model": model_name, "config": name, "units": units,
        "step_seconds": times, "curve": {str(k): v for k, v in curve.items()},
        "final": res.values.tolist(), "hf_share": high_frequency_share(res.images),
        "robust": robust_values(model, objs, res.images) if model_name == "inceptionv1" else None,
        "images": res.images.mul(255).round().to(torch.uint8).tolist() if model_name == "mnist" else None,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    from vision_interp.io import save_json

    save_json(path, out, indent=None)
    if model_name == "inceptionv1":  # keep the final images small on disk: uint8 PNG-ready tensor
        torch.save(res.images.mul(255).round().to(torch.uint8), path.with_suffix(".images.pt"))
    print(f"{model_name} {name}: {s.steps} steps in {times[-1] if times else 0:.0f} s; mean final {statistics.mean(out['final']):.3f}", flush=True)
    return out


def per_step_signature(s: RenderSettings) -> tuple:
    """What a main-phase step costs depends on these only (not on lr, schedule, betas, step count, or
    batch_size, which only chunks visualize_layer: render() optimises all given objectives at once)."""
    d = s.to_dict()
    return tuple((k, str(d[k])) for k in ("param", "decorrelate", "valid", "transforms", "precision", "channels_last", "input_shape"))


def _phase_settings(s: RenderSettings, steps: int, polish: bool) -> RenderSettings:
    """``steps`` steps of only the main phase, or only the pixel-basis polish, of ``s``."""
    if not polish:
        return s.replace(steps=steps, polish_fraction=0.0)
    return s.replace(steps=steps + 1, polish_fraction=steps / (steps + 1))  # one main step, then ``steps`` polish steps


def _main_signature(s: RenderSettings) -> tuple:
    return ("main",) + per_step_signature(s)


def phases(s: RenderSettings) -> list[tuple[tuple, int, RenderSettings]]:
    """(timing signature, steps, full-size-free settings of that phase) for each phase of ``s`` in order:
    every coarse phase (at its own size), the main phase, the polish."""
    out = []
    c, h, w = s.input_shape
    for (divisor, _fraction, _lr), n in zip(s.coarse_phases, s.phase_steps()):
        sub = s.replace(coarse_phases=(), input_shape=(c, max(1, h // divisor), max(1, w // divisor)), polish_fraction=0.0)
        out.append((_main_signature(sub), n, sub))
    base = s.replace(coarse_phases=())
    out.append((_main_signature(base), s.main_steps, base.replace(polish_fraction=0.0)))
    if s.polish_steps:
        out.append((("polish",) + per_step_signature(base), s.polish_steps, base))
    return out


def time_per_step(model_name: str, names: list[str], steps: int, rounds: int) -> dict[tuple, float]:
    """s/step/image of every distinct phase (coarse phases at their size, main phase, polish) of the
    configurations, interleaved: each round renders every phase signature for ``steps`` steps in turn
    (after one warm-up), median over rounds. The polish phase (pixel basis, no transforms) is timed as
    one main step plus ``steps`` polish steps, less the main step timed in the same round."""
    model, objs, _units, configs, shape = load(model_name)
    timed: dict[tuple, RenderSettings] = {}
    for n in names:
        for sig, _n, sub in phases(configs[n].replace(input_shape=shape)):
            if sig[0] == "main":
                timed.setdefault(sig, _phase_settings(sub, steps, False))
    for n in names:
        for sig, _n, sub in phases(configs[n].replace(input_shape=shape)):
            if sig[0] == "polish":
                timed.setdefault(sig, _phase_settings(sub, steps, True))
    samples: dict[tuple, list[float]] = {sig: [] for sig in timed}
    for s in timed.values():
        render(model, objs, s, progress=False)  # warm-up
    for _ in range(rounds):
        main_now: dict[tuple, float] = {}
        for sig, s in timed.items():  # main phases first (dict order), so a polish timing can subtract its main step
            t = time.perf_counter()
            render(model, objs, s, progress=False)
            seconds = (time.perf_counter() - t) / len(objs)
            if sig[0] == "main":
                main_now[sig] = seconds / steps
                samples[sig].append(seconds / steps)
            else:
                samples[sig].append((seconds - main_now[_main_signature(s)]) / steps)
    return {sig: statistics.median(v) for sig, v in samples.items()}


def cost(settings: RenderSettings, step: int, sps: dict[tuple, float]) -> float:
    """Seconds per image to run the first ``step`` steps of ``settings``: each phase's steps at that
    phase's s/step (coarse phases, main phase, polish)."""
    total, left = 0.0, step
    for sig, n, _sub in phases(settings):
        k = min(left, n)
        total, left = total + k * sps[sig], left - k
    return total


def ratios(curve: dict, reference: dict) -> dict[int, tuple[float, float]]:
    """Per checkpoint: (mean activation over units / the reference's 512-step mean, min over units
    of act / ref among units the reference activates (> 0); a unit that stays at 0 under every
    configuration, e.g. a dead ReLU channel, cannot be divided by)."""
    ref_final = reference["curve"][str(max(int(k) for k in reference["curve"]))]
    ref_mean = statistics.mean(ref_final)
    out = {}
    for k, vals in curve["curve"].items():
        per_unit = [v / f for v, f in zip(vals, ref_final) if f > 0]
        out[int(k)] = (statistics.mean(vals) / ref_mean, min(per_unit))
    return dict(sorted(out.items()))


def summarise(model_name: str, names: list[str], reference: str, default: str, timing_steps: int, rounds: int,
              images_dir: str | None) -> list[dict]:
    curves = {n: run_curve(model_name, n) for n in names}
    sps = time_per_step(model_name, names, timing_steps, rounds)
    ref = curves[reference]
    ref_steps = max(int(k) for k in ref["curve"])
    settings = {n: RenderSettings.from_dict(curves[n]["key"]["settings"]) for n in names}
    ref_cost = cost(settings[reference], ref_steps, sps)
    rows = []
    print(f"\n== {model_name}: {len(ref['units'])} units ({', '.join(ref['units'][:8])}{', ...' if len(ref['units']) > 8 else ''}); "
          f"reference = {reference!r} ({ref_steps} steps) ==")
    print(f"{'configuration':34s} {'s/step/img':>10s} {'steps':>5s} {'act/ref (mean)':>14s} {'(min unit)':>10s} "
          f"{'steps to 1.0x':>13s} {'time to 1.0x / ref':>18s} {'HF share':>8s} {'run time / ref':>14s} {'robust act/ref':>14s} "
          f"{'periodicity':>12s}")
    robust = {n: statistics.mean(r) for n in names if (r := _robust(model_name, curves[n])) is not None}
    for n in names:
        c = curves[n]
        rs = ratios(c, ref)
        last = max(rs)
        reach = next((k for k, (mean, _) in rs.items() if k > 0 and mean >= 1.0), None)
        t_ratio = cost(settings[n], reach, sps) / ref_cost if reach is not None else None
        per_step = cost(settings[n], last, sps) / last
        robust_ratio = robust[n] / robust[reference] if n in robust and reference in robust else None
        period = _periodicity(c)
        rows.append(dict(config=n, s_per_step_image=per_step, time_ratio=cost(settings[n], last, sps) / ref_cost,
                         robust_ratio=robust_ratio, steps=last, ratio_mean=rs[last][0], ratio_min=rs[last][1],
                         steps_to_ref=reach, time_to_ref_ratio=t_ratio, hf_share=c["hf_share"], periodicity=period, curve=rs,
                         settings=c["key"]["settings"]))
        print(f"{n:34s} {per_step:10.4f} {last:5d} {rs[last][0]:14.3f} {rs[last][1]:10.3f} "
              f"{(str(reach) if reach else 'never'):>13s} {(f'{t_ratio:.3f}' if t_ratio is not None else '-'):>18s} {c['hf_share']:8.4f} "
              f"{rows[-1]['time_ratio']:14.3f} {(f'{robust_ratio:.3f}' if robust_ratio is not None else '-'):>14s} "
              f"{(f'{period:.3f}' if period is not None else '-'):>12s}")
    print("curves (mean act/ref512 at checkpoint step; time as a fraction of the reference's 512-step time):")
    for row in rows:
        st = settings[row["config"]]
        pts = "  ".join(f"{k}:{m:.3f}@{cost(st, k, sps) / ref_cost:.3f}" for k, (m, _) in row["curve"].items() if k)
        print(f"  {row['config']:32s} {pts}")
    if images_dir:
        save_side_by_side(model_name, curves[reference], curves[default], reference, default, Path(images_dir))
    return rows


def _robust(model_name: str, curve: dict) -> list[float] | None:
    """The curve's robust values; for curves cached before they were recorded, computed from the
    saved final images (uint8) and stored; None for MNIST or when the images are not on disk."""
    if model_name != "inceptionv1":
        return None
    if curve.get("robust") is None:
        try:
            images = _final_images(curve)
        except FileNotFoundError:
            return None
        model, objs, *_ = load(model_name)
        curve["robust"] = robust_values(model, objs, images)
        from vision_interp.io import save_json

        save_json(_cache_path(model_name, curve["config"]), curve, indent=None)
    return curve["robust"]


def _periodicity(curve: dict) -> float | None:
    """:func:`periodicity` of the curve's final images; None when they are not on disk."""
    try:
        return periodicity(_final_images(curve))
    except FileNotFoundError:
        return None


def _final_images(curve: dict) -> torch.Tensor:
    if curve.get("images") is not None:
        return torch.tensor(curve["images"], dtype=torch.float32) / 255
    path = _cache_path(curve["model"], curve["config"]).with_suffix(".images.pt")
    return torch.load(path, weights_only=True).float() / 255


def save_side_by_side(model_name: str, ref: dict, new: dict, ref_name: str, new_name: str, out: Path) -> None:
    """Two rows (reference, default), one column per unit, small enough for the docs."""
    import torch.nn.functional as F

    from vision_interp.images import make_grid, save_png

    a, b = _final_images(ref), _final_images(new)
    if a.shape[-1] > 96:
        a, b = (F.interpolate(t, size=(112, 112), mode="area") for t in (a, b))
    grid = make_grid(torch.cat([a, b]), ncols=len(a))
    path = save_png(grid, out / f"featvis_{model_name}_{ref_name}_vs_{new_name}.png", scale=1 if a.shape[-1] > 96 else 3)
    print(f"wrote {path} (top row: {ref_name}, bottom row: {new_name}; units {', '.join(ref['units'])})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="MODEL:CONFIG to compute (cached); repeatable")
    ap.add_argument("--force", action="store_true", help="recompute even when cached")
    ap.add_argument("--seed-check", action="append", default=[], metavar="MODEL:CONFIG",
                    help="activation of CONFIG / the reference's for seeds 1, 2, 3 (not cached)")
    ap.add_argument("--robust-curve", action="append", default=[], metavar="MODEL:CONFIG",
                    help="print clean and transform-robust activation at steps 32..512 of one configuration (not cached)")
    ap.add_argument("--report", action="store_true", help="print tables from the cached curves (computing missing ones)")
    ap.add_argument("--models", default="inceptionv1,mnist")
    ap.add_argument("--configs", default=None,
                    help="comma-separated configurations to report (default: all; the reference and the default are always included)")
    ap.add_argument("--timing-steps", type=int, default=2)
    ap.add_argument("--timing-rounds", type=int, default=3)
    ap.add_argument("--images", default=None, help="folder for reference-vs-default PNGs (e.g. docs/img)")
    ap.add_argument("--json", default=None, help="also write the summary rows here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="InceptionV1 image size (the reference and all configurations)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global INCEPTION_SIZE
    INCEPTION_SIZE = args.size
    for spec in args.run:
        model_name, name = spec.split(":", 1)
        run_curve(model_name, name, force=args.force)
    for spec in args.seed_check:
        model_name, name = spec.split(":", 1)
        seed_check(model_name, name)
    for spec in args.robust_curve:
        model_name, name = spec.split(":", 1)
        robust_curve(model_name, name)
    if args.report:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
        summary = {}
        for model_name in args.models.split(","):
            configs = INCEPTION_CONFIGS if model_name == "inceptionv1" else MNIST_CONFIGS
            default = LARGE_INPUT_DEFAULT if model_name == "inceptionv1" else "fast-small"
            names = list(configs)
            if args.configs:
                wanted = set(args.configs.split(",")) | {"lucid", default}
                unknown = wanted - set(configs)
                names = [n for n in names if n in wanted]
                if unknown - set(INCEPTION_CONFIGS) - set(MNIST_CONFIGS):
                    ap.error(f"--configs: unknown configuration(s) {sorted(unknown)}")
            summary[model_name] = summarise(model_name, names, "lucid", default, args.timing_steps, args.timing_rounds, args.images)
        if args.json:
            from vision_interp.io import save_json

            save_json(args.json, summary)
        print("\nmarkdown summary:\n" + markdown(summary))


def markdown(summary: dict) -> str:
    """The summary tables as markdown (for docs/featvis.md)."""
    lines = []
    for model_name, rows in summary.items():
        lines += [f"**{model_name}**", "",
                  "| configuration | s/step/image | steps | run time / reference | activation / reference-512 (mean, min unit) | steps to 1.0x | time to 1.0x / reference | HF share | robust activation / reference | periodicity |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            t = f"{r['time_to_ref_ratio']:.3f}" if r["time_to_ref_ratio"] is not None else "never"
            rob = f"{r['robust_ratio']:.3f}" if r.get("robust_ratio") is not None else "-"
            per = f"{r['periodicity']:.3f}" if r.get("periodicity") is not None else "-"
            lines.append(f"| {r['config']} | {r['s_per_step_image']:.4f} | {r['steps']} | {r['time_ratio']:.3f} | {r['ratio_mean']:.3f}, {r['ratio_min']:.3f} | "
                         f"{r['steps_to_ref'] or 'never'} | {t} | {r['hf_share']:.4f} | {rob} | {per} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
