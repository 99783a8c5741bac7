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

from ..checks import InputError, InputTypeError, check_instance, check_int, check_matrix
from ..model_state import runs_model
from .attach import attached
from .dictionary import Dictionary, as_samples, layer_activations
from .sae import fvu

__all__ = ["reconstruction_metrics", "pca_baseline", "nmf_baseline", "relu_follows", "replaced_accuracy", "unit_max_activations",
           "label_purity", "summarize", "evaluate_dictionary"]


def _check_samples(samples: torch.Tensor, arg: str, width: int) -> None:
    check_matrix(samples, arg)
    if samples.shape[1] != width:
        raise InputError(f"{arg}: {samples.shape[1]} values per sample; the dictionary reads {width} (its layer's channels)")
    _check_real_samples(samples, arg)


def _check_real_samples(samples: torch.Tensor, arg: str) -> None:
    """Real samples ``(M, C)`` with some variance: an FVU on them is defined (see :func:`.sae.fvu`)."""
    if samples.is_complex() or samples.dtype == torch.bool:
        raise InputTypeError(f"{arg}: dtype {samples.dtype}; expected real-valued samples (M, C)")
    if len(samples) < 2 or not float(((samples.double() - samples.double().mean(0)) ** 2).sum()) > 0:
        raise InputError(f"{arg}: {len(samples)} sample(s) with no variance (every sample is the same); an FVU on them is "
                         "undefined: give at least two different samples (M, C)")


def _check_pair(train: torch.Tensor, test: torch.Tensor) -> None:
    check_matrix(train, "train")
    check_matrix(test, "test")
    if train.shape[1] != test.shape[1]:
        raise InputError(f"test: {test.shape[1]} values per sample, train has {train.shape[1]}")
    _check_real_samples(train, "train")
    _check_real_samples(test, "test")


def _check_dictionary(dictionary: object) -> Dictionary:
    from .sae import TopKSAE

    check_instance(dictionary, Dictionary, "dictionary")
    check_instance(dictionary.module, TopKSAE, "dictionary.module")
    return dictionary


def _check_labels(labels: object, n: int, arg: str, of: str) -> torch.Tensor:
    """``n`` non-negative integer class labels, one per image of ``of``."""
    if not isinstance(labels, torch.Tensor):
        raise InputTypeError(f"{arg}: expected a tensor of {n} integer class labels (one per image of {of}), got "
                             f"{type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputTypeError(f"{arg}: dtype {labels.dtype}; class labels are integers (e.g. labels.long())")
    if labels.ndim != 1 or len(labels) != n:
        raise InputError(f"{arg}: expected {n} integer class labels (one per image of {of}), got shape {tuple(labels.shape)}")
    if n and int(labels.min()) < 0:
        raise InputError(f"{arg}: a negative label ({int(labels.min())}); class labels are 0, 1, 2, ...")
    return labels


@torch.no_grad()
def reconstruction_metrics(dictionary: Dictionary, samples: torch.Tensor) -> dict:
    """FVU, mean L0 and dead features of ``dictionary`` on held-out samples ``(M, C)``."""
    _check_dictionary(dictionary)
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
def nmf_baseline(train: torch.Tensor, test: torch.Tensor, rank: int, *, after_relu: bool = False, max_train: int = 20000,
                 seed: int = 0) -> dict:
    """The existing NMF (``circuits.nmf``) with ``rank`` groups as a dictionary baseline, fitted on (a
    seeded subsample of) ``train`` and measured on ``test``. NMF needs non-negative data: samples with
    negative values are refused unless ``after_relu`` says the layer is followed by a ReLU, and then
    ``relu(train)`` / ``relu(test)`` (what the next layer sees) are factorized. ``fvu`` is measured on
    the data that was factorized (also returned as ``fvu_relu`` with ``after_relu``)."""
    from ..checks import InputTypeError
    from ..circuits import nmf

    _check_pair(train, test)
    check_int(rank, "rank", minimum=1, maximum=train.shape[1])
    if not isinstance(after_relu, bool):
        raise InputTypeError(f"after_relu: expected True or False, got {type(after_relu).__name__} {after_relu!r}")
    max_train = check_int(max_train, "max_train", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if not after_relu:
        for arg, t in (("train", train), ("test", test)):
            if bool((t < 0).any()):
                raise InputError(f"{arg}: has negative values (min {float(t.min()):.4g}); NMF needs non-negative data. Pass "
                                 "after_relu=True only when the layer is followed by a ReLU (see features.relu_follows)")
    gen = torch.Generator().manual_seed(seed)
    tr = train.clamp_min(0).double()
    if len(tr) > max_train:
        tr = tr[torch.randperm(len(tr), generator=gen)[:max_train]]
    _, h, _, _ = nmf(tr, rank, seed=seed, iterations=300)
    te = test.clamp_min(0).double()
    w = _nnls_codes(te, h)
    out = {"fvu": fvu(te, w @ h), "mean_l0": float((w > 1e-9).sum(1).float().mean()), "rank": rank, "after_relu": after_relu}
    if after_relu:
        out["fvu_relu"] = out["fvu"]
    return out


def relu_follows(model: nn.Module, layer: str) -> tuple[bool, str]:
    """Whether ``layer`` is an ``nn.ReLU``'s output or passes its values on only through ``nn.ReLU`` modules
    (every module that reads it is a ReLU reading it verbatim, and the model output does not read it):
    only then are "after the ReLU" figures what the rest of the model sees. Decided from the model's
    trace and module types; ``(False, why)`` otherwise, also when the trace cannot tell (an inline
    ``F.relu`` is not a module, so it does not count)."""
    from ..errors import check_model
    from ..trace import TraceError, trace
    from ..units import resolve_layer
    from ..zoo.spec import model_spec

    check_model(model)
    if not isinstance(layer, str):
        from ..checks import InputTypeError

        raise InputTypeError(f"layer: expected a layer name (e.g. 'conv2'), got {type(layer).__name__} {layer!r}")
    path = resolve_layer(model, layer)
    if isinstance(model.get_submodule(path), nn.ReLU):
        return True, f"{path} is a ReLU's output"
    shape = model_spec(model).input_shape
    if shape is None:
        return False, f"{type(model).__name__} declares no input_shape, so what reads {path} is not known"
    try:
        t = trace(model, tuple(shape))
        idx = t.call(path).index
    except TraceError as e:
        return False, f"the trace cannot tell what reads {path} ({e})"
    if any(s.producer == idx for s in t.output_deps):
        return False, f"the model output reads {path} directly"
    from .attach import _attached_modules

    skip = {id(sub) for m in _attached_modules(model) for sub in m.modules()}
    readers = []
    for call in t.calls:
        if next(call.module.children(), None) is not None or id(call.module) in skip:
            continue
        segs = [seg for flow in call.inputs for seg in flow if seg.producer == idx]
        if not segs:
            continue
        if not isinstance(call.module, nn.ReLU) or not all(seg.direct for seg in segs):
            how = "" if all(seg.direct for seg in segs) else " (through an inline function)"
            return False, f"{path} is read by {call.path} ({type(call.module).__name__}){how}, not only by a ReLU"
        readers.append(call.path)
    if not readers:
        return False, f"no module reads {path}"
    return True, f"{path} is read only by the ReLU {', '.join(readers)}"


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
    if max_acts.is_complex() or max_acts.dtype == torch.bool:
        raise InputTypeError(f"max_acts: dtype {max_acts.dtype}; expected real activations (N, units)")
    _check_labels(labels, len(max_acts), "labels", "max_acts")
    top = check_int(top, "top", minimum=1, maximum=max(1, len(max_acts)))
    n_classes = check_int(n_classes, "n_classes", minimum=1)
    if len(labels) and int(labels.max()) >= n_classes:
        raise InputError(f"labels: a label {int(labels.max())} with n_classes={n_classes}; labels must be 0..{n_classes - 1} "
                         "(or pass a larger n_classes)")
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


@runs_model  # eval mode on the caller's behalf (the accuracies run the model directly), state restored
def evaluate_dictionary(model: nn.Module, dictionary: Dictionary, train_samples: torch.Tensor,
                        test_images: torch.Tensor, test_labels: torch.Tensor, *, top: int = 100) -> dict:
    """Every metric of the card, on held-out ``test_images`` (``train_samples`` fit the baselines).
    Every argument is checked before any work: the dictionary must read a layer of ``model`` with as many
    channels as it has inputs, and ``top`` can be at most the number of test images."""
    from ..checks import check_images
    from ..errors import check_model
    from ..units import layer_shape, resolve_layer
    from .dictionary import _check_layer_name

    check_model(model)
    _check_dictionary(dictionary)
    _check_layer_name(dictionary.layer, "dictionary.layer")
    path = resolve_layer(model, dictionary.layer)
    check_images(test_images, model, arg="test_images", allow_single=False)
    channels = layer_shape(model, path, tuple(test_images.shape[1:]))[0]
    if channels != dictionary.module.d_in:
        raise InputError(f"dictionary: reads {dictionary.module.d_in} channels, but {path} of {type(model).__name__} has "
                         f"{channels}; it is a dictionary for another layer or model")
    _check_samples(train_samples, "train_samples", dictionary.module.d_in)
    _check_labels(test_labels, len(test_images), "test_labels", "test_images")
    top = check_int(top, "top", minimum=1, maximum=len(test_images))
    if dictionary.k > min(train_samples.shape):  # the rank-k baselines (PCA, NMF) need k <= samples and channels
        raise InputError(f"dictionary: k = {dictionary.k}, but the rank-k baselines fitted on train_samples "
                         f"{tuple(train_samples.shape)} allow at most rank {min(train_samples.shape)}; give more train_samples")
    n_classes = int(test_labels.max()) + 1
    test_samples = as_samples(layer_activations(model, dictionary.layer, test_images))
    rec = reconstruction_metrics(dictionary, test_samples)
    base_acc, rec_acc = replaced_accuracy(model, dictionary, test_images, test_labels)
    after_relu, why = relu_follows(model, dictionary.layer)
    metrics = {
        "fvu": round(rec["fvu"], 5),
        "mean_l0": round(rec["mean_l0"], 4),
        "dead_features": rec["dead_features"],
        "pca_fvu_rank_k": round(pca_baseline(train_samples, test_samples, dictionary.k), 5),
        "test_accuracy": round(base_acc, 5),
        "test_accuracy_reconstructed": round(rec_acc, 5),
        "held_out_images": len(test_images),
        "held_out_samples": len(test_samples),
        # after-ReLU figures (and the NMF baseline, which needs non-negative data) only where a ReLU follows
        "after_relu": {"reported": after_relu, "why": why},
    }
    if after_relu:
        with torch.no_grad():
            rec_relu = dictionary.module.decode_flat(dictionary.module.encode_flat(test_samples)).clamp_min(0)
        metrics["fvu_after_relu"] = round(fvu(test_samples.clamp_min(0), rec_relu), 5)
        nmf = nmf_baseline(train_samples, test_samples, dictionary.k, after_relu=True)
        metrics["nmf_rank_k_fvu_after_relu"] = round(nmf["fvu_relu"], 5)
        metrics["nmf_rank_k_mean_l0"] = round(nmf["mean_l0"], 4)
    with attached(model, dictionary, check=False) as a:
        feat_max = unit_max_activations(model, a.name, test_images)
    neuron_max = unit_max_activations(model, dictionary.layer, test_images)
    feats = label_purity(feat_max, test_labels, top, n_classes)
    neurons = label_purity(neuron_max, test_labels, top, n_classes)
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


