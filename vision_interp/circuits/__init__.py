"""Circuits: the weights between units, read from the model.

* :func:`direct_weights` -- the one layer of weights between two layers, routed through ReLUs,
  pooling and InceptionV1's branch concatenations (channel offsets included).
* :func:`expanded_weights` -- the effective kernel between any two layers joined by a linear path
  (ReLU -> identity, max pool -> average pool, LRN skipped), exact Jacobian of that linearization.
* :func:`top_connections` -- a unit's strongest excitatory and inhibitory inputs or outputs.
* :func:`classifier_view` -- how each last-layer channel and position feeds each class logit.
* :func:`contrastive_logit_attribution` -- class-contrastive direct logit attribution of a layer
  the logits read linearly; :func:`closed_form_ablation` -- exact mean/zero ablation of a unit's
  positions there, with size-matched random controls.
* :func:`neuron_groups` -- NMF of a layer's activations into a few groups.
* :func:`circuit_diagram`, :func:`save_kernel_grid` -- pictures (PNG, HTML).
"""

from .diagram import circuit_diagram, kernel_grid, save_kernel_grid
from .graph import CircuitError, Geometry, LinearizationError, linear_path, trace_graph
from .groups import NeuronGroups, layer_neuron_groups, neuron_groups, neuron_groups_picture, nmf, save_neuron_groups
from .logit_attribution import (AblationResult, ContrastiveAttribution, closed_form_ablation,
                                contrastive_logit_attribution)
from .weights import (
    classifier_view,
    connection_weights,
    direct_weights,
    expanded_weights,
    layer_top_connections,
    next_layer,
    previous_layer,
    rank_connections,
    receptive_geometry,
    top_connections,
)

__all__ = [
    "AblationResult",
    "ContrastiveAttribution",
    "closed_form_ablation",
    "contrastive_logit_attribution",
    "CircuitError",
    "LinearizationError",
    "Geometry",
    "NeuronGroups",
    "circuit_diagram",
    "classifier_view",
    "connection_weights",
    "direct_weights",
    "expanded_weights",
    "kernel_grid",
    "layer_neuron_groups",
    "layer_top_connections",
    "linear_path",
    "neuron_groups",
    "neuron_groups_picture",
    "next_layer",
    "nmf",
    "previous_layer",
    "rank_connections",
    "receptive_geometry",
    "save_kernel_grid",
    "save_neuron_groups",
    "top_connections",
    "trace_graph",
]
