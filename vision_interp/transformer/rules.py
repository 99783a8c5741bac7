"""The induction report's rules and names, stated once: detection thresholds, score definitions and colour
scales, how a head is written. The analysis (:mod:`.report`) and the page (:mod:`.html`) both read them here."""

from __future__ import annotations

import numpy as np

from ..checks import InputError, check_int, check_number

__all__ = ["INDUCTION_THRESHOLD", "PREV_TOKEN_THRESHOLD", "AGREEMENT_THRESHOLD", "SCORE_SCALES", "SCORE_DEFINITIONS",
           "format_head", "top_heads", "detected_heads"]

# Detection rules (stated in the report): a head is an induction / previous-token head when its score is at
# least this. Uniform causal attention gives about 1/(1.5*seq_len) (0.013 at seq_len 50).
INDUCTION_THRESHOLD = 0.4
PREV_TOKEN_THRESHOLD = 0.4
# An estimator of the ablation effects "tracks" the exact scan when Pearson r over all heads is at least this.
AGREEMENT_THRESHOLD = 0.8


def format_head(layer: int, head: int) -> str:
    """Heads are written ``layer.head`` (``5.1``), as in the induction-head literature."""
    check_int(layer, "layer", minimum=0)
    check_int(head, "head", minimum=0)
    return f"{layer}.{head}"


def top_heads(scores: np.ndarray, k: int = 5) -> list[tuple[int, int, float]]:
    """The ``k`` highest-scoring heads of an ``(L, H)`` array as ``(layer, head, score)``, best first."""
    check_int(k, "k", minimum=1)
    if np.ndim(scores) != 2:
        raise InputError(f"scores: shape {np.shape(scores)}; expected (n_layer, n_head)")
    flat = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    H = scores.shape[1]
    return [(int(i // H), int(i % H), float(flat[i])) for i in order]


def detected_heads(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Heads whose score is at least ``threshold``, best first."""
    check_number(threshold, "threshold")
    return [(l, h) for l, h, v in top_heads(scores, scores.size) if v >= threshold]


# Colour scale of each score's grid (see figures.SCALES).
SCORE_SCALES = {"copying": "signed_unit", "ablation_mean": "loss", "ablation_zero": "loss"}

SCORE_DEFINITIONS = {
    "induction": "mean attention from each second-copy position q to q-(seq_len-1) (the token after the previous "
                 "occurrence), over batch and second-copy queries",
    "previous_token": "mean attention from position i to i-1 over all i>=1 and the batch",
    "duplicate_token": "mean attention from each second-copy position q to q-seq_len (earlier copy of the same token)",
    "copying": "Re(sum lambda)/sum|lambda| over the nonzero eigenvalues of the full OV circuit W_E W_V W_O W_U (via the "
               "d_head x d_head matrix W_O W_U W_E W_V), W_U centred over the vocabulary, LayerNorm weights and centring folded",
    "copying_positive_share": "share of those eigenvalues with positive real part",
    "copying_top1": "share of tokens t whose own logit is the largest in row t of the full OV circuit (restricted to the "
                    "non-BOS vocabulary, or a seeded sample of 2048 tokens)",
    "ablation_mean": "increase of the mean second-copy loss when the head's z is replaced by its mean over batch and positions",
    "ablation_zero": "increase of the mean second-copy loss when the head's z is set to 0",
    "attribution_patching": "first-order estimate of the ablation effect: sum over batch and positions of "
                            "(z_ablated - z) . dLoss/dz, from one forward and one backward pass",
    "integrated_attribution_patching": "sum over batch and positions of (z_ablated - z) . dLoss/dz averaged over points "
                                       "alpha = (k+1/2)/steps on the straight line from clean to ablated z, all heads of "
                                       "all layers moved together (scope 'all'): steps forward + backward passes",
    "ablation_line": "rise of the second-copy loss with the largest-effect head's z moved a fraction t of the way to "
                     "its ablation; its slope at t=0 is attribution patching, its value at t=1 the exact effect",
    "k_composition": "||W_OV1 W_QK2^T||_F / (||W_OV1||_F ||W_QK2||_F), indexed [l1][h1][l2][h2], null where l1 >= l2",
    "q_composition": "||W_OV1 W_QK2||_F / (||W_OV1||_F ||W_QK2||_F)",
    "v_composition": "||W_OV1 W_OV2||_F / (||W_OV1||_F ||W_OV2||_F)",
    "composition_baseline": "mean of the same ratio for i.i.d. Gaussian W_V, W_O, W_Q, W_K of the heads' shapes",
    "joint_ablations": "second-copy loss with all detected induction heads ablated together, all previous-token heads "
                       "together, and only the keys of the induction heads reading the ablated previous-token heads",
    "second_copy_loss": "mean next-token loss predicting R[1:] in the second copy (first token of each copy excluded)",
}
