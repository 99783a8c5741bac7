"""Induction heads in GPT-2: loading, per-head scores, composition, ablation, and a toy model that learns induction.

Typical use::

    from vision_interp.transformer import load_gpt2, analyze_induction
    model = load_gpt2("induction_2l")          # or a GPT-2 directory, or "gpt2" with internet
    report = analyze_induction(model, seq_len=50, batch=10, seed=0)
    print(report.table())
    report.save("induction_out")               # index.html + induction.json + PNGs

Built on Hugging Face ``transformers`` (eager attention, so patterns are materialised) and
:mod:`vision_interp.capture` hooks; no TransformerLens.
"""

from .ablation import (ABLATION_MODES, ATTRIBUTION_SCOPES, ablated_loss, ablation_line, ablation_scan, attribution_patching,
                       head_means, integrated_attribution_patching, joint_ablations, path_ablated_loss)
from .loading import (TOY_MODEL_DIR, TOY_MODEL_NAME, NotGPT2Error, check_gpt2_config, load_gpt2, load_gpt2_tokenizer,
                      save_gpt2)
from .report import (INDUCTION_THRESHOLD, PREV_TOKEN_THRESHOLD, SCORE_DEFINITIONS, InductionReport, analyze_induction,
                     detected_heads, format_head, top_heads)
from .scores import (HeadWeights, attention_patterns, composition_baseline, composition_scores, copy_losses, copy_slices,
                     copying_scores, duplicate_token_scores, fast_pattern_scores, head_weights, induction_scores,
                     pattern_scores, previous_token_scores, repeated_tokens, token_losses)
from .toy import ToyConfig, build_toy_model, copy_task_batch, train_and_save, train_induction_model

__all__ = [
    "ABLATION_MODES", "ATTRIBUTION_SCOPES", "ablated_loss", "ablation_line", "ablation_scan", "attribution_patching",
    "head_means", "integrated_attribution_patching", "joint_ablations", "path_ablated_loss",
    "TOY_MODEL_DIR", "TOY_MODEL_NAME", "NotGPT2Error", "check_gpt2_config", "load_gpt2", "load_gpt2_tokenizer", "save_gpt2",
    "INDUCTION_THRESHOLD", "PREV_TOKEN_THRESHOLD", "SCORE_DEFINITIONS", "InductionReport", "analyze_induction",
    "detected_heads", "format_head", "top_heads",
    "HeadWeights", "attention_patterns", "composition_baseline", "composition_scores", "copy_losses", "copy_slices", "copying_scores",
    "duplicate_token_scores", "fast_pattern_scores", "head_weights", "induction_scores", "pattern_scores", "previous_token_scores",
    "repeated_tokens", "token_losses",
    "ToyConfig", "build_toy_model", "copy_task_batch", "train_and_save", "train_induction_model",
]
