"""Shared pieces of the hostile-input suite (``tests/test_api_hostile.py``): the case record, the
mixed-state models, the state snapshot, and short aliases. Area files ``tests/hostile_cases_*.py`` import
these and define ``CASES`` (and optionally ``extend_env(e)`` to add objects to the shared ``env``)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

from vision_interp import checks


@dataclass
class Case:
    fn: Callable  # the public function under test
    what: str  # the hostile argument, in words (the docs table)
    call: Callable[[SimpleNamespace], Any]
    expect: type[BaseException] | Callable[[Any], bool]  # an error type, or a check of the result
    names: str = ""  # a word the error message must contain (the argument's name)
    arg: str = ""  # the parameter this case is about, when neither `what` nor `names` says it

    def covers(self, param: str) -> bool:
        """Whether this case exercises ``param`` (named in ``arg``, ``names`` or ``what``, as a word)."""
        import re

        if self.arg:
            return param in [a.strip() for a in self.arg.split(",")]
        text = f"{self.what} {self.names}"
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(param)}(?![A-Za-z0-9_])", text) is not None

    @property
    def id(self) -> str:
        return f"{self.fn.__name__}: {self.what}"

    @property
    def outcome(self) -> str:
        if isinstance(self.expect, type):
            return f"{self.expect.__name__}" + (f", message contains `{self.names}`" if self.names else "")
        return "correct result: " + (self.names or "checked")


# ----------------------------------------------------------------------------------- the models


class BNNet(nn.Module):
    """Conv + BatchNorm + Dropout: train mode would update statistics and randomise outputs."""

    input_shape = (1, 12, 12)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 10 * 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.drop(self.relu(self.bn(self.conv(x))))))


def _mixed(model: nn.Module, eval_child: str) -> nn.Module:
    model.train()
    model.get_submodule(eval_child).eval()
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.requires_grad_(i != 0)
    return model


def full_state(model: nn.Module) -> dict:
    """Everything the user could notice: modes, requires_grad, values, buffers, hooks, grad mode."""
    hooks = {n: tuple(len(getattr(m, a)) for a in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))
             for n, m in model.named_modules()}
    return {
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: p.grad is None for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "hooks": hooks,
        "grad_enabled": torch.is_grad_enabled(),
    }


def assert_same_state(before: dict, after: dict, label: str) -> None:
    for key in ("modes", "requires_grad", "grads", "hooks", "grad_enabled"):
        assert before[key] == after[key], f"{label}: {key} changed"
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys(), f"{label}: {key} names changed"
        for n in before[key]:
            assert torch.equal(before[key][n], after[key][n]), f"{label}: {key} {n} changed"


E = SimpleNamespace  # type alias for the lambdas below
VE, TE, IE, NF = ValueError, TypeError, IndexError, checks.NonFiniteError


def is_tensor_shape(*shape: int) -> Callable[[Any], bool]:
    return lambda r: isinstance(r, torch.Tensor) and tuple(r.shape) == shape and bool(torch.isfinite(r).all())


