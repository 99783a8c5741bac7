"""The hostile-input suite covers every argument of the functions that issue 35 lists: transcoders,
graphs, interventions, completeness, contrastive attribution, closed-form ablation, deletion/insertion,
display, resources and environment (every public function of ``vision_interp.features``, and the named
ones elsewhere). A parameter counts as covered when a case of that function names it (its ``arg``, or the
parameter's name as a word in the case's description or expected message).

This test fails when a listed function gains a parameter without a hostile case for it.
"""

from __future__ import annotations

import inspect

import vision_interp as vi
from vision_interp import attribution as A
from vision_interp import circuits as C
from vision_interp import display, environment, resources
from vision_interp import features as F

from test_api_hostile import CASES

# Parameters that carry no user value to check (variadic pass-throughs).
SKIP_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def listed_functions() -> dict[str, object]:
    out: dict[str, object] = {}
    for name in F.__all__:
        obj = getattr(F, name)
        if inspect.isfunction(obj):
            out[f"features.{name}"] = obj
    for name in ("contrastive_logit_attribution", "closed_form_ablation"):
        out[f"circuits.{name}"] = getattr(C, name)
    out["attribution.deletion_insertion"] = A.deletion_insertion
    from vision_interp.features.completeness import completeness

    out["features.completeness"] = completeness
    for cls in (F.AttributionGraph, F.GraphBuilder):  # public methods of the graph objects
        for name, obj in vars(cls).items():
            if inspect.isfunction(obj) and not name.startswith("_"):
                out[f"features.{cls.__name__}.{name}"] = obj
    for cls in (F.TranscoderConfig, F.SAEConfig):  # every field of the configs (their __init__)
        out[f"features.{cls.__name__}"] = cls
    for mod, label in ((display, "display"), (resources, "resources"), (environment, "environment")):
        for name in getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")]):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                out[f"{label}.{name}"] = obj
    return out


def uncovered() -> list[str]:
    missing = []
    for label, fn in sorted(listed_functions().items()):
        target = inspect.unwrap(fn)
        cases = [c for c in CASES if inspect.unwrap(c.fn) is target]
        for p in inspect.signature(target).parameters.values():
            if p.kind in SKIP_KINDS or p.name == "self":
                continue
            if not any(c.covers(p.name) for c in cases):
                missing.append(f"{label}({p.name})")
    return missing


def test_every_argument_of_the_listed_functions_has_a_case() -> None:
    missing = uncovered()
    assert not missing, f"{len(missing)} arguments without a hostile case: {', '.join(missing)}"


def test_coverage_rule_can_fail() -> None:
    """The matcher is not vacuous: a made-up parameter name is not covered by any case."""
    assert not any(c.covers("no_such_parameter_xyz") for c in CASES)
    assert any(c.covers("target") for c in CASES if inspect.unwrap(c.fn) is inspect.unwrap(F.attribution_graph))
