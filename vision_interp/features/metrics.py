"""What a dictionary is worth, measured: reconstruction, sparsity, dead features, the model's
accuracy on the reconstruction, rank-matched baselines (PCA, NMF), and monosemanticity of
features vs the layer's neurons.

Monosemanticity is measured by the labels of each unit's top-activating test images (activation =
the unit's maximum over positions): *class purity* is the share of the most common label among
the top ``n`` images (1.0 = all one digit, 0.1 = chance for balanced classes) and *label entropy*
is the entropy of their labels in bits (0 = one digit, log2(10) = 3.32 = uniform).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..checks import InputError, check_int, check_matrix
from .attach import attached
from .dictionary import Dictionary, as_samples, layer_activations
from .sae import fvu

__all__ = ["reconstruction_metrics", "pca_baseline", "nmf_baseline", "replaced_accuracy", "unit_max_activations",
           "label_purity", "summarize", "evaluate_dictionary"]


def _check_samples(samples: torch.Tensor, arg: str, width: int) -> None:
    check_matrix(samples, arg)
    if samples.shape[1] != width:
        raise InputError(f"{arg}: {samples.shape[1]} values per sample; the dictionary reads {width} (its layer's channels)")


def _check_pair(train: torch.Tensor, test: torch.Tensor) -> None:
    check_matrix(train, "train")
    check_matrix(test, "test")
    if train.shape[1] != test.shape[1]:
        raise InputError(f"test: {test.shape[1]} values per sample, train has {train.shape[1]}")


@torch.no_grad()
def reconstruction_metrics(dictionary: Dictionary, samples: torch.Tensor) -> dict:
    """FVU, mean L0 and dead features of ``dictionary`` on held-out samples ``(M, C)``."""
    _check_samples(samples, "samples", dictionary.module.d_in)
    z = dictionary.module.encode_flat(samples.float())
    rec = dictionary.module.decode_flat(z)
    active = z > 0
    fires = active.sum(0)
    return {
        "fvu": fvu(samples, rec),
        "mean_l0": float(active.sum(1).float().mean()),
        "dead_features": int((fires == 0).sum()),
        "feature_frequency": (fires.float() / len(samples)).tolist(),
    }


@torch.no_grad()
def pca_baseline(train: torch.Tensor, test: torch.Tensor, rank: int) -> float:
    """FVU on ``test`` of the best rank-``rank`` affine reconstruction fitted on ``train`` (PCA):
    every sample uses ``rank`` coefficients, the same L0 as a TopK dictionary with k = rank."""
    _check_pair(train, test)
    check_int(rank, "rank", minimum=1, maximum=min(train.shape))
    mean = train.double().mean(0)
    _, _, vh = torch.linalg.svd(train.double() - mean, full_matrices=False)
    basis = vh[:rank]
    centred = test.double() - mean
    return fvu(test, centred @ basis.T @ basis + mean)


def _nnls_codes(v: torch.Tensor, h: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """Non-negative codes ``w`` minimising ``|v - w h|`` for fixed loadings ``h`` (HALS on ``w`` only)."""
    hht, vht = h @ h.T, v @ h.T
    w = torch.clamp(vht / torch.diag(hht).clamp_min(1e-12), min=0)
    for _ in range(iterations):
        for j in range(h.shape[0]):
            w[:, j] = torch.clamp(w[:, j] + (vht[:, j] - w @ hht[:, j]) / hht[j, j].clamp_min(1e-12), min=0)
    return w


@torch.no_grad()
def nmf_baseline(train: torch.Tensor, test: torch.Tensor, rank: int, *, max_train: int = 20000, seed: int = 0) -> dict:
    """The existing NMF (``circuits.nmf``) with ``rank`` groups as a dictionary baseline, fitted on
    (a seeded subsample of) ``relu(train)`` and measured on ``relu(test)``: NMF needs non-negative
    data, so it factorizes what the next layer sees after the ReLU."""
    from ..circuits import nmf

    _check_pair(train, test)
    check_int(rank, "rank", minimum=1, maximum=train.shape[1])
    gen = torch.Generator().manual_seed(seed)
    tr = train.clamp_min(0).double()
    if len(tr) > max_train:
        tr = tr[torch.randperm(len(tr), generator=gen)[:max_train]]
    _, h, _, _ = nmf(tr, rank, seed=seed, iterations=300)
    te = test.clamp_min(0).double()
    w = _nnls_codes(te, h)
    return {"fvu_relu": fvu(te, w @ h), "mean_l0": float((w > 1e-9).sum(1).float().mean()), "rank": rank}


@torch.no_grad()
def replaced_accuracy(model: nn.Module, dictionary: Dictionary, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 1000) -> tuple[float, float]:
    """Test accuracy of the model as is, and with the layer replaced by its reconstruction."""
    def accuracy() -> float:
        preds = torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
        return float((preds == labels).float().mean())

    base = accuracy()
    with attached(model, dictionary, mode="replace", check=False):
        rec = accuracy()
    return base, rec


@torch.no_grad()
def unit_max_activations(model: nn.Module, layer: str, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``(N, C)``: each unit's maximum over positions, per image (a unit's "how much is it here")."""
    acts = []
    for i in range(0, len(images), batch_size):
        a = layer_activations(model, layer, images[i:i + batch_size], batch_size)
        acts.append(a.flatten(2).amax(2) if a.ndim == 4 else a)
    return torch.cat(acts)


def label_purity(max_acts: torch.Tensor, labels: torch.Tensor, top: int = 100, n_classes: int = 10) -> dict:
    """Per unit: class purity and label entropy (bits) of its ``top`` highest-activating images.
    Units that are zero on all but fewer than ``top`` images are reported as ``None`` (not ranked)."""
    check_matrix(max_acts, "max_acts")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(max_acts) or labels.is_floating_point():
        raise InputError(f"labels: expected {len(max_acts)} integer class labels (one per image of max_acts), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    check_int(top, "top", minimum=1)
    purity, entropy, majority = [], [], []
    for c in range(max_acts.shape[1]):
        col = max_acts[:, c]
        if int((col > 0).sum()) < top:
            purity.append(None)
            entropy.append(None)
            majority.append(None)
            continue
        idx = torch.sort(col, descending=True, stable=True).indices[:top]
        counts = torch.bincount(labels[idx], minlength=n_classes).double()
        p = counts / counts.sum()
        purity.append(float(p.max()))
        entropy.append(float(-(p[p > 0] * p[p > 0].log2()).sum()))
        majority.append(int(p.argmax()))
    return {"purity": purity, "entropy": entropy, "majority": majority, "top": top}


def summarize(values: Sequence[float | None]) -> dict:
    """Quantiles of a distribution (``None`` entries skipped and counted)."""
    v = torch.tensor([x for x in values if x is not None], dtype=torch.float64)
    if len(v) == 0:
        return {"n": 0, "skipped": len(values)}
    q = torch.quantile(v, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)).tolist()
    return {"n": len(v), "skipped": len(values) - len(v), "mean": float(v.mean()), "p10": q[0], "p25": q[1],
            "median": q[2], "p75": q[3], "p90": q[4], "min": float(v.min()), "max": float(v.max())}


def evaluate_dictionary(model: nn.Module, dictionary: Dictionary, train_samples: torch.Tensor,
                        test_images: torch.Tensor, test_labels: torch.Tensor, *, top: int = 100) -> dict:
    """Every metric of the card, on held-out ``test_images`` (``train_samples`` fit the baselines)."""
    if not isinstance(test_labels, torch.Tensor) or test_labels.ndim != 1 or len(test_labels) != len(test_images):
        raise InputError(f"test_labels: expected one label per test image ({len(test_images)}), got "
                         f"{tuple(test_labels.shape) if isinstance(test_labels, torch.Tensor) else type(test_labels).__name__}")
    _check_samples(train_samples, "train_samples", dictionary.module.d_in)
    test_samples = as_samples(layer_activations(model, dictionary.layer, test_images))
    rec = reconstruction_metrics(dictionary, test_samples)
    base_acc, rec_acc = replaced_accuracy(model, dictionary, test_images, test_labels)
    with torch.no_grad():
        rec_relu = dictionary.module.decode_flat(dictionary.module.encode_flat(test_samples)).clamp_min(0)
    metrics = {
        "fvu": round(rec["fvu"], 5),
        "fvu_after_relu": round(fvu(test_samples.clamp_min(0), rec_relu), 5),
        "mean_l0": round(rec["mean_l0"], 4),
        "dead_features": rec["dead_features"],
        "pca_fvu_rank_k": round(pca_baseline(train_samples, test_samples, dictionary.k), 5),
        "test_accuracy": round(base_acc, 5),
        "test_accuracy_reconstructed": round(rec_acc, 5),
        "held_out_images": len(test_images),
        "held_out_samples": len(test_samples),
    }
    nmf = nmf_baseline(train_samples, test_samples, dictionary.k)
    metrics["nmf_rank_k_fvu_after_relu"] = round(nmf["fvu_relu"], 5)
    metrics["nmf_rank_k_mean_l0"] = round(nmf["mean_l0"], 4)
    with attached(model, dictionary, check=False) as a:
        feat_max = unit_max_activations(model, a.name, test_images)
    neuron_max = unit_max_activations(model, dictionary.layer, test_images)
    feats = label_purity(feat_max, test_labels, top)
    neurons = label_purity(neuron_max, test_labels, top)
    metrics["monosemanticity"] = {
        "top": top,
        "rule": f"class purity = share of the most common label among a unit's top {top} test images (max over positions)",
        "features": {"purity": feats["purity"], "entropy": feats["entropy"],
                     "purity_summary": summarize(feats["purity"]), "entropy_summary": summarize(feats["entropy"])},
        "neurons": {"purity": neurons["purity"], "entropy": neurons["entropy"],
                    "purity_summary": summarize(neurons["purity"]), "entropy_summary": summarize(neurons["entropy"])},
    }
    metrics["feature_frequency"] = [round(f, 6) for f in rec["feature_frequency"]]
    metrics["feature_majority_label"] = feats["majority"]
    metrics["neuron_majority_label"] = neurons["majority"]
    return metrics


def more_monosemantic_verdict(metrics: dict) -> tuple[bool, str]:
    """The one rule: features are called more monosemantic than neurons when the median class purity
    of the (ranked) features exceeds the neurons' median by at least 0.05."""
    try:
        mono = metrics["monosemanticity"]
        mono["features"]["purity_summary"]["median"], mono["neurons"]["purity_summary"]["median"]
    except (KeyError, TypeError) as e:
        raise InputError(f"metrics: no monosemanticity purity medians ({e}); pass the dict evaluate_dictionary returns") from None
    f, n = mono["features"]["purity_summary"]["median"], mono["neurons"]["purity_summary"]["median"]
    verdict = f - n >= 0.05
    text = (f"median class purity: features {f:.3f}, neurons {n:.3f} (difference {f - n:+.3f}); rule: 'more monosemantic' "
            f"needs a difference of at least +0.050, so the features are {'more' if verdict else 'not more'} monosemantic than the neurons")
    return verdict, text


