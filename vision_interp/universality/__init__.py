"""Universality: are the same units learned by independently trained models?

Match units (neurons or dictionary features) across models by activation correlation on the same
inputs -- each unit's best match and an exact one-to-one (Hungarian) matching -- against controls
(a shuffled-label model, random weights), and report it per layer. See ``docs/universality.md``.
"""

from .matching import LayerMatch, PairMatch, correlation_matrix, linear_assignment, match_layer, match_pair, shared_samples
from .report import RULE, layer_summary, write_report
from .run import run_universality
from .seeds import SEED_MODELS_DIR, load_control, load_seed_models, random_model, seed_models_dir, train_seed_models
from .study import UniversalityConfig, UniversalityResult, collect_samples, run_study, seed_dictionaries

__all__ = [
    "LayerMatch", "PairMatch", "correlation_matrix", "linear_assignment", "match_layer", "match_pair", "shared_samples",
    "RULE", "layer_summary", "write_report", "run_universality",
    "SEED_MODELS_DIR", "load_control", "load_seed_models", "random_model", "seed_models_dir", "train_seed_models",
    "UniversalityConfig", "UniversalityResult", "collect_samples", "run_study", "seed_dictionaries",
]
