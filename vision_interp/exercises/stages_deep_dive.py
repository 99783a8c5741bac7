"""Stage 8 of the MNIST exercise: one conv2 unit rebuilt by hand from its written description, and
checked against the real unit."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import conv_units as CU
from . import plots as P
from .stages_common import _acts, _pearson, _r

HAND_R_THRESHOLD = 0.7  # the hand-written conv2 unit must correlate at least this well with the real one

# The written description of conv2:4 ("a near-vertical stroke"), from its conv1 weights (conv2_4_weights.png):
# "excited by conv1:3 (the left edge of a vertical stroke) along the two centre-right columns; inhibited by conv1:3
# on the left column and by conv1:0 (falling-diagonal edge) on the two left columns; inhibited by conv1:6 (blank
# paper) in the top-right block; mildly excited by conv1:1 (blank paper) on the second column."
HAND_DESCRIPTION = [
    # (conv1 channel, rows, cols, weight): set by hand from the sentence above, not copied
    (3, slice(0, 5), slice(2, 4), +0.2),
    (3, slice(0, 5), slice(0, 1), -0.2),
    (0, slice(0, 5), slice(0, 2), -0.25),
    (6, slice(0, 3), slice(2, 5), -0.2),
    (1, slice(0, 5), slice(1, 2), +0.15),
]
DEEP_UNIT = 4



def hand_kernel(n_in: int = 8) -> torch.Tensor:
    k = torch.zeros(1, n_in, 5, 5)
    for ch, rs, cs, v in HAND_DESCRIPTION:
        k[0, ch, rs, cs] = v
    return k



def stage_deep_dive(ex) -> None:
    m = ex.model
    acts = _acts(ex)
    real = acts["conv2"][:, DEEP_UNIT]
    hand = F.conv2d(acts["pool1"], hand_kernel(m.c1), padding=2)[:, 0]
    r = _pearson(hand, real)
    r_relu = _pearson(hand.clamp_min(0), real.clamp_min(0))
    terms = {}
    for j, (ch, rs, cs, v) in enumerate(HAND_DESCRIPTION):
        k = hand_kernel(m.c1)
        k[0, ch, rs, cs] = 0.0
        terms[f"conv1:{ch} {'+' if v > 0 else '-'}"] = _r(r - _pearson(F.conv2d(acts["pool1"], k, padding=2)[:, 0], real))
    from ..circuits import expanded_weights

    w = m.conv2.weight.detach()[DEEP_UNIT]
    vmax = float(w.abs().max())
    hk = hand_kernel(m.c1)[0]
    exp = expanded_weights(m, "normalize", "conv2", dst_channels=[DEEP_UNIT])[0, 0]  # pixels -> conv2:4, ReLU/pool linearised
    rows = [[{"img": exp, "signed": True, "title": "expanded: pixels -> conv2:4"}] + [None] * (m.c1 - 1),
            [{"img": w[i], "signed": True, "vmax": vmax, "title": f"real: from pool1:{i}"} for i in range(m.c1)],
            [{"img": hk[i], "signed": True, "vmax": vmax, "title": f"hand: from pool1:{i}"} for i in range(m.c1)]]
    p = P.panel_grid(rows, ex.fig_dir / "deep_dive_weights.png", row_labels=["expanded\n(pixel space)", "real conv2:4", "hand-written"], cell_size=1.8)
    ex.add_figure(p, "deepdive", "conv2:4 from its conv1 inputs: real weights vs hand-written",
                  "Top: the linearised pixel-space template of conv2:4 (ReLU and max-pool replaced by their linear stand-ins): an excitatory stroke (red) between inhibitory flanks (blue), slanted like the tuning peak reported in the text. Middle: the 5x5 weights from each conv1 channel (after ReLU and pooling) into conv2:4, on one symmetric scale. Bottom: the kernel "
                  "written by hand from the one-sentence description in the text (five constant blocks). Look at conv1:3's column pair and conv1:0/6's "
                  "negative blocks.")
    plt = P._plt()
    fig, ax = plt.subplots(figsize=(7, 6.2), dpi=P.DPI)
    sel = torch.randperm(real.numel(), generator=torch.Generator().manual_seed(0))[:6000]
    ax.scatter(hand.flatten()[sel], real.flatten()[sel], s=2, alpha=0.3)
    ax.set_xlabel("hand-written unit")
    ax.set_ylabel("real conv2:4 (pre-ReLU)")
    ax.set_title(f"all test positions: r = {r:.3f}")
    from ..images import save_figure

    p = save_figure(fig, ex.fig_dir / "deep_dive_scatter.png", colors=None)
    ex.add_figure(p, "deepdive", "Hand-written vs real conv2:4", "Each dot is one position of one test image (6000 of them drawn at random).")
    # tuning: real vs hand-written centre unit on synthetic strokes (best of 9 positions), every angle
    st = CU.stroke_stimuli(28, (14.5, 14.5))
    strokes = [k for k, s_ in enumerate(st) if s_["family"] == "stroke"]
    shifts = [(dy, dx) for dy in (-3, 0, 3) for dx in (-3, 0, 3)]
    imgs = torch.tensor(np.stack([CU.stroke_stimuli(28, (14.5 + dy, 14.5 + dx))[k]["image"] for dy, dx in shifts for k in strokes]),
                        dtype=torch.float32)[:, None]
    from ..capture import capture

    with torch.no_grad():
        sa = capture(m, imgs, ["pool1", "conv2"], detach=True)
    real_t = sa["conv2"][:, DEEP_UNIT, 7, 7].view(len(shifts), -1).max(0).values
    hand_t = F.conv2d(sa["pool1"], hand_kernel(m.c1), padding=2)[:, 0, 7, 7].view(len(shifts), -1).max(0).values
    angles = [st[k]["param"] for k in strokes]
    p = P.lines({}, ex.fig_dir / "deep_dive_tuning.png", title="", xlabel="stroke angle (deg)", ylabel="pre-ReLU response",
                panels={"conv2:4 vs the hand-written unit: stroke orientation tuning": {"real conv2:4": (angles, real_t.tolist()),
                                                                                         "hand-written": (angles, hand_t.tolist())}})
    ex.add_figure(p, "deepdive", "Orientation tuning, real vs hand-written",
                  "Response of the centre unit to a 10px stroke at each angle (best of 9 positions); compare the peak angles (given in the text). The hand-written "
                  "unit's scale differs because its weights are rounded constants.")
    tuning_r = _pearson(real_t, hand_t)
    ex.results["deep_dive"] = {"tuning_r": _r(tuning_r), "real_peak_angle": angles[int(real_t.argmax())], "hand_peak_angle": angles[int(hand_t.argmax())],"unit": f"conv2:{DEEP_UNIT}", "r": _r(r), "r_after_relu": _r(r_relu), "threshold": HAND_R_THRESHOLD,
                               "positions": int(real.numel()), "r_lost_without_term": terms,
                               "description": [{"conv1": ch, "rows": [rs.start, rs.stop], "cols": [cs.start, cs.stop], "weight": v} for ch, rs, cs, v in HAND_DESCRIPTION]}
