"""Sparse dictionary features as first-class units.

Train a TopK sparse autoencoder on a layer's activations (spatial positions as samples), save it
with a card, and attach it to a model: its features become the channels of a layer named
``"<layer>/sae"``, so ``"conv2/sae:17"`` works in capture, feature visualization, attribution,
dataset examples and galleries exactly like ``"conv2:5"``::

    from vision_interp import features
    d = features.load_dictionary("mnist_cnn_conv2_sae")
    with features.attached(model, d):                      # hooks removed on exit, also on errors
        visualize(model, "conv2/sae:17")
    features.feature_logit_weights(model, d, 17)            # (10, 14, 14) through the decoder

The attachment contract: attaching copies the dictionary/transcoder (the caller's object never
changes), and the consumer picks the gradient (``with features.feature_gradients(model, "exact"):``
for attribution and graphs; attachments default to straight-through ``"linear"`` for featvis).

Transcoders replace a conv block (input layer -> output layer) by sparse features: ``"conv2/tc:17"``;
:func:`replaced` runs the sparse replacement model, :class:`GraphBuilder` the per-input attribution
graphs, :func:`intervention_check` compares graph predictions with interventions, :func:`save_graph` / :func:`load_graph`
(or ``AttributionGraph.save`` / ``.load``) keep a whole graph, :func:`feature_labels` labels features from measured
properties with a held-out score, :func:`page_extras` is what a graph page needs to prune and intervene
(docs/transcoders.md, docs/graph_schema.md).
"""

from .attach import GRADIENTS, MODES, Attachment, attach, attached, attached_features, detach, feature_gradients
from .build import build_dictionary, publish_dictionary
from .circuits import feature_input_weights, feature_logit_weights, feature_output_weights, feature_top_connections
from .dictionary import (FEATURES_DIR, Dictionary, as_samples, dictionary_from_directions, layer_activations, layer_samples,
                         load_dictionary, save_dictionary, train_dictionary)
from .metrics import (evaluate_dictionary, label_purity, more_monosemantic_verdict, nmf_baseline, pca_baseline, reconstruction_metrics,
                      relu_follows)
from .sae import SAEConfig, TopKSAE, fvu, train_topk_sae
from .graph import AttributionGraph, GraphBuilder, attribution_graph
from .graph_files import load_graph, save_graph
from .graph_page import page_extras
from .interventions import intervention_check, measure_interventions
from .labels import feature_labels
from .replacement import attach_transcoder, attached_transcoder, replaced
from .tc_build import MNIST_BLOCKS, build_transcoders
from .tc_circuits import feature_feature_weights, feature_logit_weights_tc, sparsity_comparison, top_connections
from .transcoder import ConvTranscoder, TranscoderConfig, train_conv_transcoder
from .replacement import measure_transcoders
from .transcoders import Transcoder, check_transcoder, check_transcoders, load_transcoder, save_transcoder, train_transcoder

__all__ = [
    "build_dictionary", "publish_dictionary",
    "GRADIENTS", "MODES", "Attachment", "attach", "attached", "attached_features", "detach", "feature_gradients",
    "feature_input_weights", "feature_logit_weights", "feature_output_weights", "feature_top_connections",
    "FEATURES_DIR", "Dictionary", "as_samples", "dictionary_from_directions", "layer_activations", "layer_samples",
    "load_dictionary", "save_dictionary", "train_dictionary",
    "evaluate_dictionary", "label_purity", "more_monosemantic_verdict", "nmf_baseline", "pca_baseline", "relu_follows",
    "reconstruction_metrics", "SAEConfig", "TopKSAE", "fvu", "train_topk_sae",
    # transcoders (conv blocks), the replacement model, attribution graphs
    "AttributionGraph", "GraphBuilder", "attribution_graph", "intervention_check", "measure_interventions",
    "save_graph", "load_graph", "page_extras", "feature_labels",
    "attach_transcoder", "attached_transcoder", "replaced", "MNIST_BLOCKS", "build_transcoders",
    "feature_feature_weights", "feature_logit_weights_tc", "sparsity_comparison", "top_connections",
    "ConvTranscoder", "TranscoderConfig", "train_conv_transcoder", "Transcoder", "load_transcoder",
    "measure_transcoders", "save_transcoder", "train_transcoder", "check_transcoder", "check_transcoders",
]
