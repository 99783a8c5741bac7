"""Stage 4b: how much of the network the named clauses and the sparse replacement model explain.

Reads the clauses that :func:`.stages_circuits.stage_circuits` stored and measures, on the same
evaluation images, (a) the network with every pool2 channel and position not named by a clause
mean-ablated and (b) the committed transcoders' replacement model with its error share, plus the
per-digit agreement of each pruned attribution graph with that digit's clauses
(:func:`vision_interp.features.completeness.completeness_for_exercise`). The report prints these
numbers at its top.
"""

from __future__ import annotations


def stage_completeness(ex) -> None:
    from ..features.completeness import completeness_for_exercise

    ex.results["completeness"] = completeness_for_exercise(ex.model, ex.results, ex.x, ex.y)
