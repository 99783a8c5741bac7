"""What this machine is: the facts that change a default, a speed or a result, read in one place.

:func:`native_bf16` is the only capability question the package asks (``precision="auto"`` reads
it, and so do the tests). Nothing else decides on hardware: defaults are the same on every CPU, and
faster arithmetic is something a user asks for by name (``precision="bf16"`` or ``"auto"``).

The switch ``VISION_INTERP_ASSUME_BF16`` (``1``: report native bf16 as present, ``0``: as absent,
unset: detect) lets a test or a user take either branch on any machine; the report records when it
was set. :func:`environment_report` gathers the facts ``vision-interp doctor`` prints and results
JSONs / gallery manifests record, so two bug reports can be compared.
"""

from __future__ import annotations

import importlib.metadata
import locale
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["ASSUME_BF16_ENV", "cpu_capabilities", "native_bf16", "package_version", "chromium_path", "environment_report",
           "format_report"]

ASSUME_BF16_ENV = "VISION_INTERP_ASSUME_BF16"
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def _cpuinfo_flags() -> set[str] | None:
    """The x86 feature flags Linux reports (``/proc/cpuinfo``), or None where it cannot tell (macOS, Windows, ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def _mkldnn_bf16() -> bool | None:
    """oneDNN's own answer to "are there native bf16 kernels on this CPU" (None where torch cannot say)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def cpu_capabilities() -> dict[str, Any]:
    """The CPU facts that change a speed: torch's kernel level, oneDNN bf16, and the x86 flags.

    ``flags`` maps each of avx2, avx512f, avx512_bf16, amx_bf16, amx_tile, avx512_fp16 to True/False,
    or is None where the OS does not list CPU flags (then only ``mkldnn_bf16`` tells).
    """
    flags = _cpuinfo_flags()
    return {
        "machine": platform.machine(),
        "processor": _cpu_model_name(),
        "torch_cpu_capability": _torch_cpu_capability(),
        "mkldnn_bf16": _mkldnn_bf16(),
        "flags": None if flags is None else {f: f in flags for f in _CPU_FLAGS},
        "logical_cpus": os.cpu_count(),
    }


def _torch_cpu_capability() -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _assumed_bf16() -> bool | None:
    """The documented switch: ``VISION_INTERP_ASSUME_BF16=1``/``0`` overrides detection; unset means detect."""
    raw = os.environ.get(ASSUME_BF16_ENV, "").strip().lower()
    if raw in ("", "detect"):
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError(f"{ASSUME_BF16_ENV}={raw!r}: use 1 (assume native bf16), 0 (assume none) or leave it unset (detect)")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 autocast is fast on ``device``: CUDA, or a CPU with native bf16 oneDNN kernels
    (AVX512-BF16 or AMX). Without them, bf16 autocast on a CPU is far slower than fp32 (emulated).

    The one place that decides; ``VISION_INTERP_ASSUME_BF16`` overrides it (tests run both branches).
    ``device`` is a ``torch.device`` or a device string torch knows (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
    ``"mps"``, ...), checked before anything else; other kinds than CPU and CUDA report False.
    """
    kind = _device_type(device)
    assumed = _assumed_bf16()
    if assumed is not None:
        return assumed
    if kind == "cuda":
        return True
    if kind != "cpu":
        return False  # no native-bf16 rule is known for this kind: fp32 stays the safe choice
    return not _onednn_isa_capped() and bool(_mkldnn_bf16())  # the cap first: asking oneDNN fixes its ISA for the process


_DEVICE_EXAMPLES = "'cpu', 'cuda', 'cuda:0', 'mps' or a torch.device"


def _device_type(device: object) -> str:
    """The device kind of ``device`` (a str or torch.device), or an error naming ``device`` and the valid values."""
    from .errors import InputError, InputTypeError

    if isinstance(device, torch.device):
        return device.type
    if not isinstance(device, str):
        raise InputTypeError(f"device: expected {_DEVICE_EXAMPLES}, got {type(device).__name__} {device!r}")
    try:
        return torch.device(device).type
    except (RuntimeError, ValueError) as e:
        raise InputError(f"device: {device!r} is not a torch device; valid values are {_DEVICE_EXAMPLES}") from e


def _onednn_isa_capped() -> bool:
    """``ONEDNN_MAX_CPU_ISA`` set below AVX512_CORE_BF16 (e.g. AVX2): oneDNN then emulates bf16 even
    on a CPU that has it (how benchmarks/precision.py measures the no-native-bf16 case on such a CPU)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return bool(isa) and not any(tag in isa for tag in ("BF16", "AMX", "FP16", "AVX10", "ALL", "DEFAULT"))


def package_version() -> str:
    """``vision_interp.__version__`` when set, else the installed distribution's version."""
    import vision_interp

    v = getattr(vision_interp, "__version__", None)
    if v:
        return str(v)
    try:
        return importlib.metadata.version("vision_interp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def chromium_path() -> str | None:
    """The headless browser the browser tests and page checks use, or None when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _torch_build() -> dict[str, Any]:
    return {
        "version": torch.__version__,
        "git": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "debug": bool(getattr(torch.version, "debug", False)),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "openmp": bool(torch.backends.openmp.is_available()),
        "mkl": bool(torch.backends.mkl.is_available()),
    }


def _threads() -> dict[str, Any]:
    """Threads change float summation order (results differ in the last bits) and speed."""
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }


def _onednn() -> dict[str, Any]:
    return {"max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "isa_capped_below_bf16": _onednn_isa_capped()}


def _numerics() -> dict[str, Any]:
    """Global torch switches that change results: matmul precision, TF32, determinism, oneDNN."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
    }


def _cuda() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"available": False, "devices": []}
    return {"available": True, "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def environment_report(*, browser: bool = True) -> dict[str, Any]:
    """Everything that can make two runs of the same command differ, JSON-ready.

    ``native_bf16`` is what ``precision="auto"`` would pick on the CPU (``assume_bf16`` records the
    override when set). ``browser=False`` skips the Chromium look-up (results that need no browser).
    """
    if not isinstance(browser, bool):
        from .errors import InputTypeError

        raise InputTypeError(f"browser: expected True or False, got {type(browser).__name__} {browser!r}")
    report: dict[str, Any] = {
        "vision_interp": package_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _torch_build(),
        "threads": _threads(),
        "numerics": _numerics(),
        "cpu": cpu_capabilities(),
        "onednn": _onednn(),
        "native_bf16": native_bf16("cpu"),
        "assume_bf16": os.environ.get(ASSUME_BF16_ENV) or None,
        "cuda": _cuda(),
        "locale": _locale(),
        "timezone": time.tzname[0] if time.tzname else None,
    }
    if browser:
        report["chromium"] = chromium_path()
    return report


def _locale() -> str:
    try:
        return ".".join(filter(None, locale.getlocale()))
    except ValueError:
        return "unknown"


def _yes_no(v: Any) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def format_report(r: dict[str, Any]) -> str:
    """The report as aligned ``name: value`` lines (what ``vision-interp doctor`` prints)."""
    from .errors import InputError, InputTypeError

    if not isinstance(r, dict):
        raise InputTypeError(f"r: expected the dict environment_report() returns, got {type(r).__name__}")
    missing = [k for k in ("cpu", "torch", "threads", "numerics", "vision_interp", "python", "platform", "onednn",
                           "native_bf16", "cuda", "locale", "timezone") if k not in r]
    if missing:
        raise InputError(f"r: not a report from environment_report(): {', '.join(missing)} missing")
    cpu, tb, th, nm = r["cpu"], r["torch"], r["threads"], r["numerics"]
    flags = cpu["flags"]
    flag_text = "not listed by this OS" if flags is None else ", ".join(f"{k} {_yes_no(v)}" for k, v in flags.items())
    bf16 = _yes_no(r["native_bf16"]) + (f" (assumed: {ASSUME_BF16_ENV}={r['assume_bf16']})" if r.get("assume_bf16") else
                                         f" (oneDNN says {_yes_no(cpu['mkldnn_bf16'])})")
    rows = [
        ("vision_interp", r["vision_interp"]),
        ("python", f"{r['python']} on {r['platform']}"),
        ("torch", f"{tb['version']} (git {str(tb['git'])[:12]}, CUDA build {tb['cuda'] or 'none'}, mkldnn {_yes_no(tb['mkldnn'])}, "
                  f"openmp {_yes_no(tb['openmp'])}, mkl {_yes_no(tb['mkl'])})"),
        ("threads", f"torch {th['torch_threads']} (interop {th['torch_interop_threads']}), OMP_NUM_THREADS={th['OMP_NUM_THREADS'] or 'unset'}, "
                    f"logical CPUs {cpu['logical_cpus']}"),
        ("cpu", f"{cpu['processor']} ({cpu['machine']}), torch kernels {cpu['torch_cpu_capability'] or 'unknown'}"),
        ("cpu flags", flag_text),
        ("oneDNN ISA cap", r["onednn"]["max_cpu_isa"] or "none"),
        ("native bf16", bf16 + "; precision='auto' picks " + ("bf16" if r["native_bf16"] else "fp32") + " on the CPU"),
        ("numerics", ", ".join(f"{k}={v}" for k, v in nm.items())),
        ("cuda", ", ".join(r["cuda"]["devices"]) if r["cuda"]["available"] else "not available"),
        ("locale / tz", f"{r['locale'] or 'C'} / {r['timezone']}"),
    ]
    if "chromium" in r:
        rows.append(("chromium", r["chromium"] or "not found (browser tests skip; Debian packages chromium, chromium-driver)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

