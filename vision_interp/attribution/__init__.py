"""Attribution: which pixels, channels and positions a class or a hidden unit depends on.

Built on Captum. :func:`attribute` (input attribution, any target, any method),
:func:`layer_attribution` / :func:`unit_attribution` (Building Blocks: channels and positions of
a hidden layer), batched runs (:func:`attribute_dataset`, :func:`class_mean_attributions`), the
sanity checks :func:`ig_completeness` and :func:`randomization_test`, the faithfulness curves
:func:`deletion_insertion`, and pictures
(:mod:`vision_interp.attribution.pictures`).

DeepLift and guided Grad-CAM answer only where their rules cover the model's modules (measured on the
call's own inputs; otherwise :class:`UnsupportedModelError` naming the modules, see :mod:`.guards` and
docs/attribution.md). Attribution to attached dictionary/transcoder features always uses exact gradients.

Hidden-unit targets ``"layer:channel"`` mean the channel's spatial mean; add ``@y,x`` for one
neuron. Models with in-place or reused activations are attributed on a repaired deep copy
(with a warning); the user's model is never modified.
"""

from .faithfulness import DeletionInsertion, deletion_insertion
from .guards import UnsupportedModelError
from .layer import LAYER_METHODS, LayerAttribution, layer_attribution, unit_attribution
from .methods import METHODS, attribute, attribute_batches, attribute_dataset, class_mean_attributions
from .pictures import attribution_grid, class_mean_grid, heatmaps, layer_map_overlay, overlays, save_attribution_png
from .sanity import CompletenessResult, RandomizationResult, ig_completeness, randomization_test, spearman

__all__ = [
    "UnsupportedModelError",
    "DeletionInsertion",
    "deletion_insertion",
    "METHODS",
    "LAYER_METHODS",
    "attribute",
    "attribute_batches",
    "attribute_dataset",
    "class_mean_attributions",
    "LayerAttribution",
    "layer_attribution",
    "unit_attribution",
    "CompletenessResult",
    "RandomizationResult",
    "ig_completeness",
    "randomization_test",
    "spearman",
    "heatmaps",
    "overlays",
    "attribution_grid",
    "class_mean_grid",
    "layer_map_overlay",
    "save_attribution_png",
]
