"""A small MNIST CNN that a person can hope to understand completely, and its deterministic trainer.

Architecture (input (N, 1, 28, 28) in [0, 1]; normalisation happens inside)::

    normalize -> conv1 (1->C1, 5x5, pad 2) -> relu1 -> pool1 (2x2 max)   : C1 x 14 x 14
              -> conv2 (C1->C2, 5x5, pad 2) -> relu2 -> pool2 (2x2 max)  : C2 x 7 x 7
              -> flatten -> fc (C2*7*7 -> 10 logits)

The classifier is a single linear layer, so every logit is an explicit weighted sum of the
last conv layer's pooled maps: the "classifier view" is exact, not an approximation.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import io as vio
from .. import resources

WHO = "train mnist_cnn"  # how resume messages name this run

__all__ = ["MnistCNN", "mnist_cnn", "TrainConfig", "train_mnist_cnn", "evaluate", "DEFAULT_CHECKPOINT"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CHECKPOINT_NAME = "mnist_cnn.safetensors"  # relative to the models folder (vision_interp.resources)
DEFAULT_CHECKPOINT = resources.find_model(CHECKPOINT_NAME) or resources.models_search_path()[0] / CHECKPOINT_NAME


class Normalize(nn.Module):
    """Fixed affine input normalisation, inside the model so that users work in pixel space [0, 1]."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MnistCNN(nn.Module):
    """Two conv layers and one linear classifier. Layers: conv1, relu1, pool1, conv2, relu2, pool2, fc."""

    input_shape = (1, 28, 28)

    def __init__(self, c1: int = 8, c2: int = 16):
        super().__init__()
        self.c1, self.c2 = c1, c2
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2 * 7 * 7, 10)
        self.class_names = [str(d) for d in range(10)]
        self.layer_aliases = {"logits": "fc"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"MnistCNN expects grayscale images (N, 1, H, W) in [0, 1], got shape {tuple(x.shape)}")
        if x.shape[-2:] != (28, 28):
            raise ValueError(f"MnistCNN expects 28x28 images, got {tuple(x.shape[-2:])}")
        x = self.pool1(self.relu1(self.conv1(self.normalize(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(self.flatten(x))


def mnist_cnn(pretrained: bool = True, path: str | os.PathLike | None = None) -> MnistCNN:
    """The committed trained MNIST CNN (eval mode, frozen), or a fresh random one with ``pretrained=False``."""
    if not pretrained:
        return _frozen(MnistCNN())
    path = Path(path) if path else resources.model_path(CHECKPOINT_NAME)
    if not path.is_file():
        raise FileNotFoundError(
            f"no MNIST CNN checkpoint at {path}; train one with `vision-interp train-mnist --out {path.parent}`"
        )
    sd = vio.load_state_dict(path)
    c1, c2 = sd["conv1.weight"].shape[0], sd["conv2.weight"].shape[0]
    model = MnistCNN(c1, c2)
    model.load_state_dict(sd, strict=True)
    model.weights_file = str(path)  # read through model_spec(model).weights_file (e.g. the gallery's checkpoint hash)
    return _frozen(model)


def _frozen(model: MnistCNN) -> MnistCNN:
    """Zoo models are for analysis: eval mode, no parameter gradients (as ``inceptionv1`` returns them)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    c1: int = 8
    c2: int = 16
    shift: int = 2  # random translation augmentation, in pixels
    limit: int | None = None  # train on the first N images only (tests)
    threads: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings that would train on something else than asked (``limit=-5`` slices off 5 images)."""
        for name in ("epochs", "batch_size", "c1", "c2"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"TrainConfig.limit must be None (all images) or >= 1, got {self.limit}")
        if not (self.lr > 0 and self.lr == self.lr and self.lr != float("inf")):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr}")
        if self.shift < 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig.shift and weight_decay must be >= 0, got {self.shift}, {self.weight_decay}")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
    """Accuracy, per-class accuracy and confusion matrix (rows = true class, columns = predicted)."""
    model.eval()
    preds = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    conf = torch.zeros(10, 10, dtype=torch.long)
    conf.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    per_class = (conf.diag().float() / conf.sum(1).clamp_min(1).float()).tolist()
    return {"accuracy": float((preds == labels).float().mean()), "per_class_accuracy": per_class, "confusion": conf.tolist(), "predictions": preds}


def _shift_batch(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random integer translations by up to ``shift`` pixels (zero fill), one per image."""
    if shift <= 0:
        return x
    n = x.shape[0]
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None]).view(n, 1, 28, 1).expand(n, 1, 28, 28 + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(28)[None]).view(n, 1, 1, 28).expand(n, 1, 28, 28)
    return out.gather(3, cols)


def config_fingerprint(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor) -> str:
    """What a resume state must match: every training setting, the exact training data, threads and torch version."""
    key = {"config": asdict(config), "threads": torch.get_num_threads(), "torch": torch.__version__}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for t in (images, labels):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _save_resume(path: Path, fingerprint: str, epochs_done: int, seconds: float, model: MnistCNN, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator) -> None:
    """Everything the next epoch depends on, written atomically (a crash mid-write keeps the previous state)."""
    state = {"fingerprint": fingerprint, "epochs_done": epochs_done, "seconds": seconds, "model": model.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}
    vio.save_resume_state(path, state)


def train_mnist_cnn(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    progress: bool = True,
    on_epoch: Callable[[int, MnistCNN], None] | None = None,
    resume_path: str | os.PathLike | None = None,
) -> MnistCNN:
    """Train deterministically from ``config.seed`` (same seed, same threads -> same weights).

    With ``resume_path``, the full training state (weights, optimizer, scheduler, random generators) is
    written there atomically after every epoch, and a matching state found there is resumed from: the
    result is bit-identical to an uninterrupted run. A state from another configuration is ignored (with
    a message) and overwritten. The caller removes the file once the final weights are saved.
    The returned model's ``training_seconds`` is the training time summed over all resumed segments.
    """
    from tqdm.auto import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x, y = train_images, train_labels
    if config.limit is not None:
        x, y = x[: config.limit], y[: config.limit]
    model = MnistCNN(config.c1, config.c2)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2)
    resume_path = Path(resume_path) if resume_path is not None else None
    fingerprint = config_fingerprint(config, x, y) if resume_path is not None else ""
    start_epoch, seconds_before = 0, 0.0
    state = vio.load_resume_state(resume_path, fingerprint, WHO) if resume_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, seconds_before = int(state["epochs_done"]), float(state["seconds"])
        if progress:
            print(f"train mnist_cnn: resuming after epoch {start_epoch} of {config.epochs} from {resume_path}", file=sys.stderr)
    t0 = time.perf_counter()
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, desc="train mnist_cnn", disable=not progress, unit="step")
    for epoch in range(start_epoch, config.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            xb = _shift_batch(x[idx], config.shift, gen)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        if resume_path is not None:
            _save_resume(resume_path, fingerprint, epoch + 1, seconds_before + time.perf_counter() - t0, model, opt, sched, gen)
        if on_epoch:
            on_epoch(epoch, model)
    bar.close()
    model.eval()
    model.training_seconds = seconds_before + time.perf_counter() - t0  # over all resumed segments
    return model


def save_checkpoint(model: MnistCNN, out_dir: str | os.PathLike, card: dict, name: str = "mnist_cnn") -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` and a model card ``<name>.json`` + ``<name>.md``, atomically."""
    out = Path(out_dir)
    weights = vio.save_state_dict(out / f"{name}.safetensors", model.state_dict(), metadata={"arch": "MnistCNN", "c1": str(model.c1), "c2": str(model.c2)})
    card = dict(card)
    card["weights_sha256"] = vio.sha256_file(weights)
    vio.save_json(out / f"{name}.json", card)
    md = [f"# Model card: {name}", "", "A small CNN for MNIST, trained by `vision-interp train-mnist`.", ""]
    md += ["| field | value |", "| --- | --- |"]
    for k, v in card.items():
        if k in ("per_class_accuracy", "confusion"):
            continue
        md.append(f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |")
    md += ["", "Per-class test accuracy: " + ", ".join(f"{d}: {a:.4f}" for d, a in enumerate(card.get("per_class_accuracy", []))), ""]
    md += ["Architecture: normalize -> conv1 (5x5) -> relu1 -> pool1 -> conv2 (5x5) -> relu2 -> pool2 -> flatten -> fc.",
           "Inputs are (N, 1, 28, 28) in [0, 1]; normalisation (mean 0.1307, std 0.3081) is inside the model.", ""]
    vio.atomic_write_text(out / f"{name}.md", "\n".join(md))
    return weights, out / f"{name}.json"


def resume_path(out_dir: str | os.PathLike, name: str = "mnist_cnn") -> Path:
    """Where :func:`train_and_save` keeps its per-epoch training state until the final checkpoint is written."""
    return Path(out_dir) / f"{name}.partial" / "resume.pt"


def train_and_save(data_dir: str | os.PathLike | None, out_dir: str | os.PathLike, config: TrainConfig = TrainConfig(), *, progress: bool = True,
                   on_epoch: Callable[[int, MnistCNN], None] | None = None) -> dict:
    """Load MNIST, train, evaluate on the test set, and write checkpoint + model card. Returns the card.

    After every epoch the training state goes to ``<out_dir>/mnist_cnn.partial/resume.pt`` (atomically);
    a rerun with the same configuration and ``out_dir`` resumes from the last finished epoch and gives
    bit-identical weights. The folder is removed once the final checkpoint and card are written.
    """
    from ..data.mnist import data_checksum, load_mnist

    train = load_mnist("train", data_dir)
    test = load_mnist("test", data_dir)
    partial = resume_path(out_dir)
    model = train_mnist_cnn(train.images, train.labels, config, progress=progress, on_epoch=on_epoch, resume_path=partial)
    seconds = model.training_seconds
    ev = evaluate(model, test.images, test.labels)
    card = {
        "model": "MnistCNN",
        "architecture": f"conv1(1->{config.c1},5x5,pad2)-relu-maxpool2 / conv2({config.c1}->{config.c2},5x5,pad2)-relu-maxpool2 / fc({config.c2 * 49}->10)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(config),
        "test_accuracy": round(ev["accuracy"], 5),
        "per_class_accuracy": [round(a, 5) for a in ev["per_class_accuracy"]],
        "training_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "data_sha256": data_checksum(data_dir),
        "command": f"vision-interp train-mnist --seed {config.seed} --epochs {config.epochs}",
    }
    save_checkpoint(model, out_dir, card)
    shutil.rmtree(partial.parent, ignore_errors=True)
    return card
