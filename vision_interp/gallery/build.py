"""Render every unit of some layers into a verified, locked, resumable, shardable gallery directory.

Design: the units of each layer are cut into **fixed chunks** of ``batch`` consecutive channels
(by channel index, regardless of shard or executor), and each chunk is one *job* rendered with
seeds derived from ``(seed, layer, chunk)``, so a unit's pictures never depend on which process,
shard, Ray worker or resumed run rendered it. A job's files are written atomically, then the job
is recorded with every file's sha256 in the process's manifest part
(``manifest.shard-I-of-N.json``); so a killed run loses at most the job in flight. A rerun
**verifies** every recorded file against its sha256 and re-renders the jobs whose files are
missing or corrupt, and removes orphan temporary files. A lock per shard (pid, hostname, start
time; a dead pid is stale) makes a second build of the same shard wait or exit. When every job is
recorded the parts are merged into ``manifest.json`` (the single source of truth) and the static
site is written from it alone (:mod:`vision_interp.gallery.site`).

Layout of a gallery directory::

    manifest.json                      every unit: files (+ sha256), values, examples, weights, connections
    index.html, layers/<slug>.html, units/<slug>/<channel>.html, static/gallery.css
    img/<slug>/<channel>/{main,negative,diverse-J,top-J,bottom-J,weights,conn-in-J,conn-out-J}.png
    data/<dataset>-<index>.png         dataset images, shared by all units
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from .. import io as vio
from ..environment import environment_report
from ..zoo.spec import model_spec
from .assembly import IncompleteGalleryError, assemble
from .dataset import layer_stats
from .inputs import _make_dataset, cli_inputs, load_labels  # noqa: F401  (cli_inputs: re-exported)
from .lock import BuildLock, GalleryLockedError, live_locks
from .manifest import MANIFEST, _check_out_dir, _part_name, _read_state, _recorded_jobs, _remove_temp_files, _Verifier
from .plan import (FORMAT, GalleryResult, GallerySettings, SettingsMismatchError, _derive_seed, _job_id, _layer_infos,
                   _LayerInfo, gallery_layers, parse_shard, render_fingerprint, weights_fingerprint)
from .render import render_job  # noqa: F401  (re-exported: gallery.build.render_job stays importable)
from .unit_files import _finish_job, _LayerContext
from .weights import layer_weights

__all__ = [
    "GalleryLockedError",
    "render_fingerprint",
    "GallerySettings",
    "GalleryResult",
    "SettingsMismatchError",
    "IncompleteGalleryError",
    "make_gallery",
    "assemble",
    "parse_shard",
    "gallery_layers",
    "MANIFEST",
    "FORMAT",
]


def make_gallery(
    model: nn.Module,
    layers: Sequence[str] | str,
    out_dir: str | os.PathLike,
    *,
    settings: GallerySettings | None = None,
    model_name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    shard: str | Sequence[int] | None = None,
    overwrite: bool = False,
    data_dir: str | os.PathLike | None = None,
    dataset: Any = "auto",
    dataset_labels: Sequence[str] | None = None,
    labels: str | os.PathLike | dict | None = None,
    links: Sequence[tuple[str, str]] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    wait_lock: float = 0.0,
    progress: bool = True,
    assemble_site: bool = True,
    on_job_done: Callable[[str], None] | None = None,
    **overrides: Any,
) -> GalleryResult:
    """Render every unit of ``layers`` of ``model`` into ``out_dir`` and build the static site.

    Resumable and self-verifying (rerun the same call: recorded files are checked against their
    sha256, missing or corrupt ones re-rendered), locked (a second build of the same shard waits
    ``wait_lock`` seconds, then raises :class:`GalleryLockedError`), shardable (``shard="i/n"``;
    default from ``RANK``/``WORLD_SIZE``), with ``executor="ray"`` rendering batches as Ray tasks
    (``ray.init(address=ray_address)``). Settings may be given as ``settings=`` or as keyword
    overrides (``steps=64, batch=4``). ``dataset``: "auto" (MNIST test images for 28x28 grayscale
    models), None, a folder of images, or an image tensor (N, C, H, W) in [0, 1]. ``labels``: a
    JSON file or dict ``{"conv2:4": {"name", "note"}}``; ``links``: (title, href) pairs shown on
    the index (e.g. the report). ``checkpoint``: the weights file whose sha256 the index shows.
    ``on_job_done(job_id)`` is called after each finished, recorded job.
    """
    t0 = time.perf_counter()
    settings = settings or GallerySettings()
    if overrides:
        unknown = set(overrides) - set(GallerySettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"make_gallery() got unknown settings {sorted(unknown)}; valid: {sorted(GallerySettings.__dataclass_fields__)}")
        settings = GallerySettings(**{**asdict(settings), **overrides})
    settings.validate()
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        from .executors import require_ray

        require_ray()
    if settings.steps is None:
        from ..featvis import model_defaults

        settings = GallerySettings(**{**asdict(settings), "steps": int(model_defaults(model)["steps"])})
    shard_i, shard_n = parse_shard(shard)
    out = Path(out_dir)

    # --- validate everything before any work ---
    infos = _layer_infos(model, layers)
    in_shape = tuple(model_spec(model).input_shape or ())
    size = settings.size or (in_shape[-1] if in_shape else 224)
    # without an explicit size, render at the model's own (C, H, W): non-square inputs stay non-square
    render_size = settings.size or (None if in_shape else 224)
    ds = _make_dataset(model, dataset, dataset_labels, data_dir, settings.examples_limit, in_shape) if settings.examples > 0 else None
    label_map = load_labels(labels, model, infos)
    link_list = [[str(t), str(h)] for t, h in links] if links is not None else None
    model_info = {
        "name": model_name or model_spec(model).name or type(model).__name__,  # the declared name, where the model has one
        "class": type(model).__name__,
        "input_shape": list(in_shape),
        "weights_sha256": weights_fingerprint(model),
        "checkpoint_sha256": vio.sha256_file(checkpoint) if checkpoint is not None else None,
    }
    identity = {
        "format": FORMAT,
        "model": model_info,
        "layers": [i.spec for i in infos],
        # precision is recorded resolved, in "render" (fp32 unless asked: galleries made before it existed match)
        "settings": {**{k: v for k, v in asdict(settings).items() if k != "precision"}, "size": size, "dataset": ds.name if ds else None,
                     "dataset_sha256": ds.fingerprint if ds else None, "render": render_fingerprint(model, settings)},
    }
    out_existed = out.exists()
    if out_existed and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    try:
        with BuildLock(out, (shard_i, shard_n), wait=wait_lock) as lock:
            _check_out_dir(out, identity, overwrite)
            rendered, skipped, complete, manifest = _build_locked(
                model, infos, out, settings, render_size, ds, identity, (shard_i, shard_n), lock, label_map, link_list,
                executor, ray_address, progress, assemble_site, on_job_done)
    except BaseException:
        if not out_existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before any work: leave no empty directory behind
        raise
    return GalleryResult(out, complete, rendered, skipped, time.perf_counter() - t0, manifest)


def _build_locked(model, infos, out: Path, settings: GallerySettings, render_size, ds, identity: dict, shard: tuple[int, int],
                  lock: BuildLock, label_map, link_list, executor: str, ray_address, progress: bool, assemble_site: bool,
                  on_job_done) -> tuple[int, int, bool, dict | None]:
    shard_i, shard_n = shard
    others_running = [l for l in live_locks(out) if l.path != lock.path]
    lock_time = lock.path.stat().st_mtime
    jobs = [(info, c) for info in infos for c in range(math.ceil(info.units / settings.batch))]
    mine = [job for g, job in enumerate(jobs) if g % shard_n == shard_i]
    unit_dirs = [out / "img" / info.slug / str(ch) for info, c in mine
                 for ch in info.channels[c * settings.batch : (c + 1) * settings.batch]]
    _remove_temp_files(out, lock_time, unit_dirs if others_running else None)

    part_path = out / _part_name(shard_i, shard_n)
    final, parts = _read_state(out)
    recorded = _recorded_jobs(final, parts)
    verifier = _Verifier(out)
    own = next((p for p in parts if p.get("shard") == [shard_i, shard_n]), None)
    part = {
        "format": FORMAT,
        "shard": [shard_i, shard_n],
        "model": identity["model"],
        "layer_names": identity["layers"],
        "settings": identity["settings"],
        "jobs_done": list(own["jobs_done"]) if own else [],
        "units": dict(own["units"]) if own else {},
        "environment": environment_report(browser=False),  # the machine that rendered (not part of the identity: resuming elsewhere is allowed)
    }
    if label_map is not None:
        part["labels"] = label_map
    elif own and "labels" in own:
        part["labels"] = own["labels"]
    if link_list is not None:
        part["links"] = link_list
    elif own and "links" in own:
        part["links"] = own["links"]

    def units_in(job) -> int:
        info, c = job
        return min(info.units, (c + 1) * settings.batch) - c * settings.batch

    todo, repaired = [], []
    for job in mine:
        jid = _job_id(*job)
        if jid not in recorded:
            todo.append(job)
        elif verifier.bad_files(recorded[jid]):
            todo.append(job)
            repaired.append(jid)
    for jid in repaired:  # forget the bad record in our part; the re-render records it afresh
        if jid in part["jobs_done"]:
            part["jobs_done"].remove(jid)
        part["units"] = {k: e for k, e in part["units"].items() if e.get("job") != jid}
    vio.save_json(part_path, part)  # claims the directory for these settings before any PNG
    skipped = sum(units_in(j) for j in mine) - sum(units_in(j) for j in todo)
    if repaired and progress:
        print(f"re-rendering {len(repaired)} job(s) with missing or corrupt files: {', '.join(repaired[:5])}"
              f"{', ...' if len(repaired) > 5 else ''}")

    contexts: dict[str, _LayerContext] = {}
    paths_to_names = {i.path: i.name for i in infos}
    written_data: set[int] = set()

    def context(info: _LayerInfo) -> _LayerContext:
        if info.name not in contexts:
            stats = rf = None
            if ds is not None:
                stats = layer_stats(model, info.path, info.channels, ds)
                if len(info.shape) == 3:
                    from ..data.examples import example_field

                    rf = example_field(model, info.path)  # the whole image (stated) where the field is unknown
            lw = layer_weights(model, info.path, paths_to_names, settings.connections > 0)
            contexts[info.name] = _LayerContext(stats, rf, lw)
        return contexts[info.name]

    def record(job, rendered_tensors) -> int:
        info, chunk = job
        entries = _finish_job(model, info, chunk, settings, rendered_tensors, out, ds, context(info), written_data, verifier)
        part["units"].update(entries)
        part["jobs_done"].append(_job_id(info, chunk))
        vio.save_json(part_path, part)  # the job counts as done only once this lands
        if on_job_done is not None:
            on_job_done(_job_id(info, chunk))
        return len(entries)

    from tqdm.auto import tqdm

    from .executors import run_jobs

    rendered = 0
    total = sum(units_in(j) for j in mine)
    with tqdm(total=total, initial=skipped, desc=f"gallery {identity['model']['name']}" + (f" shard {shard_i}/{shard_n}" if shard_n > 1 else ""),
              unit="unit", disable=not progress) as bar:
        specs = [(job, job[0].name, job[0].channels[job[1] * settings.batch : (job[1] + 1) * settings.batch],
                  _derive_seed(settings.seed, job[0].name, job[1])) for job in todo]
        for job, result in run_jobs(executor, model, specs, settings, render_size, ray_address):
            n = record(job, result)
            rendered += n
            bar.update(n)

    # record layer facts (receptive fields, weight sources) for the site: deterministic, any shard can do it
    layer_meta = []
    for info in infos:
        meta: dict[str, Any] = {"name": info.name, "path": info.path, "slug": info.slug, "shape": list(info.shape), "units": info.units,
                                "channels": [info.channels[0], info.channels[-1]], "page": f"layers/{info.slug}.html"}
        if ds is not None and len(info.shape) == 3:
            from ..data.examples import example_field

            rf = contexts[info.name].rf if info.name in contexts else example_field(model, info.path)
            meta["receptive_field"] = asdict(rf)
        layer_meta.append(meta)
    part["layers"] = layer_meta
    part["jobs_total"] = [_job_id(*j) for j in jobs]
    part["dataset"] = {"name": ds.name, "size": ds.size, "labelled": ds.labels is not None} if ds is not None else None
    vio.save_json(part_path, part)

    manifest, complete = None, False
    if assemble_site:
        try:
            manifest = assemble(out, _verifier=verifier)
            complete = True
        except IncompleteGalleryError:
            complete = False
    return rendered, skipped, complete, manifest
