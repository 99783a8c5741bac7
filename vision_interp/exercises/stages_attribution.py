"""Stage 6 of the MNIST exercise: input attribution with five methods (integrated gradients from four
baselines, occlusion), their agreement, what each cannot show, and deletion/insertion faithfulness."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import plots as P
from .stages_common import _pearson, _r


def _blur(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    xp = F.conv2d(xp, k.view(1, 1, 1, -1))
    return F.conv2d(xp, k.view(1, 1, -1, 1))



def stage_attribution(ex) -> None:
    from ..attribution import attribute, deletion_insertion

    m = ex.model
    per = 4 if ex.cfg.quick else 10
    idx = ex.class_sample(per)
    xs, ys = ex.x[idx], ex.y[idx]
    gen = torch.Generator().manual_seed(ex.cfg.seed + 6)
    blurred = _blur(xs)
    baselines = {"IG black": torch.zeros_like(xs), "IG grey": torch.full_like(xs, 0.5), "IG blurred": blurred,
                 "IG noise": torch.rand(xs.shape, generator=gen)}
    steps = ex.cfg.ig_steps
    maps = {k: attribute(m, xs, ys, method="integrated_gradients", baselines=b, n_steps=steps) for k, b in baselines.items()}
    maps["occlusion (black 4x4)"] = attribute(m, xs, ys, method="occlusion", sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0)
    names = list(maps)
    bg = xs < 0.1
    absent = {k: _r(float((v.abs() * bg).sum() / v.abs().sum().clamp_min(1e-12))) for k, v in maps.items()}
    agree = [[_r(np.mean([_pearson(maps[a][i], maps[b][i]) for i in range(len(xs))])) for b in names] for a in names]
    # deletion / insertion (replacement: the blurred image, the same for every method) + a random ranking
    fracs = [0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]
    rankings = {k: torch.argsort(v.flatten(1), 1, descending=True) for k, v in maps.items()}
    rankings["random"] = torch.stack([torch.randperm(784, generator=gen) for _ in range(len(xs))])
    curves = {}
    for k, order in rankings.items():
        c = deletion_insertion(m, xs, ys, order=order, replacement=blurred, fractions=fracs)
        curves[k] = {"deletion": [_r(v) for v in c.deletion], "insertion": [_r(v) for v in c.insertion],
                     "deletion_auc": _r(c.deletion_auc), "insertion_auc": _r(c.insertion_auc)}
    ex.results["attribution"] = {"images": len(xs), "ig_steps": steps, "methods": names, "background_share": absent,
                                 "agreement_r": agree, "faithfulness": curves, "fractions": fracs,
                                 "cannot_show": {
                                     "IG black": "evidence from absent ink: (x - 0) is 0 on every background pixel, so blank paper gets exactly 0",
                                     "IG grey": "pixels whose value is near 0.5 (stroke borders) get ~0, and it credits background as 'darker than grey'",
                                     "IG blurred": "anything the blur keeps (coarse layout, position of the digit's mass)",
                                     "IG noise": "a single clean answer: each noise draw gives a different baseline; structure finer than the noise",
                                     "occlusion (black 4x4)": "absent ink (blacking out blank paper changes nothing) and detail finer than the 4x4 window"}}
    ex_idx = [int(torch.nonzero(ys == d).flatten()[0]) for d in (0, 4, 7, 9)]
    rows = []
    for i in ex_idx:
        row = [{"img": xs[i, 0], "title": f"test digit {int(ys[i])}"}]
        row += [{"img": maps[k][i, 0], "signed": True, "title": k} for k in names]
        rows.append(row)
    p = P.panel_grid(rows, ex.fig_dir / "attribution_baselines.png", cell_size=2.3)
    ex.add_figure(p, "attribution", "Attribution with five methods",
                  "Per image: integrated gradients towards the true class from four baselines, and occlusion by a black 4x4 patch; each map on its own "
                  "symmetric colourbar (red raises the logit). Look at the background: only the non-black baselines can mark blank paper (e.g. the hole "
                  "of a 0, the gap at the top of a 4) as evidence.")
    dpanels = {"deletion (lower = more faithful)": {k: (fracs, v["deletion"]) for k, v in curves.items()},
               "insertion (higher = more faithful)": {k: (fracs, v["insertion"]) for k, v in curves.items()}}
    p = P.lines({}, ex.fig_dir / "faithfulness.png", title="Deletion / insertion faithfulness", xlabel="fraction of pixels replaced/inserted",
                ylabel="mean probability of the true class", panels=dpanels)
    ex.add_figure(p, "attribution", "Deletion and insertion curves",
                  "Pixels are taken in each method's order (most positive first) and replaced by the blurred image (deletion) or inserted into it "
                  "(insertion); 'random' is a random order. A faithful ranking drops fast under deletion and rises fast under insertion.")
