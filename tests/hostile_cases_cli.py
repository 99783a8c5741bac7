"""Hostile cases of the "cli" area for ``tests/test_api_hostile.py``: building a user's model by name
(``vision_interp.load_model`` with ``package.module:factory`` / ``file.py:factory``, ``weights=``,
``model_kwargs=``, ``input_shape=``) and loading a state dict into a model (``zoo.registry.load_weights``).

``extend_env`` writes a user model file (PReLU, a ceil-mode pool, a module-level input shape) and state dicts
that fit it, miss tensors, or carry another shape; every refusal names its argument, and a model given to
``load_weights`` comes back unchanged when the file does not fit.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

import vision_interp as vi
from vision_interp.zoo import registry as R

from hostile_support import Case, TE, VE, assert_same_state, full_state

USER_NETS = '''
import torch
from torch import nn

input_shape = (3, 16, 16)


def build(width=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.PReLU(width), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                         nn.Linear(width * 7 * 7, 5))


NOT_CALLABLE = 3
'''

USER_PLAIN = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
'''


def extend_env(e: SimpleNamespace) -> None:
    nets = e.tmp / "user_nets.py"
    nets.write_text(USER_NETS)
    plain = e.tmp / "user_plain.py"
    plain.write_text(USER_PLAIN)
    e.user = f"{nets}:build"
    e.user_plain = f"{plain}:build"
    m = R.load_model(e.user)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.5)
    e.user_weights = e.tmp / "user_weights.pt"
    torch.save(m.state_dict(), e.user_weights)
    e.user_expected = {k: v.clone() for k, v in m.state_dict().items()}
    sd = m.state_dict()
    e.user_bad_weights = e.tmp / "user_bad_weights.pt"
    torch.save({**{k: v for k, v in sd.items() if k != "4.bias"}, "0.weight": torch.zeros(2, 3, 3, 3)}, e.user_bad_weights)


def _loaded_equal(e: SimpleNamespace) -> bool:
    m = R.load_model(e.user, weights=e.user_weights)
    return (not m.training and vi.model_spec(m).input_shape == (3, 16, 16)
            and all(torch.equal(v, m.state_dict()[k]) for k, v in e.user_expected.items()))


def _fits(e: SimpleNamespace) -> nn.Module:
    m = R.load_weights(R.load_model(e.user), e.user_weights, what="mine")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in e.user_expected.items()), "tensors differ from the file"
    return m


def _unchanged_after_bad_weights(e: SimpleNamespace) -> None:
    """A file that does not fit loads nothing: the model's full state is what it was (then the error goes on)."""
    m = R.load_model(e.user)
    before = full_state(m)
    try:
        R.load_weights(m, e.user_bad_weights)
    finally:
        assert_same_state(before, full_state(m), "load_weights with a file that does not fit")


CASES: list[Case] = [
    Case(vi.load_model, "bytes instead of a name", lambda e: vi.load_model(b"mnist_cnn"), TE, "name_or_path"),
    Case(vi.load_model, "a factory spec with no factory name", lambda e: vi.load_model("pkg.nets:"), VE, "name_or_path"),
    Case(vi.load_model, "a module that is not importable", lambda e: vi.load_model("vi_no_such_pkg.nets:build"), VE,
         "cannot import module"),
    Case(vi.load_model, "a factory attribute that does not exist", lambda e: vi.load_model(e.user.replace(":build", ":buld")),
         VE, "has no attribute 'buld'"),
    Case(vi.load_model, "a factory that is not callable", lambda e: vi.load_model(e.user.replace(":build", ":NOT_CALLABLE")),
         VE, "not callable"),
    Case(vi.load_model, "a model file that does not exist", lambda e: vi.load_model(f"{e.tmp / 'nope.py'}:build"), VE,
         "no such file"),
    Case(vi.load_model, "pretrained=False for a factory", lambda e: vi.load_model(e.user, pretrained=False), VE, "pretrained"),
    Case(vi.load_model, "pretrained as a string", lambda e: vi.load_model("mnist_cnn", pretrained="yes"), TE, "pretrained"),
    Case(vi.load_model, "weights that do not exist", lambda e: vi.load_model(e.user, weights=e.tmp / "none.pt"), VE, "weights"),
    Case(vi.load_model, "weights as an int", lambda e: vi.load_model(e.user, weights=3), TE, "weights"),
    Case(vi.load_model, "weights with a missing tensor and another shape", lambda e: vi.load_model(e.user, weights=e.user_bad_weights),
         VE, "weights", arg="weights"),
    Case(vi.load_model, "weights that fit the factory's model", _loaded_equal, lambda r: r is True,
         "every tensor equal, eval mode, the module's input shape", arg="weights"),
    Case(vi.load_model, "weights with pretrained=False for a zoo model",
         lambda e: vi.load_model("mnist_cnn", pretrained=False, weights=e.user_weights), VE, "weights"),
    Case(vi.load_model, "model_kwargs as a list", lambda e: vi.load_model(e.user, model_kwargs=[4]), TE, "model_kwargs"),
    Case(vi.load_model, "model_kwargs the factory does not take", lambda e: vi.load_model(e.user, model_kwargs={"depth": 2}),
         VE, "model_kwargs"),
    Case(vi.load_model, "model_kwargs for a zoo model", lambda e: vi.load_model("mnist_cnn", model_kwargs={}), VE, "model_kwargs"),
    Case(vi.load_model, "model_kwargs that set the width", lambda e: vi.load_model(e.user, model_kwargs={"width": 2}),
         lambda r: isinstance(r, nn.Module) and r[0].out_channels == 2, "a model with 2 channels", arg="model_kwargs"),
    Case(vi.load_model, "input_shape as a string", lambda e: vi.load_model(e.user_plain, input_shape="1,8,8"), TE, "input_shape"),
    Case(vi.load_model, "input_shape with two numbers", lambda e: vi.load_model(e.user_plain, input_shape=(8, 8)), VE,
         "input_shape"),
    Case(vi.load_model, "input_shape with a float", lambda e: vi.load_model(e.user_plain, input_shape=(1, 8.0, 8)), VE,
         "input_shape"),
    Case(vi.load_model, "input_shape the model cannot take", lambda e: vi.load_model(e.user_plain, input_shape=(3, 8, 8)), VE,
         "input_shape"),
    Case(vi.load_model, "input_shape other than the declared one", lambda e: vi.load_model(e.user, input_shape=(3, 32, 32)), VE,
         "declares input shape (3, 16, 16)", arg="input_shape"),
    Case(vi.load_model, "input_shape for a model that declares none",
         lambda e: vi.model_spec(vi.load_model(e.user_plain, input_shape=(1, 8, 8))).input_shape,
         lambda r: r == (1, 8, 8), "the spec carries (1, 8, 8)", arg="input_shape"),
    Case(vi.load_model, "a zoo keyword for a factory", lambda e: vi.load_model(e.user, data_dir="."), VE, "model_kwargs",
         arg="kwargs"),
    Case(R.load_weights, "a string instead of a model", lambda e: R.load_weights("m", e.user_weights), TE, "model"),
    Case(R.load_weights, "a path that does not exist", lambda e: R.load_weights(R.load_model(e.user), e.tmp / "none.pt"), VE,
         "path", arg="path"),
    Case(R.load_weights, "a file that does not fit (the model unchanged)", _unchanged_after_bad_weights, VE,
         "1 missing (4.bias)", arg="path, what"),
    Case(R.load_weights, "a file that fits", lambda e: _fits(e),
         lambda r: isinstance(r, nn.Module), "the model, loaded", arg="model, path, what"),
    Case(R.load_weights, "what as an int", lambda e: R.load_weights(R.load_model(e.user), e.user_weights, what=3), TE, "what"),
    Case(R.is_factory_spec, "a zoo name, a factory, a number", lambda e: (R.is_factory_spec("mnist_cnn"),
         R.is_factory_spec("a.b:c"), R.is_factory_spec("x.py:build"), R.is_factory_spec(5)),
         lambda r: r == (False, True, True, False), "False, True, True, False", arg="text"),
]
