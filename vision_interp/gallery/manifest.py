"""A gallery directory's records: manifest parts per shard, verification of every recorded file
against its sha256, orphan temporary files, and the check that an existing directory holds a
gallery of the same identity (or may be overwritten)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .. import io as vio
from .plan import SettingsMismatchError

MANIFEST = "manifest.json"
_PART_RE = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.json$")
# what a gallery directory may contain besides hidden temporary files
_OWN_NAMES = {"index.html", "static", "layers", "units", "img", "data", MANIFEST}
_TEMP_RE = re.compile(r"^\..+\.part$")  # vision_interp.io's atomic-write temporaries


def _part_name(i: int, n: int) -> str:
    return f"manifest.shard-{i}-of-{n}.json"


def _read_state(out: Path) -> tuple[dict | None, list[dict]]:
    """(manifest.json or None, parts). Parts are read *before* manifest.json: assembly writes
    manifest.json before deleting parts, so a part that vanished is always covered by it."""
    parts = []
    for p in sorted(out.glob("manifest.shard-*-of-*.json")):
        if not _PART_RE.match(p.name):
            continue
        try:
            parts.append(vio.load_json(p))
        except FileNotFoundError:
            continue
    final = vio.load_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    return final, parts


def _recorded_jobs(final: dict | None, parts: list[dict]) -> dict[str, dict[str, dict]]:
    """job id -> {unit: entry} of every recorded job. Parts override manifest.json: a rerun that
    re-renders a corrupt job records it in its part, which is newer than the assembled manifest."""
    jobs: dict[str, dict[str, dict]] = {}
    for src in ([final] if final else []) + parts:
        done = set(src.get("jobs_done", []))
        by_job: dict[str, dict[str, dict]] = {j: {} for j in done}
        for key, entry in src.get("units", {}).items():
            if entry.get("job") in done:
                by_job[entry["job"]][key] = entry
        jobs.update(by_job)
    return jobs


class _Verifier:
    """Checks recorded files against their sha256 (each path hashed once per process)."""

    def __init__(self, out: Path):
        self.out = out
        self._known: dict[str, str | None] = {}

    def sha(self, rel: str) -> str | None:
        if rel not in self._known:
            p = self.out / rel
            self._known[rel] = vio.sha256_file(p) if p.is_file() else None
        return self._known[rel]

    def forget(self, rels) -> None:
        for r in rels:
            self._known.pop(r, None)

    def bad_files(self, entries: dict[str, dict]) -> list[str]:
        """Files of these units that are missing or whose bytes changed since they were recorded."""
        bad = []
        for entry in entries.values():
            hashes = entry.get("sha256")
            if not hashes:  # recorded by an older format: nothing to verify against
                bad.append(f"{entry.get('unit')} (no checksums)")
                continue
            bad += [rel for rel, h in hashes.items() if self.sha(rel) != h]
        return bad


def _remove_temp_files(out: Path, since: float, only_under: list[Path] | None) -> list[Path]:
    """Delete orphan atomic-write temporaries (``.NAME.XXXX.part``) older than ``since`` (this
    build's lock time; newer ones belong to a build that started after us). With ``only_under``,
    only below those folders (other shards are running and own the rest)."""
    roots = only_under if only_under is not None else [out]
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for p in root.rglob(".*.part"):
            try:
                if _TEMP_RE.match(p.name) and p.is_file() and p.stat().st_mtime < since:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass
    return removed


def _describe_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _describe_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return diffs


def _clear_gallery(out: Path) -> None:
    """Remove what a gallery run writes (only our own names; other files are left alone)."""
    for p in out.iterdir():
        if p.name in _OWN_NAMES or _PART_RE.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def _check_out_dir(out: Path, identity: dict, overwrite: bool) -> None:
    """Refuse an existing gallery made with other settings, or a folder that is not a gallery."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    final, parts = _read_state(out)
    existing = [s for s in ([final] if final else []) + parts]
    if existing:
        for src in existing:
            old = {"model": src.get("model"), "layers": src.get("layer_names"), "settings": src.get("settings"), "format": src.get("format")}
            if old != identity:
                if overwrite:
                    _clear_gallery(out)
                    return
                diffs = _describe_diff(old, identity)
                raise SettingsMismatchError(
                    f"{out} already holds a gallery made with different settings ({'; '.join(diffs[:6])}). "
                    "Rerun with the original settings to resume, pass --overwrite (overwrite=True) to replace it, "
                    "or choose another output directory."
                )
        return
    foreign = [p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in _OWN_NAMES]
    if foreign and not overwrite:
        raise ValueError(
            f"{out} is not empty and holds no gallery manifest ({', '.join(sorted(foreign)[:5])}); "
            "choose an empty or new directory, or pass --overwrite to write into it anyway"
        )
