"""The user's model comes back exactly as it was, and one call uses a model at a time.

:func:`using` is the one context manager every public entry point that runs a user's model goes
through. It

* records each module's own train/eval flag, each parameter's ``requires_grad`` and torch's global
  grad mode, and restores all of them on the way out, also after an exception or a
  ``KeyboardInterrupt`` (``finally`` runs for every ``BaseException``);
* applies **the one rule for methods that need eval behaviour**: the model runs in eval mode on the
  caller's behalf (BatchNorm uses its running statistics and never updates them, Dropout is off),
  whatever mode the caller left it in; afterwards every module has its own flag back (a model in
  train mode with one BatchNorm in eval mode stays exactly that);
* optionally freezes parameters (``freeze=True``: feature visualization needs gradients for the
  image only) and restores each parameter's own ``requires_grad``;
* holds the model's lock, so two threads (or a notebook's background job) never interleave on one
  model: the second caller **waits** for the first to finish and then runs on the model as the
  first left it, so both get correct results. If it cannot get the model within
  :data:`WAIT_SECONDS` it raises :class:`ModelBusyError` (never a silently crossed run). The lock
  is re-entrant: a call may call another (``attribute`` -> ``capture``) in the same thread.

Buffers are not copied: in eval mode no toolkit method changes them (the hostile-input tests check
that every buffer is bit-identical afterwards). Code outside the toolkit that uses the same model
from another thread at the same time is not covered; give such code its own ``copy.deepcopy(model)``.
"""

from __future__ import annotations

import functools
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

__all__ = ["ModelBusyError", "ModelState", "WAIT_SECONDS", "exclusive", "runs_model", "snapshot", "using"]

WAIT_SECONDS: float = 600.0
"""How long a call waits for a model another thread is using before raising :class:`ModelBusyError`."""


class ModelBusyError(RuntimeError):
    """Another thread is using this model through the toolkit and did not finish in time."""


@dataclass
class ModelState:
    """Every module's train flag, every parameter's ``requires_grad``, and the global grad mode."""

    modes: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[torch.nn.Parameter, bool]]
    grad_enabled: bool

    def restore(self) -> None:
        for m, flag in self.modes:
            if m.training is not flag:
                m.training = flag  # the flag itself: module.train() would also reset the children
        for p, req in self.requires_grad:
            if p.requires_grad != req:
                p.requires_grad_(req)
        torch.set_grad_enabled(self.grad_enabled)


def snapshot(model: nn.Module) -> ModelState:
    """What :func:`using` restores: each module's mode, each parameter's ``requires_grad``, grad mode."""
    return ModelState([(m, m.training) for m in model.modules()],
                      [(p, p.requires_grad) for p in model.parameters()],
                      torch.is_grad_enabled())


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_OWNERS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def _lock_for(model: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def exclusive(model: nn.Module, what: str = "a vision_interp call") -> Iterator[None]:
    """Hold ``model``'s lock (re-entrant in one thread); wait up to :data:`WAIT_SECONDS` for another thread."""
    lock = _lock_for(model)
    if not lock.acquire(timeout=WAIT_SECONDS):
        owner = _OWNERS.get(model, "another call")
        raise ModelBusyError(
            f"model {type(model).__name__} is busy: {owner} has been using it for more than {WAIT_SECONDS:g} s in another "
            "thread. Wait for it to finish, or give this thread its own copy (copy.deepcopy(model))"
        )
    outer = model not in _OWNERS
    if outer:
        _OWNERS[model] = f"{what} (thread {threading.current_thread().name})"
    try:
        yield
    finally:
        if outer:
            _OWNERS.pop(model, None)
        lock.release()


@contextmanager
def using(model: nn.Module, *, eval: bool = True, freeze: bool = False, grad: bool | None = None,
          what: str = "a vision_interp call") -> Iterator[nn.Module]:
    """Run ``model`` exclusively, in eval mode (unless ``eval=False``), with parameters frozen if
    ``freeze``, and grad mode set to ``grad`` (unchanged if None); everything restored afterwards."""
    if not isinstance(model, nn.Module):
        from .errors import InputTypeError

        raise InputTypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    with exclusive(model, what):
        state = snapshot(model)
        try:
            if eval and any(flag for _, flag in state.modes):
                model.eval()  # the module's own train(False), in case a model overrides it
            if freeze:
                for p, _ in state.requires_grad:
                    p.requires_grad_(False)
            if grad is not None:
                torch.set_grad_enabled(grad)
            yield model
        finally:
            state.restore()


def runs_model(fn: Callable) -> Callable:
    """Decorator for a public function whose first argument is the model: the whole call runs
    under :func:`using` (eval mode on the caller's behalf, state restored, one thread at a time)."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with using(model, what=f"{fn.__name__}()"):
            return fn(model, *args, **kwargs)

    return wrapper
