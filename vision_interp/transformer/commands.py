"""CLI: ``induction`` (score every head of a GPT-2) and ``train-induction`` (the toy validation model)."""

from __future__ import annotations

import argparse

from ..cli_common import (SEED, Formatter, UsageError, add_data_dir, check_output_dir, existing_dir, float_arg, int_arg,
                          text_arg)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "induction", help="find induction / previous-token / copying heads in a GPT-2",
        description="Score every attention head of a GPT-2-architecture model on [BOS] + R + R (R: random tokens "
                    "from the model's vocab): induction, previous-token and duplicate-token attention, OV copying, "
                    "Q/K/V composition, and the loss increase when the head is mean- or zero-ablated. Prints a "
                    "ranked table and writes induction.json, layer x head heatmaps and an attention picture to --out.\n\n"
                    "Expected for real GPT-2 small: induction heads 5.1, 5.5, 6.9, 7.2, 7.10; previous-token head 4.11.",
        formatter_class=Formatter)
    p.add_argument("--model", type=text_arg(1000), default="induction_2l",
                   help="GPT-2 model directory (config.json + model.safetensors), 'induction_2l' for the committed "
                        "toy model, or a hub name (gpt2, gpt2-medium; needs internet)")
    p.add_argument("--tokenizer-dir", type=existing_dir, default=None,
                   help="folder with vocab.json + merges.txt to label tokens (default <data>/gpt2_tokenizer when "
                        "the model has GPT-2's vocab)")
    add_data_dir(p)
    p.add_argument("--seq-len", type=int_arg(1, 100_000), default=50, help="length of the random segment R")
    p.add_argument("--batch", type=int_arg(1, 10_000), default=10, help="number of random sequences")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--ablation", type=text_arg(100), default="mean,zero",
                   help="ablation modes to scan, comma-separated (mean, zero), or 'none' to skip the scan")
    p.add_argument("--no-composition", action="store_true",
                   help="skip the Q/K/V composition scores between head pairs (slow for GPT-2-size models)")
    p.add_argument("--no-attribution", action="store_true",
                   help="skip attribution patching and its integrated-gradients version (the estimates shown next to "
                        "the exact ablation scan)")
    p.add_argument("--ig-steps", type=int_arg(1, 1000), default=8,
                   help="points on the line from clean to ablated z for integrated-gradients attribution patching "
                        "(one forward + backward pass each, per ablation mode)")
    p.add_argument("--top", type=int_arg(1, 100_000), default=10, help="rows of the ranked table")
    p.add_argument("--out", default="induction_out", help="output folder for index.html, JSON and PNGs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_induction)

    p = sub.add_parser(
        "train-induction", help="train the 2-layer toy GPT-2 that develops induction heads (CPU, minutes)",
        description="Train the toy validation model deterministically from a seed on random sequences with repeated "
                    "segments; writes config.json, model.safetensors, card.json and README.md (model card) to --out. The "
                    "training state is saved every 100 steps (OUT/train.partial/); rerunning the same command resumes.",
        formatter_class=Formatter)
    p.add_argument("--out", default="models/induction_2l", help="output folder")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--steps", type=int_arg(1, 10_000_000), default=None, help="optimizer steps (default: ToyConfig)")
    p.add_argument("--batch-size", type=int_arg(1, 100_000), default=None)
    p.add_argument("--lr", type=float_arg(0, 10, lo_open=True), default=None)
    p.add_argument("--stop-below", type=float_arg(0, 1e6), default=None,
                   help="stop once the monitoring probe's second-copy loss is below this (checked every 100 steps; "
                        "0 = run all --steps)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)


def _parse_modes(text: str) -> list[str]:
    from .ablation import ABLATION_MODES

    if text.strip().lower() in ("", "none"):
        return []
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad:
        raise UsageError(f"--ablation: unknown mode(s) {', '.join(bad)}; choose from {', '.join(ABLATION_MODES)} or none")
    return modes


def _tokenizer(args: argparse.Namespace, model):
    """The tokenizer named by --tokenizer-dir (its files must be there), else <data>/gpt2_tokenizer for GPT-2's vocab, else None."""
    from .loading import load_gpt2_tokenizer

    if args.tokenizer_dir is not None:
        tok = load_gpt2_tokenizer(args.tokenizer_dir)
        if len(tok) > int(model.config.vocab_size):
            raise UsageError(f"--tokenizer-dir {args.tokenizer_dir}: the tokenizer has {len(tok)} tokens but the model's "
                             f"vocabulary has {model.config.vocab_size}; give the tokenizer the model was trained with")
        return tok
    if int(model.config.vocab_size) == 50257:
        try:
            return load_gpt2_tokenizer(None, args.data_dir)
        except FileNotFoundError:
            return None
    return None


def _induction(args: argparse.Namespace) -> int:
    from .loading import load_gpt2
    from .report import analyze_induction
    from .scores import check_probe

    modes = _parse_modes(args.ablation)
    if args.tokenizer_dir is not None:
        from .loading import load_gpt2_tokenizer

        load_gpt2_tokenizer(args.tokenizer_dir)  # vocab.json + merges.txt readable, before the model loads
    check_output_dir(args.out, "--out")  # before the analysis, not after it
    model = load_gpt2(args.model)
    check_probe(model, args.seq_len, args.batch)  # before any forward pass
    tokenizer = _tokenizer(args, model)
    report = analyze_induction(model, model_name=str(args.model), seq_len=args.seq_len, batch=args.batch,
                               seed=args.seed, ablation=modes, composition=not args.no_composition,
                               progress=not args.no_progress, attribution=not args.no_attribution, ig_steps=args.ig_steps,
                               tokenizer=tokenizer)
    paths = report.save(args.out)  # results first, so a failure while printing loses nothing
    print(report.table(args.top))
    print(f"wrote {len(paths)} files to {args.out} (index.html, induction.json, heatmaps, attention_top_heads.png)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .toy import ToyConfig, train_and_save

    check_output_dir(args.out, "--out")  # before minutes of training
    cfg = ToyConfig(seed=args.seed)
    over = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                     ("stop_below", args.stop_below)) if v is not None}
    cfg = replace(cfg, **over)
    card = train_and_save(args.out, cfg, progress=not args.no_progress)  # errors in cfg raise before training
    ev = card["eval"]
    print(f"trained {card['steps_done']} steps in {card['training_seconds']} s; loss first copy {ev['loss_first_copy']:.3f}, second copy "
          f"{ev['loss_second_copy']:.3f}; wrote {args.out}/config.json, model.safetensors, card.json, README.md")
    return 0
