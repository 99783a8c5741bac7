"""The mechanism stages of the MNIST exercise (methods bound to :class:`.mnist._Exercise`).

Each stage measures, draws its figures and stores numbers in ``ex.results``; :mod:`.report` writes
the text from those numbers only. Each job has its module; this one lists them in the order they run:

* :mod:`.stages_units` -- 1. conv1 exactly, 2. feature visualization, 3. conv2 named
* :mod:`.stages_circuits` -- 4-5. circuits and their causal tests, 7. confusions
* :mod:`.stages_completeness` -- 4b. how much the clauses and the replacement model explain
* :mod:`.stages_attribution` -- 6. attribution and faithfulness
* :mod:`.stages_deep_dive` -- 8. a conv2 unit rebuilt by hand
* :mod:`.stages_common` -- what they share
"""

from __future__ import annotations

from .stages_attribution import _blur, stage_attribution
from .stages_circuits import _effects, stage_circuits, stage_confusions
from .stages_common import _acts, _pearson, _r, _short
from .stages_completeness import stage_completeness
from .stages_deep_dive import DEEP_UNIT, HAND_DESCRIPTION, HAND_R_THRESHOLD, hand_kernel, stage_deep_dive
from .stages_units import AMBIGUOUS, _unit_name, stage_conv1, stage_conv2, stage_featvis

__all__ = ["stage_conv1", "stage_featvis", "stage_conv2", "stage_circuits", "stage_completeness", "stage_attribution", "stage_confusions",
           "stage_deep_dive", "hand_kernel", "HAND_DESCRIPTION", "HAND_R_THRESHOLD", "DEEP_UNIT", "AMBIGUOUS",
           "_r", "_pearson", "_acts", "_short", "_blur", "_unit_name", "_effects"]
