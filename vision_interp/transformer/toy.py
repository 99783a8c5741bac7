"""A 2-layer GPT-2 that learns induction on CPU in a few minutes: the validation model for the head scores.

Why this data: a sequence of random tokens is unpredictable, except where a segment repeats an
earlier one. Segments have random lengths and random places, so the only way to predict a repeat is
content-based: find the earlier occurrence of the current token and copy the token that followed it
(an induction head in layer 1, reading a previous-token head in layer 0 through K-composition).
A fixed offset (a purely positional trick) does not work because lengths vary.

Training is deterministic from ``seed`` (initialisation and data come from seeded generators).
"""

from __future__ import annotations

import math
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

from .. import io as vio
from .. import resources
from .loading import TOY_MODEL_NAME, save_gpt2

WHO = "train-induction"  # how resume messages name this run

__all__ = ["ToyConfig", "copy_task_batch", "build_toy_model", "train_induction_model", "train_and_save", "resume_path"]


@dataclass(frozen=True)
class ToyConfig:
    """Model size, data and optimisation settings of the toy induction model."""

    seed: int = 0
    steps: int = 5000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: int = 150
    vocab_size: int = 128
    n_positions: int = 128
    n_embd: int = 64
    n_head: int = 4
    n_layer: int = 2
    n_inner: int = 32  # a small MLP: the circuit is attention-only, the MLP only costs time
    min_segment: int = 4
    max_segment: int = 50
    plain_repeat_share: float = 0.5
    repeat_to_end: bool = False
    unpredictable_weight: float = 0.1  # loss weight of tokens no model can predict (repeats weigh 1)
    init_std: float = 0.02
    sinusoidal_positions: bool = True
    position_scale: float = 0.1
    eval_every: int = 100
    # Curriculum: most steps use rows of only ``short_length`` tokens (every ``short_every``-th step full length).
    # At initialisation attention is spread over all earlier positions, so the gradient towards the one key
    # that matters shrinks with the context; short rows make it larger and steps cheaper. 0 = off.
    short_length: int = 24
    short_every: int = 4
    stop_below: float = 0.5  # stop early once the probe's second-copy loss is below this (0: never)

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "vocab_size", "n_positions", "n_embd", "n_head", "n_layer", "n_inner",
                  "eval_every"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 2 <= self.min_segment <= self.max_segment <= (self.n_positions - 1) // 2:
            raise ValueError(f"need 2 <= min_segment <= max_segment <= (n_positions-1)/2, got {self.min_segment}, "
                             f"{self.max_segment}, n_positions {self.n_positions}")
        if self.probe_seq_len < 2:
            raise ValueError(f"n_positions {self.n_positions} is too small for a [BOS] + R + R probe")

    @property
    def bos_token_id(self) -> int:
        """The last id is reserved for BOS, so random tokens are drawn from ``[0, vocab_size - 1)``."""
        return self.vocab_size - 1

    @property
    def probe_seq_len(self) -> int:
        """The probe length used for monitoring and the card: 50 (the CLI default) if the context allows it."""
        return min(50, (self.n_positions - 1) // 2)


def copy_task_batch(cfg: ToyConfig, gen: torch.Generator, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, predictable)``, both ``(batch, n_positions)``: random tokens in which a segment repeats.

    Each row is ``[BOS] + noise + S + S (+ S ...)`` with ``len(S)`` uniform in ``min_segment .. max_segment``;
    a share ``plain_repeat_share`` of rows has no noise (``[BOS] + S + S ...``, the scorer's probe layout at
    every length), the others a random amount of noise before the first copy, so neither the start nor the
    distance of the repeat is fixed and only content-based induction predicts it. With ``repeat_to_end`` the
    segment repeats until the context is full (more predictable positions per row), else one copy is followed
    by noise. All tokens except BOS are uniform over ``[0, vocab_size - 1)``. ``predictable[b, t]`` is True
    where token ``t`` is a repeat (``t - len(S)`` holds the same token by construction).
    """
    from ..checks import check_instance, check_int

    check_instance(cfg, ToyConfig, "cfg")
    if length is not None:
        check_int(length, "length", minimum=2 * cfg.min_segment + 1, maximum=cfg.n_positions)
    T, n_rand, B = length or cfg.n_positions, cfg.vocab_size - 1, cfg.batch_size
    max_seg = min(cfg.max_segment, (T - 1) // 2)
    x = torch.randint(0, n_rand, (B, T), generator=gen)
    x[:, 0] = cfg.bos_token_id
    predictable = torch.zeros(B, T, dtype=torch.bool)
    plain = torch.rand(B, generator=gen) < cfg.plain_repeat_share
    u_len = torch.rand(B, generator=gen)
    u_start = torch.rand(B, generator=gen)
    for b in range(B):
        L = cfg.min_segment + int(u_len[b] * (max_seg - cfg.min_segment + 1))
        start = 1 if plain[b] else 1 + int(u_start[b] * (T - 2 * L))  # 1 .. T - 2L
        stop = T if cfg.repeat_to_end else start + 2 * L
        for t in range(start + L, stop, L):
            n = min(L, stop - t)
            x[b, t:t + n] = x[b, start:start + n]
        predictable[b, start + L:stop] = True
    return x, predictable


def build_toy_model(cfg: ToyConfig):
    """A fresh ``GPT2LMHeadModel`` with the toy config (no dropout, tied embeddings), seeded by ``cfg.seed``."""
    from ..checks import check_instance

    check_instance(cfg, ToyConfig, "cfg")
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=cfg.n_inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.bos_token_id, tie_word_embeddings=True,
        initializer_range=cfg.init_std,
    )
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    if cfg.sinusoidal_positions:
        # Start the (still trained) position embeddings from sinusoids: "attend to the previous position" is
        # then a fixed linear map (a rotation per frequency) that W_QK can learn quickly. With random 0.02
        # position embeddings the layer-0 heads stay uniform for thousands of steps, and without a
        # previous-token head there is no induction.
        with torch.no_grad():
            pos = torch.arange(cfg.n_positions, dtype=torch.float32)[:, None]
            freq = torch.exp(-torch.arange(0, cfg.n_embd, 2, dtype=torch.float32) * (math.log(1e4) / cfg.n_embd))
            pe = torch.zeros(cfg.n_positions, cfg.n_embd)
            pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
            model.transformer.wpe.weight.copy_(pe * cfg.position_scale)
    return model


CHECKPOINT_EVERY = 100  # steps between resume states (a few milliseconds each for this model)


def train_induction_model(cfg: ToyConfig = ToyConfig(), *, progress: bool = True, threads: int | None = 1,
                          log: Callable[[str], None] | None = None, resume_path: str | os.PathLike | None = None,
                          checkpoint_every: int = CHECKPOINT_EVERY) -> tuple[torch.nn.Module, dict]:
    """Train the toy model; returns ``(model in eval mode with eager attention, history)``.

    ``threads`` (default 1) fixes torch's intra-op threads while training: a fixed reduction order keeps the
    run bit-for-bit reproducible, and on a shared, small CPU one thread is also the fastest.
    With ``resume_path``, the whole training state is written there atomically every ``checkpoint_every``
    steps, and a state found there for the same configuration is resumed from (bit-identical result);
    a state for another configuration is ignored with a message and overwritten.
    """
    from ..checks import check_instance

    check_instance(cfg, ToyConfig, "cfg")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(cfg, progress, log, Path(resume_path) if resume_path is not None else None, checkpoint_every)
    finally:
        torch.set_num_threads(old_threads)


def _fingerprint(cfg: ToyConfig) -> str:
    """What a resume state must match: the configuration, the thread count and the torch version."""
    import hashlib
    import json

    key = json.dumps({"config": asdict(cfg), "threads": torch.get_num_threads(), "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def _probe_losses(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[float, float]:
    from .scores import copy_losses

    was_training = model.training
    model.eval()
    try:
        return copy_losses(model, tokens)
    finally:
        model.train(was_training)


def _train(cfg: ToyConfig, progress: bool, log: Callable[[str], None] | None, resume_path: Path | None,
           checkpoint_every: int) -> tuple[torch.nn.Module, dict]:
    from tqdm.auto import tqdm

    from .scores import repeated_tokens

    model = build_toy_model(cfg)
    model.set_attn_implementation("sdpa")  # fast kernel for training; analysis switches to eager
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    # a fixed monitoring probe (the scorer's layout), disjoint in seed from the card's evaluation probe
    probe = repeated_tokens(model, seq_len=cfg.probe_seq_len, batch=20, seed=cfg.seed + 777)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup))
    losses: list[float] = []
    probe_log: list[dict] = []
    steps_done, seconds_before = 0, 0.0
    fingerprint = _fingerprint(cfg) if resume_path is not None else ""
    state = vio.load_resume_state(resume_path, fingerprint, WHO) if resume_path is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        losses, probe_log = list(state["losses"]), list(state["probe"])
        steps_done, seconds_before = int(state["steps_done"]), float(state["seconds"])
        if progress or log:
            print(f"train-induction: resuming after step {steps_done} of {cfg.steps} from {resume_path}", file=sys.stderr)
    t0 = time.perf_counter() - seconds_before  # times in the log count every resumed segment
    bar = tqdm(range(steps_done, cfg.steps), total=cfg.steps, initial=steps_done, desc="train-induction", disable=not progress)
    for step in bar:
        short = cfg.short_length and step % cfg.short_every != cfg.short_every - 1
        x, predictable = copy_task_batch(cfg, gen, cfg.short_length if short else None)
        logits = model(x).logits
        per_token = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1), reduction="none")
        weight = torch.where(predictable[:, 1:].reshape(-1), 1.0, cfg.unpredictable_weight)
        loss = (per_token * weight).sum() / weight.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach().item())
        steps_done = step + 1
        if steps_done % cfg.eval_every == 0 or steps_done == cfg.steps:
            first, second = _probe_losses(model, probe)
            elapsed = time.perf_counter() - t0
            probe_log.append({"step": steps_done, "seconds": round(elapsed, 1), "train_loss": round(losses[-1], 4),
                              "first_copy": round(first, 4), "second_copy": round(second, 4)})
        if resume_path is not None and steps_done % checkpoint_every == 0 and steps_done < cfg.steps:
            vio.save_resume_state(resume_path, {"fingerprint": fingerprint, "steps_done": steps_done, "seconds": time.perf_counter() - t0,
                                       "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                       "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "losses": losses,
                                       "probe": probe_log})
        if steps_done % cfg.eval_every == 0 or steps_done == cfg.steps:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", first=f"{first:.2f}", second=f"{second:.2f}")
            if log:
                log(f"step {steps_done} loss {losses[-1]:.4f} probe first {first:.3f} second {second:.3f} "
                    f"({elapsed:.0f} s)")
            if second < cfg.stop_below:
                break
    seconds = time.perf_counter() - t0
    model.set_attn_implementation("eager")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, {"losses": losses, "probe": probe_log, "steps_done": steps_done,
                   "training_seconds": round(seconds, 1)}


def resume_path(out_dir: str | os.PathLike) -> Path:
    """Where :func:`train_and_save` keeps its training state until the final checkpoint is written."""
    return Path(out_dir) / "train.partial" / "resume.pt"


def train_and_save(out_dir: str | os.PathLike | None = None, cfg: ToyConfig = ToyConfig(), *,
                   progress: bool = True, log: Callable[[str], None] | None = None,
                   checkpoint_every: int = CHECKPOINT_EVERY) -> dict:
    """Train, measure first/second-copy loss on held-out repeated sequences, write checkpoint + model card.

    Every ``checkpoint_every`` steps the training state goes to ``<out_dir>/train.partial/resume.pt``
    (atomically); a rerun with the same configuration resumes from it and gives bit-identical weights.
    The folder is removed once the model, card and README are written. ``out_dir`` defaults to
    ``induction_2l/`` in the user's models folder (the checkout's ``models/`` in a clone).
    """
    from ..checks import check_instance
    from .scores import copy_losses, repeated_tokens

    if out_dir is None:
        out_dir = resources.user_models_dir() / TOY_MODEL_NAME
    check_instance(cfg, ToyConfig, "cfg")
    partial = resume_path(out_dir)
    model, hist = train_induction_model(cfg, progress=progress, log=log, resume_path=partial, checkpoint_every=checkpoint_every)
    seq_len = cfg.probe_seq_len
    tokens = repeated_tokens(model, seq_len=seq_len, batch=100, seed=12345)
    first, second = copy_losses(model, tokens)
    out = save_gpt2(model, out_dir)
    n_params = sum(p.numel() for n, p in model.named_parameters() if n != "lm_head.weight")
    losses = hist["losses"]
    uniform = math.log(cfg.vocab_size - 1)
    card = {
        "name": Path(out).name,
        "architecture": "GPT2LMHeadModel (transformers), tied embeddings, no dropout",
        "config": asdict(cfg),
        "bos_token_id": cfg.bos_token_id,
        "parameters": n_params,
        "steps_done": hist["steps_done"],
        "training_seconds": hist["training_seconds"],
        "final_train_loss_mean_last_50": round(sum(losses[-50:]) / min(50, len(losses)), 4),
        "first_train_loss": round(losses[0], 4),
        "probe_during_training": hist["probe"],
        "eval": {
            "data": f"[BOS] + R + R, R = {seq_len} uniform random tokens from [0, vocab_size-1), 100 sequences, seed 12345",
            "seq_len": seq_len,
            "loss_first_copy": round(first, 4),
            "loss_second_copy": round(second, 4),
            "uniform_loss_log_vocab": round(uniform, 4),
        },
        "command": (f"vision-interp train-induction --out {out_dir} --seed {cfg.seed} --steps {cfg.steps} "
                    f"--batch-size {cfg.batch_size} --lr {cfg.lr} --stop-below {cfg.stop_below}"),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    card["weights_sha256"] = vio.sha256_file(out / "model.safetensors")
    vio.save_json(out / "card.json", card)
    curve = " | ".join(f"{p['step']}: {p['first_copy']:.2f} / {p['second_copy']:.2f}" for p in hist["probe"])
    md = [
        f"# Model card: {card['name']}",
        "",
        "A 2-layer GPT-2-architecture model trained on random tokens with a repeated segment, so that it "
        "develops induction heads. It is the validation model of `vision_interp.transformer` (the head scores must find "
        "a previous-token head in layer 0 and an induction head in layer 1).",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| parameters | {n_params} |",
        f"| layers x heads | {cfg.n_layer} x {cfg.n_head} (d_model {cfg.n_embd}, d_head {cfg.n_embd // cfg.n_head}, MLP {cfg.n_inner}) |",
        f"| vocab | {cfg.vocab_size} (id {cfg.bos_token_id} = BOS), context {cfg.n_positions} |",
        f"| seed / steps run (max) / batch / lr / warmup | {cfg.seed} / {hist['steps_done']} ({cfg.steps}) / {cfg.batch_size} / {cfg.lr} / {cfg.warmup} |",
        f"| training time (CPU, 1 thread, shared machine) | {hist['training_seconds']} s |",
        f"| train loss first step -> last 50 steps | {card['first_train_loss']} -> {card['final_train_loss_mean_last_50']} |",
        f"| loss on first copy of [BOS]+R+R (R: {seq_len} random tokens, 100 rows) | {card['eval']['loss_first_copy']} (uniform: ln {cfg.vocab_size - 1} = {uniform:.4f}) |",
        f"| loss on second copy | {card['eval']['loss_second_copy']} |",
        f"| weights sha256 | {card['weights_sha256']} |",
        "",
        f"Recreate: `{card['command']}` (deterministic on CPU for a given torch version; training stops at the "
        f"first check, every {cfg.eval_every} steps, where the monitoring probe's second-copy loss is below {cfg.stop_below}).",
        "",
        f"Training data: each row is [BOS] + noise + S + S{' + S ...' if cfg.repeat_to_end else ' + noise'}, "
        f"len(S) uniform in {cfg.min_segment}..{cfg.max_segment}, random tokens uniform over the vocab without BOS; "
        f"{cfg.plain_repeat_share:.0%} of rows have no noise before S (the probe layout), the rest a random amount, so "
        "only content-based induction predicts the repeat. Loss: next-token cross-entropy, weight 1 on repeated "
        f"tokens and {cfg.unpredictable_weight} on the rest. Position embeddings start from sinusoids "
        f"(x {cfg.position_scale}) when `sinusoidal_positions` is on ({cfg.sinusoidal_positions}). Curriculum: "
        + (f"{cfg.short_every - 1} of every {cfg.short_every} steps use rows of only {cfg.short_length} tokens "
           "(a stronger gradient towards the one key that matters while attention is still diffuse)."
           if cfg.short_length else "none (every step uses full-length rows)."),
        "",
        f"Monitoring probe ([BOS]+R+R, 20 rows), first / second-copy loss by step: {curve}",
        "",
    ]
    vio.atomic_write_text(out / "README.md", "\n".join(md))
    shutil.rmtree(partial.parent, ignore_errors=True)
    return card
