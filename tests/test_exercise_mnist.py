"""End to end: ``vision-interp mnist-exercise --quick`` on the committed checkpoint, in a temp dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from vision_interp.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("mnist_exercise")
    rc = main(["mnist-exercise", "--out", str(out), "--quick", "--data-dir", str(data_dir), "--no-progress", "--seed", "0"])
    assert rc == 0
    return out


def _referenced_images(report_dir: Path) -> tuple[list[str], list[str]]:
    html_text = (report_dir / "report.html").read_text()
    md_text = (report_dir / "report.md").read_text()
    return re.findall(r"<img src='([^']+)'", html_text), re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_text)


def test_report_files_and_every_image_is_a_valid_png(report_dir):
    for name in ("report.html", "report.md", "results.json"):
        assert (report_dir / name).stat().st_size > 1000, name
    in_html, in_md = _referenced_images(report_dir)
    assert len(in_html) >= 10 and set(in_html) == set(in_md)
    for rel in in_html:
        p = report_dir / rel
        assert p.is_file(), rel
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"
    results = json.loads((report_dir / "results.json").read_text())
    assert {f["file"] for f in results["figures"]} == set(in_html)


def test_results_contain_measured_ablations_that_beat_random_channels(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    assert r["evaluation"]["accuracy"] > 0.98
    ab = r["ablations"]
    assert len(ab["per_class"]) == 10
    for pc in ab["per_class"]:
        assert len(pc["channels"]) == 3 and all(0 <= c < 16 for c in pc["channels"])
        assert pc["random_control"]["margin_drop"]["n"] == ab["draws"] >= 5
    s = ab["summary"]
    # the channels that attribution names must matter more for their digit than random channels
    assert s["mean_named_margin_drop"] > s["mean_random_margin_drop"] + 0.5
    assert s["classes_named_beats_random_margin"] >= 7
    assert "0" in ab["conv1_circuit"]


def test_findings_are_backed_by_numbers(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    fnds = r["findings"]
    sections = {f["section"] for f in fnds}
    assert {"evaluation", "filters", "featvis", "attribution", "circuits", "ablations"} <= sections
    for f in fnds:
        assert re.search(r"\d", f["text"]), f["text"]
    verdicts = [f["verdict"] for f in fnds if "verdict" in f]
    assert len(verdicts) >= 11 and set(verdicts) <= {"supported", "weakly supported", "refuted"}
    md = (report_dir / "report.md").read_text()
    assert all(f["text"] in md for f in fnds)
    assert r["filters"]["profiles"] and len(r["filters"]["profiles"]) == 8
    assert len(r["featvis"]["conv2"]["neuron_vs_top_patches_r"]) == 16


def test_cli_rejects_bad_arguments_before_work(tmp_path, capsys):
    assert main(["mnist-exercise", "--out", str(tmp_path / "x"), "--classes", "0,12", "--quick"]) == 2
    assert "digits 0..9" in capsys.readouterr().err
    assert main(["mnist-exercise", "--out", str(tmp_path / "x"), "--classes", "a"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(["mnist-exercise", "--out", str(tmp_path / "x"), "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "no MNIST CNN checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_is_regenerated_identically_from_results_json(report_dir, tmp_path):
    from vision_interp.exercises.report import write_report

    r = json.loads((report_dir / "results.json").read_text())
    r.pop("findings")
    write_report(r, tmp_path)
    assert (tmp_path / "report.md").read_text() == (report_dir / "report.md").read_text()
    assert (tmp_path / "report.html").read_text() == (report_dir / "report.html").read_text()
