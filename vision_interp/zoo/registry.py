"""Model names -> models: a zoo name (``mnist_cnn``, ``inceptionv1``), a zoo checkpoint file, or any
model of the user's own, built by a factory named ``package.module:factory`` or ``path/to/file.py:factory``.

A user model needs no spec: the facts the toolkit reads (input shape, class names, ...) come from the
model's own ``spec`` / attributes (:func:`~vision_interp.zoo.spec.model_spec`), else from the factory's
Python module (a module-level ``spec = ModelSpec(...)``, ``input_shape``, ``class_names``), else from
``input_shape=`` here. Weights come from the factory, or from ``weights=`` (a state dict, read with
``weights_only=True`` or as safetensors, that must fit the built model exactly: missing, unexpected and
mis-shaped tensors are listed, never skipped).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import InputError, InputTypeError
from ..io import CorruptFileError
from .spec import ModelSpec, model_spec

__all__ = ["MODELS", "ModelLoadError", "list_models", "load_model", "is_factory_spec", "load_weights"]


def _mnist(pretrained: bool, **kw) -> nn.Module:
    from .mnist_cnn import mnist_cnn

    return mnist_cnn(pretrained=pretrained, **kw)


def _inception(pretrained: bool, **kw) -> nn.Module:
    from .inceptionv1 import inceptionv1

    return inceptionv1(pretrained=pretrained, **kw)


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "mnist_cnn": (_mnist, "small MNIST CNN (conv1, conv2, fc); committed checkpoint in models/"),
    "inceptionv1": (_inception, "Lucid's inception5h; weights download on first use (random with --random-weights)"),
}

MAX_INPUT_SIDE = 16_384  # pixels per side of a declared input shape
MAX_INPUT_CHANNELS = 4_096

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_MODULE_FORM = re.compile(rf"^(?P<module>{_DOTTED}):(?P<attr>{_DOTTED})$")
_FILE_FORM = re.compile(rf"^(?P<file>.+\.py):(?P<attr>{_DOTTED})$")


class ModelLoadError(InputError):
    """A model that cannot be built as asked (import, factory, weights, declared shape).

    ``arg`` is the argument at fault (``name_or_path``, ``weights``, ``model_kwargs``, ``input_shape``)
    so that the command line can name its own flag; the message starts with it.
    """

    def __init__(self, arg: str, value: Any, detail: str) -> None:
        self.arg, self.value, self.detail = arg, value, detail
        super().__init__(f"{arg} {value!r}: {detail}" if value is not None else f"{arg}: {detail}")


def list_models() -> dict[str, str]:
    return {k: v[1] for k, v in MODELS.items()}


def is_factory_spec(text: str) -> bool:
    """Whether ``text`` is written as a factory: ``package.module:factory`` or ``file.py:factory``."""
    return isinstance(text, str) and bool(_MODULE_FORM.match(text) or _FILE_FORM.match(text))


def factory_syntax_problem(text: str) -> str | None:
    """Why ``text`` (which has a ':') is not a factory spec, in words; None when it is one."""
    if is_factory_spec(text):
        return None
    head, _, attr = text.rpartition(":")
    if not re.fullmatch(_DOTTED, attr or ""):
        return (f"{attr!r} after the ':' is not a Python name; write package.module:factory or path/to/file.py:factory "
                "(the factory: a function or class that returns the nn.Module)")
    return (f"{head!r} is neither a dotted module name (package.module) nor a .py file; write package.module:factory "
            "or path/to/file.py:factory")


def load_model(name_or_path: str | os.PathLike, *, pretrained: bool = True, weights: str | os.PathLike | None = None,
               model_kwargs: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None,
               **kwargs: Any) -> nn.Module:
    """A zoo model by name, a zoo checkpoint file (architecture inferred from its keys), or a user model
    from a factory: ``"package.module:factory"`` (importable) or ``"path/to/file.py:factory"``.

    ``pretrained=False`` gives a zoo model random weights (a factory builds its own weights, so it is refused
    there). ``weights``: a state dict file loaded into the built model (for a zoo name, that architecture's
    checkpoint). ``model_kwargs``: keyword arguments for the factory. ``input_shape``: (C, H, W) for a model
    that declares none (a declared one that differs is refused). ``kwargs`` go to a zoo constructor
    (e.g. ``data_dir`` for InceptionV1). Every argument is checked before anything is built; a factory
    model comes back in eval mode.
    """
    if isinstance(name_or_path, bytes) or not isinstance(name_or_path, (str, os.PathLike)):
        raise InputTypeError(f"name_or_path: expected a zoo name ({', '.join(MODELS)}), a checkpoint path or "
                             f"'package.module:factory', got {type(name_or_path).__name__}")
    if not isinstance(pretrained, bool):
        raise InputTypeError(f"pretrained: expected True or False, got {type(pretrained).__name__}")
    weights_path = _check_weights_arg(weights)
    shape = _check_input_shape(input_shape) if input_shape is not None else None
    if model_kwargs is not None:
        model_kwargs = _check_model_kwargs(model_kwargs)
    key = os.fspath(name_or_path)
    if key in MODELS:
        if model_kwargs is not None:
            raise ModelLoadError("model_kwargs", model_kwargs, f"applies to a factory ('package.module:factory'); {key} is a zoo model "
                                                 "(its constructor's options go as keyword arguments)")
        if weights_path is not None:
            if not pretrained:
                raise ModelLoadError("weights", str(weights_path), "a weights file and pretrained=False contradict each other; give one")
            try:
                model = _load_checkpoint(weights_path, key, **kwargs)
            except CorruptFileError as e:  # name the argument: the file is the weights, not the model
                text = str(e)
                text = text[len(str(weights_path)) + 2:] if text.startswith(f"{weights_path}: ") else text
                raise ModelLoadError("weights", str(weights_path), text) from e
            return _declare(model, None, shape, key)
        return _declare(MODELS[key][0](pretrained, **kwargs), None, shape, key)
    path = Path(key).expanduser()
    if path.is_file() and not is_factory_spec(key):
        for arg, value in (("weights", weights_path), ("model_kwargs", model_kwargs)):
            if value is not None:
                raise ModelLoadError(arg, value if arg == "model_kwargs" else str(value),
                                     f"{key} is already a checkpoint file; {arg} applies to a zoo name or a factory")
        return _declare(_load_checkpoint(path, **kwargs), None, shape, key)
    if ":" in key and not path.exists():
        problem = factory_syntax_problem(key)
        if problem:
            raise ModelLoadError("name_or_path", key, problem)
        if kwargs:
            raise ModelLoadError("model_kwargs", None, f"a factory takes its arguments as model_kwargs={{...}}, "
                                                 f"got keyword arguments {sorted(kwargs)}")
        if not pretrained:
            raise ModelLoadError("pretrained", False, f"{key} builds its own weights; pretrained=False applies to zoo models "
                                               "(to start from random weights, make the factory do it)")
        factory, module = _resolve_factory(key)
        model = _call_factory(key, factory, model_kwargs or {})
        if weights_path is not None:
            _load_into(model, weights_path, f"{key}'s model", "weights")
        model.eval()
        return _declare(model, module, shape, key)
    from ..units import close_names

    near = close_names(key, MODELS)
    if path.is_dir():
        raise ModelLoadError("name_or_path", key, f"{path} is a folder; give a zoo name ({', '.join(MODELS)}), a checkpoint file "
                                             "or package.module:factory")
    raise ModelLoadError(
        "name_or_path", None,
        f"unknown model {key!r}: not a zoo name ({', '.join(MODELS)}), no such file, and not a factory "
        "(package.module:factory or path/to/file.py:factory)." + (f" Did you mean {', '.join(near)}?" if near else ""))


# ------------------------------------------------------------------ argument checks


def _check_weights_arg(weights: Any, arg: str = "weights") -> Path | None:
    if weights is None:
        return None
    if isinstance(weights, bytes) or not isinstance(weights, (str, os.PathLike)):
        raise InputTypeError(f"{arg}: expected a path to a state dict file, got {type(weights).__name__}")
    p = Path(weights).expanduser()
    if not p.exists():
        raise ModelLoadError(arg, str(weights), f"no such file: {p}")
    if not p.is_file():
        raise ModelLoadError(arg, str(weights), f"{p} is not a regular file; give a state dict (.safetensors, .pt, .pth)")
    return p


def _check_input_shape(shape: Any) -> tuple[int, int, int]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
        raise InputTypeError(f"input_shape: expected (C, H, W), three positive integers, got {type(shape).__name__}")
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        raise ModelLoadError("input_shape", tuple(shape), "expected (C, H, W), three positive integers")
    c, h, w = shape
    if not (1 <= c <= MAX_INPUT_CHANNELS and 1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
        raise ModelLoadError("input_shape", tuple(shape), f"channels must be 1..{MAX_INPUT_CHANNELS} and each side "
                                            f"1..{MAX_INPUT_SIDE} pixels")
    return (c, h, w)


def _check_model_kwargs(kw: Any) -> dict[str, Any]:
    if not isinstance(kw, Mapping):
        raise InputTypeError(f"model_kwargs: expected a dict of keyword arguments for the factory, got {type(kw).__name__}")
    bad = [k for k in kw if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ModelLoadError("model_kwargs", None, f"key {bad[0]!r} is not a Python argument name")
    return dict(kw)


# ------------------------------------------------------------------ factories


def _resolve_factory(key: str) -> tuple[Callable[..., Any], ModuleType]:
    """Import the module (or execute the file) and find the factory attribute; every failure in one line."""
    m = _FILE_FORM.match(key)
    if m:
        module = _import_file(key, Path(m["file"]).expanduser())
    else:
        m = _MODULE_FORM.match(key)
        module = _import_module(key, m["module"])
    obj: Any = module
    walked = []
    for part in m["attr"].split("."):
        walked.append(part)
        if not hasattr(obj, part):
            where = getattr(module, "__name__", m["attr"]) if len(walked) == 1 else ".".join(walked[:-1])
            names = sorted(n for n, v in vars(obj).items() if callable(v) and not n.startswith("_")) if hasattr(obj, "__dict__") else []
            from ..units import close_names

            near = close_names(part, names)
            raise ModelLoadError("name_or_path", key, f"{where} has no attribute {part!r}"
                                 + (f"; did you mean {', '.join(near)}?" if near else
                                    f"; its callables: {', '.join(names[:10]) or '(none)'}"))
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelLoadError("name_or_path", key, f"{m['attr']} is {_article(type(obj).__name__)}, not callable; name a "
                                             "function or class that returns the nn.Module")
    return obj, module


def _import_module(key: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or str(e)
        if name == missing or name.startswith(f"{missing}."):
            raise ModelLoadError("name_or_path", key, f"cannot import module {name!r} (no module named {missing!r}); "
                                 "check the spelling and that its folder is on PYTHONPATH (or give path/to/file.py:factory)") from None
        raise ModelLoadError("name_or_path", key, f"importing {name!r} failed: it needs module {missing!r}, "
                                             "which is not installed") from e
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing: say so in one line
        raise ModelLoadError("name_or_path", key, f"importing {name!r} raised {type(e).__name__}: "
                                             f"{_first_line(e)}") from e


def _import_file(key: str, path: Path) -> ModuleType:
    if not path.exists():
        raise ModelLoadError("name_or_path", key, f"no such file: {path}")
    if not path.is_file():
        raise ModelLoadError("name_or_path", key, f"{path} is not a regular file")
    import hashlib

    resolved = path.resolve()
    name = f"_vision_interp_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ModelLoadError("name_or_path", key, f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # the file's own folder, so it can import its siblings while it loads
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001
        sys.modules.pop(name, None)
        raise ModelLoadError("name_or_path", key, f"running {path} raised {type(e).__name__}: {_first_line(e)}") from e
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _call_factory(key: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = factory(**kwargs)
    except TypeError as e:
        import inspect

        try:
            sig = str(inspect.signature(factory))
        except (TypeError, ValueError):
            sig = "(...)"
        raise ModelLoadError("model_kwargs" if kwargs else "name_or_path", kwargs if kwargs else key,
                             f"the factory {_attr(key)}{sig} could not be called with {kwargs or 'no arguments'}: {_first_line(e)}") from e
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError("name_or_path", key, f"the factory raised {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelLoadError("name_or_path", key, f"the factory returned {_article(type(model).__name__)}, not a torch.nn.Module; "
                                             "the factory must build and return the model")
    return model


def _article(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _attr(key: str) -> str:
    return key.rpartition(":")[2]


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]


def _declare(model: nn.Module, module: ModuleType | None, shape: tuple[int, int, int] | None, key: str) -> nn.Module:
    """Fill the facts the model does not declare from its factory's module, then ``input_shape``; check the shape runs."""
    spec = model_spec(model)
    updates: dict[str, Any] = {}
    if module is not None:
        mod_spec = getattr(module, "spec", None)
        if isinstance(mod_spec, ModelSpec):
            for f in dataclasses.fields(ModelSpec):
                mine, theirs = getattr(spec, f.name), getattr(mod_spec, f.name)
                if theirs and (not mine or (f.name == "name" and mine == type(model).__name__)):
                    updates[f.name] = theirs
        for attr in ("input_shape", "class_names"):
            value = getattr(module, attr, None)
            if value and not getattr(spec, attr) and attr not in updates:
                try:
                    updates[attr] = tuple(int(v) for v in value) if attr == "input_shape" else tuple(str(v) for v in value)
                except (TypeError, ValueError):
                    raise ModelLoadError("name_or_path", key, f"module attribute {attr} = {value!r} is not "
                                                         f"{'(C, H, W)' if attr == 'input_shape' else 'a list of names'}") from None
    declared = updates.get("input_shape") or spec.input_shape
    if shape is not None:
        if declared and tuple(declared) != shape:
            raise ModelLoadError("input_shape", shape, f"the model declares input shape {tuple(declared)}; leave "
                                                "input_shape out or give the same")
        if not declared:
            updates["input_shape"] = shape
    if updates:
        model.spec = dataclasses.replace(spec, **updates)
    final = model_spec(model).input_shape
    if final and module is not None:
        _check_runs(model, tuple(final), key, "input_shape" if "input_shape" in updates and shape is not None else "name_or_path")
    return model


def _check_runs(model: nn.Module, shape: tuple[int, ...], key: str, arg: str) -> None:
    """One forward pass on zeros of the declared shape: a shape the model cannot take is refused here, in one line."""
    from ..trace import model_device_dtype

    device, dtype = model_device_dtype(model)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device, dtype=dtype))
    except Exception as e:  # noqa: BLE001 - any failure means the shape does not fit
        raise ModelLoadError(arg, key if arg == "name_or_path" else shape, f"the model fails on an input of shape (1, {', '.join(map(str, shape))}): "
                                  f"{type(e).__name__}: {_first_line(e)}; give the (C, H, W) it takes") from e


# ------------------------------------------------------------------ weights


def load_weights(model: nn.Module, path: str | os.PathLike, *, what: str = "the model") -> nn.Module:
    """Load a state dict file into ``model`` exactly: every tensor must fit, none may be missing.

    Read without running pickled code (safetensors, or ``torch.load(weights_only=True)``); NaN/inf
    tensors are refused. A mismatch lists the missing, unexpected and mis-shaped tensors (counts and
    the first few) and loads nothing.
    """
    from ..errors import check_model

    check_model(model)
    if not isinstance(what, str):
        raise InputTypeError(f"what: expected a description of the model for messages (str), got {type(what).__name__}")
    return _load_into(model, _check_weights_arg(path, "path"), what, "path")


def _load_into(model: nn.Module, p: Path, what: str, arg: str) -> nn.Module:
    """Every check before anything is copied, so a file that does not fit leaves the model as it was."""
    from .. import io as vio

    sd = vio.load_state_dict(p)
    check_finite(sd, p)
    problems = state_dict_mismatch(sd, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if problems:
        hint = _prefix_hint(sd, model.state_dict())
        raise ModelLoadError(arg, str(p), f"does not fit {what}: {problems}{hint}")
    model.load_state_dict(sd, strict=True)
    return model


def state_dict_mismatch(sd: Mapping[str, torch.Tensor], reference: Mapping[str, tuple[int, ...]]) -> str:
    """'' when ``sd`` has exactly the tensors of ``reference`` (name -> shape); else a one-line summary."""
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    shapes = [k for k in reference if k in sd and tuple(sd[k].shape) != tuple(reference[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (first {k}: file {tuple(sd[k].shape)}, model {tuple(reference[k])})")
    return "; ".join(parts)


def _prefix_hint(sd: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd) and {k[len(prefix):] for k in sd} == set(own):
            return (f" (every name in the file starts with {prefix!r}, e.g. from DataParallel or a training wrapper; "
                    "save the inner model's state_dict())")
    return ""


def check_finite(sd: dict, path: Path) -> None:
    """Refuse weights with NaN or infinite values: every result computed from them would be meaningless."""
    for name, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CorruptFileError(
                f"{path}: tensor {name} has {bad} of {t.numel()} values that are NaN or infinite; "
                "the checkpoint is broken (e.g. a diverged training run); retrain or use another file")


def _zoo_reference(name: str, sd: Mapping[str, torch.Tensor] | None = None) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a zoo architecture, from a model built on the meta device (no memory, no
    weights); the MNIST CNN with the channel counts of ``sd`` where it has them (its widths vary)."""
    from .inceptionv1 import InceptionV1
    from .mnist_cnn import MnistCNN

    with torch.device("meta"):
        if name == "mnist_cnn":
            widths = [sd[k].shape[0] for k in ("conv1.weight", "conv2.weight") if sd is not None and k in sd and sd[k].ndim]
            m = MnistCNN(*widths) if len(widths) == 2 else MnistCNN()
        else:
            m = InceptionV1()
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


_ARCH = {"mnist_cnn": ("MNIST CNN", "retrain it (vision-interp train-mnist) or use the committed models/mnist_cnn.safetensors"),
         "inceptionv1": ("InceptionV1", "use the original inception5h.pth (or --model inceptionv1, which downloads it)")}
_FACTORY_HINT = "if it is your own model's, give its factory: --model package.module:factory --weights FILE"


def _architecture_of(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The zoo architecture the file is for: by its telltale tensors (InceptionV1's classifier, the MNIST CNN's
    conv1 + fc), else the one that holds more than half of its own tensor names; None when none does."""
    if "softmax2_pre_activation_matmul.weight" in sd:
        return "inceptionv1"
    if "conv1.weight" in sd and "fc.weight" in sd:
        return "mnist_cnn"
    best, share = None, 0.5
    for name in MODELS:
        ref = _zoo_reference(name)
        s = sum(k in sd for k in ref) / len(ref)
        if s > share:
            best, share = name, s
    return best


def _load_checkpoint(path: Path, arch: str | None = None, **kwargs) -> nn.Module:
    """A zoo checkpoint: the architecture from its tensor names (or ``arch``), values checked, mismatches summarised."""
    from .. import io as vio

    sd = vio.load_state_dict(path)  # safetensors or weights_only: never runs pickled code
    arch = arch or _architecture_of(sd)
    if arch is None:
        tried = "; ".join(f"{name}: {state_dict_mismatch(sd, _zoo_reference(name, sd)) or 'fits'}" for name in MODELS)
        raise CorruptFileError(
            f"{path}: unrecognised state dict (keys like {', '.join(list(sd)[:4]) or '(none)'}): it fits no zoo architecture "
            f"(tried {tried}); {_FACTORY_HINT}")
    label, fix = _ARCH[arch]
    check_finite(sd, path)
    mismatch = state_dict_mismatch(sd, _zoo_reference(arch, sd))
    if arch == "mnist_cnn" and mismatch:  # InceptionV1 maps its file's names itself; the MNIST CNN loads strictly
        raise CorruptFileError(f"{path}: the tensors do not fit the {label} architecture ({mismatch}); the file may come "
                               f"from another version of the model or be edited; {fix}; {_FACTORY_HINT}")
    try:
        return _mnist(True, path=path) if arch == "mnist_cnn" else _inception(True, weights=path, **kwargs)
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        if isinstance(e, CorruptFileError) and str(path) not in str(e):
            raise
        what = f"missing tensor {e.args[0]!r}" if isinstance(e, KeyError) and e.args else \
            " ".join(str(e).split())[:300] or type(e).__name__
        raise CorruptFileError(
            f"{path}: the tensors do not fit the {label} architecture ({what}); the file may come from another "
            f"version of the model or be edited; {fix}") from e
