"""Where a gallery's render batches run: in this process, or as Ray tasks on an existing cluster.

Only the feature-visualization optimisation of a job (the expensive part) runs on an executor; it
is a pure function of (model weights, layer, channels, settings, seed), so a Ray worker produces
the same pictures as this process. Results come back to the driver, which writes the files,
their sha256 and the manifest part as each job completes (in completion order; the assembled
manifest is ordered by layer and channel, so it does not depend on that order).

Ray is an optional extra (``pip install 'vision_interp[ray]'``). ``ray.init(address=...)``
connects to a running cluster (``"auto"`` = the one this node belongs to); without an address a
local one-machine Ray is started. Workers must be able to import ``vision_interp`` (install it
on every node, or start the cluster from an environment that has it).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from torch import nn

from .render import render_job

__all__ = ["run_jobs", "require_ray"]


def require_ray():
    """Import Ray or explain how to get it (checked before any work)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs the optional dependency Ray: pip install 'vision_interp[ray]' (or pip install 'ray>=2')") from None
    return ray


def run_jobs(executor: str, model: nn.Module, specs: Sequence[tuple], settings, render_size, ray_address: str | None = None
             ) -> Iterator[tuple[Any, dict]]:
    """Yield (job, rendered tensors) for each spec ``(job, layer, channels, base_seed)``."""
    if not specs:
        return
    if executor == "local":
        for job, layer, channels, seed in specs:
            yield job, render_job(model, layer, channels, settings, render_size, seed)
        return
    yield from _run_ray(model, specs, settings, render_size, ray_address)


def _run_ray(model: nn.Module, specs: Sequence[tuple], settings, render_size, address: str | None) -> Iterator[tuple[Any, dict]]:
    ray = require_ray()

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        remote = ray.remote(render_job)
        model_ref = ray.put(model)
        pending = {remote.remote(model_ref, layer, list(channels), settings, render_size, seed): job
                   for job, layer, channels, seed in specs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            yield pending.pop(ref), ray.get(ref)
    finally:
        if started_here:
            ray.shutdown()
