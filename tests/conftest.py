"""Shared fixtures: the data directory (never downloaded in tests) and fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    env = os.environ.get("VISION_INTERP_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("no data directory: set VISION_INTERP_DATA (CI uses ../shared/data)")
    return d


@pytest.fixture(autouse=True)
def _seed_and_no_network(monkeypatch: pytest.MonkeyPatch):
    """Fix seeds; make sure no test can download into the user's cache by accident."""
    torch.manual_seed(0)
    monkeypatch.setenv("VISION_INTERP_CACHE", str(REPO / ".pytest_cache" / "vi_cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Small models run faster on one thread; avoids OpenMP oversubscription on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def mnist_test(data_dir):
    from vision_interp.data import load_mnist

    return load_mnist("test", data_dir, download=False)


@pytest.fixture(scope="session")
def trained_mnist():
    from vision_interp.zoo import mnist_cnn

    return mnist_cnn(pretrained=True)


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-native-bf16"])
def bf16_capability(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test twice, with native bf16 reported present and absent, on any machine.

    Sets the documented switch ``VISION_INTERP_ASSUME_BF16`` that
    :func:`vision_interp.environment.native_bf16` (the one capability function) reads, so a CI machine
    without native bf16 still takes the bf16 branch of ``precision="auto"``, and one with it the fp32 branch.
    """
    monkeypatch.setenv("VISION_INTERP_ASSUME_BF16", "1" if request.param else "0")
    return request.param
