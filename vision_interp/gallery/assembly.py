"""Assembling a finished gallery: merge the shards' manifest parts into ``manifest.json`` after
verifying every recorded file, and write the static site from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import io as vio
from .manifest import MANIFEST, _PART_RE, _read_state, _recorded_jobs, _Verifier
from .plan import FORMAT, SettingsMismatchError


class IncompleteGalleryError(RuntimeError):
    """Assembly was asked for while some shards' jobs are still missing (or hold corrupt files)."""


def _latest(sources: list[dict], key: str) -> Any:
    """The value of ``key`` from the newest source that has it (parts are newer than manifest.json)."""
    for s in reversed(sources):
        if key in s:
            return s[key]
    return None


def assemble(out_dir: str | os.PathLike, *, labels: str | os.PathLike | dict | None = None,
             _verifier: _Verifier | None = None) -> dict:
    """Merge the manifest parts of a finished gallery into ``manifest.json`` and write the site.

    Every recorded file is checked against its sha256 first. Raises :class:`IncompleteGalleryError`
    (listing missing jobs or corrupt files) if some shard has not finished or a file was damaged.
    Idempotent: running it again gives the same files. ``labels`` replaces the gallery's labels.
    """
    from .site import write_site

    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"no gallery directory at {out}")
    final, parts = _read_state(out)
    sources = ([final] if final else []) + parts
    if not sources:
        raise FileNotFoundError(f"{out} holds no gallery manifest (manifest.json or manifest.shard-*.json); render one first")
    ref = sources[0]
    for s in sources[1:]:
        if (s.get("model"), s.get("layer_names"), s.get("settings")) != (ref.get("model"), ref.get("layer_names"), ref.get("settings")):
            raise SettingsMismatchError(f"{out}: manifest parts were made with different settings; rerun the shards with one set of settings")
    recorded = _recorded_jobs(final, parts)
    layers = _latest(sources, "layers")
    jobs_total = next((s["jobs_total"] for s in parts if s.get("jobs_total")), None)
    if jobs_total is None and final is not None:  # an assembled gallery lists all its jobs as done
        jobs_total = final["jobs_done"]
    if layers is None or jobs_total is None:
        raise IncompleteGalleryError(f"{out}: no shard has finished yet; run all shards before assembling")
    missing = [j for j in jobs_total if j not in recorded]
    shards = sorted({tuple(p["shard"]) for p in parts})
    if missing:
        raise IncompleteGalleryError(
            f"{out}: {len(missing)} of {len(jobs_total)} jobs are not done yet ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); shard parts present: {', '.join(f'{i}/{n}' for i, n in shards) or 'none'}. "
            "Run the missing shards (same command with their --shard), then assemble."
        )
    verifier = _verifier or _Verifier(out)
    corrupt = {j: verifier.bad_files(recorded[j]) for j in jobs_total}
    corrupt = {j: b for j, b in corrupt.items() if b}
    if corrupt:
        files = [f for b in corrupt.values() for f in b]
        raise IncompleteGalleryError(
            f"{out}: {len(files)} recorded file(s) are missing or changed ({', '.join(files[:4])}{', ...' if len(files) > 4 else ''}) "
            f"in job(s) {', '.join(list(corrupt)[:5])}; rerun the build (same command) to re-render them."
        )
    units = {k: e for j in jobs_total for k, e in recorded[j].items()}
    order = {info["name"]: k for k, info in enumerate(layers)}
    ordered = dict(sorted(units.items(), key=lambda kv: (order[kv[1]["layer"]], kv[1]["channel"])))
    if labels is not None:
        label_map = _labels_for_manifest(labels, layers, ordered)
    else:
        label_map = _latest(sources, "labels") or {}
    manifest = {
        "format": FORMAT,
        "model": ref["model"],
        "layer_names": ref["layer_names"],
        "settings": ref["settings"],
        "layers": layers,
        "dataset": _latest(sources, "dataset"),
        "labels": label_map,
        "links": _latest(sources, "links") or [],
        "environment": _latest(sources, "environment"),
        "jobs_done": list(jobs_total),
        "units": ordered,
    }
    write_site(out, manifest)
    vio.save_json(out / MANIFEST, manifest)
    for p in out.glob("manifest.shard-*-of-*.json"):  # merged: manifest.json is now the source of truth
        if _PART_RE.match(p.name):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
    return manifest


def _labels_for_manifest(labels, layers: list[dict], units: dict[str, dict]) -> dict[str, dict]:
    """Labels given at assembly time (no model at hand): keys must name units of this gallery."""
    raw = labels if isinstance(labels, dict) else None
    where = "labels"
    if raw is None:
        where = f"--labels {labels}"
        if not Path(labels).is_file():
            raise ValueError(f"{where}: no such file")
        raw = vio.load_json(labels)
    by_path = {l["path"]: l["name"] for l in layers}
    out = {}
    for key, value in raw.items():
        layer, _, ch = str(key).rpartition(":")
        unit = f"{by_path.get(layer, layer)}:{ch}"
        if unit not in units:
            raise ValueError(f"{where}: unit {key!r} is not in this gallery (layers: {', '.join(l['name'] for l in layers)})")
        value = {"name": value} if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {key!r} must map to {{\"name\": text, \"note\": text}}")
        entry = {k: str(value[k]) for k in ("name", "note") if value.get(k)}
        if entry:
            out[unit] = entry
    return dict(sorted(out.items(), key=lambda kv: list(units).index(kv[0])))
