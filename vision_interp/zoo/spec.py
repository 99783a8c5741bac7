"""The model protocol: what the toolkit needs to know about a model, declared once.

Any ``nn.Module`` works without a spec; a model that wants better defaults (Lucid's layer names,
the layers a gallery should show, feature-visualization settings, class names) sets
``model.spec = ModelSpec(...)``. Older models that set the individual attributes
(``layer_aliases``, ``input_shape``, ``gallery_layers``, ``featvis_defaults``, ``class_names``,
``weights_file``) are
read the same way, so :func:`model_spec` is the only place that looks at a model's attributes.

Modules inside a model take part in circuits' linearisation by duck typing, never by class:
a module with a ``linearized(x)`` method is replaced by it when weights are expanded through
linear paths (e.g. a max pool by an average pool over the same window, a local response norm by
the identity), and a module with ``pad_amounts(h, w) -> (top, bottom, left, right)`` tells the
geometry how it pads an ``h x w`` input. A forward hook object with ``part_of_model = True`` is part
of the model's computation (an attached feature dictionary): the trace runs it, while it sets other
hooks aside. No consumer imports a zoo model class.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

__all__ = ["ModelSpec", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model declares about itself. Every field is optional."""

    name: str | None = None
    input_shape: tuple[int, ...] | None = None  # (C, H, W) the model was trained on
    layer_aliases: dict[str, str] = field(default_factory=dict)  # alias -> module path
    class_names: tuple[str, ...] | None = None
    gallery_layers: tuple[str, ...] | None = None  # what ``--layers all`` means
    featvis_defaults: dict[str, Any] = field(default_factory=dict)  # overrides for render defaults
    logits_layer: str | None = None  # module path (or alias) of the class logits
    weights_file: str | None = None  # the checkpoint file the weights were loaded from, if one was

    def class_index(self, c: Any, arg: str = "class") -> int:
        """Class ``c`` as an index into the logits: an integer id as it is, a name looked up in ``class_names``
        (exactly, else by the one case-insensitive match). The one place class names are read, so a
        visualization objective and an attribution target name the same class. A float (even ``1.0``) or a
        bool is refused; the range is not checked here (the logits layer's width is the trace's to say)."""
        from ..errors import IdTypeError, InputError

        if isinstance(c, str):
            names = list(self.class_names or ())
            label = c.strip()
            if label in names:
                return names.index(label)
            lower = [n.lower() for n in names]
            if lower.count(label.lower()) == 1:
                return lower.index(label.lower())
            if not names:
                raise InputError(f"{arg}: unknown class {c!r}: {self.name or 'the model'} declares no class names "
                                 "(spec.class_names or model.class_names); give a class index")
            near = difflib.get_close_matches(label, names, n=5, cutoff=0.5)
            raise InputError(f"{arg}: unknown class {c!r}" + (f"; closest: {', '.join(map(repr, near))}" if near else "")
                             + f"; class names are {', '.join(map(repr, names[:10]))}" + (", ..." if len(names) > 10 else "")
                             + f" (indices 0..{len(names) - 1})")
        if _is_integral(c):
            return int(c.item()) if hasattr(c, "item") else int(c)
        raise IdTypeError(f"{arg}: expected a class index (an integer) or a class name, got {type(c).__name__} {c!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "layer_aliases": dict(self.layer_aliases),
            "class_names": list(self.class_names) if self.class_names else None,
            "gallery_layers": list(self.gallery_layers) if self.gallery_layers else None,
            "featvis_defaults": dict(self.featvis_defaults),
            "logits_layer": self.logits_layer,
            "weights_file": self.weights_file,
        }


def _is_integral(v: Any) -> bool:
    """An int, a NumPy integer or a one-element integer tensor/array; never a bool or a float (also not ``3.0``)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    dtype = getattr(v, "dtype", None)  # NumPy scalars and arrays, torch tensors
    if dtype is None:
        return False
    numel = v.numel() if callable(getattr(v, "numel", None)) else int(getattr(v, "size", 0))
    return numel == 1 and "int" in str(dtype)


def _tuple_or_none(v: Sequence | None) -> tuple | None:
    return tuple(v) if v else None


def _names(names: Sequence | None) -> tuple[str, ...] | None:
    if not names:
        return None
    names = tuple(names)
    return names if all(type(c) is str for c in names) else tuple(str(c) for c in names)


def model_spec(model: nn.Module) -> ModelSpec:
    """The model's declared spec (``model.spec``), else one read from its legacy attributes."""
    from ..errors import check_model

    check_model(model)
    declared = getattr(model, "spec", None)
    if isinstance(declared, ModelSpec):
        return declared
    aliases = dict(getattr(model, "layer_aliases", None) or {})
    return ModelSpec(
        name=getattr(model, "model_name", None) or type(model).__name__,
        input_shape=_tuple_or_none(getattr(model, "input_shape", None)),
        layer_aliases=aliases,
        class_names=_names(getattr(model, "class_names", None)),
        gallery_layers=_tuple_or_none(getattr(model, "gallery_layers", None)),
        featvis_defaults=dict(getattr(model, "featvis_defaults", None) or {}),
        logits_layer=aliases.get("logits"),
        weights_file=str(getattr(model, "weights_file", None) or "") or None,
    )
