"""CLI: ``vision-interp doctor``, the environment report (:mod:`vision_interp.environment`) for bug reports."""

from __future__ import annotations

import argparse
import json

from .cli_common import Formatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="print this machine's facts that change a default, a speed or a result (for bug reports)",
        description="Package version, torch version and build, threads, CPU capabilities (bf16, AMX, AVX512), what\n"
                    "precision='auto' would pick, torch's numeric switches, CUDA, locale and time zone, and whether\n"
                    "Chromium is found. Results JSONs and gallery manifests record the same facts ('environment').\n"
                    "VISION_INTERP_ASSUME_BF16=1/0 makes the package treat native bf16 as present/absent.",
        formatter_class=Formatter)
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of aligned lines")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .environment import environment_report, format_report

    report = environment_report()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
