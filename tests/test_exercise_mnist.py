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
    assert len(in_html) >= 12 and set(in_html) == set(in_md)
    for rel in in_html:
        p = report_dir / rel
        assert p.is_file(), rel
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"
    results = json.loads((report_dir / "results.json").read_text())
    assert {f["file"] for f in results["figures"]} == set(in_html)


def test_every_digit_has_a_causally_tested_circuit(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    assert r["evaluation"]["accuracy"] > 0.98
    digits = r["circuits"]["digits"]
    assert [d["digit"] for d in digits] == list(range(10))
    for d in digits:
        assert len(d["clauses"]) == 3
        named = {k["channel"] for k in d["clauses"]}
        for c in d["clauses"]:
            assert c["controls"]["n"] >= 100 and set(c["controls"]["excluded_channels"]) == named
            if c["mean_ablation"]["specificity"] < 1:
                assert c["verdict"] != "supported"
    md = (report_dir / "report.md").read_text()
    for d in range(10):
        assert f"**A {d} is:**" in md
    assert md.count("Verdict rule") == 1


def test_labels_file_and_model_identity(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    labels = json.loads((report_dir / "labels.json").read_text())
    assert {f"conv2:{c}" for c in range(16)} <= set(labels) and "conv1:0" in labels and "fc:9" in labels
    assert all(v["name"] for v in labels.values())
    assert r["model"]["fingerprint"][:16] in (report_dir / "report.md").read_text()
    for u in r["conv1"]["units"]:
        assert u["exact_optimum_value"] >= u["best_test_value"]
    assert r["deep_dive"]["r"] >= r["deep_dive"]["threshold"]


def test_figures_are_large_enough(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    for f in r["figures"]:
        with Image.open(report_dir / f["file"]) as im:
            assert max(im.size) >= 560, (f["file"], im.size)


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
    write_report(r, tmp_path)
    assert (tmp_path / "report.md").read_text() == (report_dir / "report.md").read_text()
    assert (tmp_path / "report.html").read_text() == (report_dir / "report.html").read_text()


def test_report_leads_with_the_mechanism_figure_then_rule_then_table(report_dir):
    r = json.loads((report_dir / "results.json").read_text())
    html_text = (report_dir / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html_text)
    assert images[0] == "figures/mechanism.png"  # the first picture under the title
    fig, rule, table, details = (html_text.index("figures/mechanism.png"), html_text.index("Verdict rule"),
                                 html_text.index("<table>"), html_text.index("<details>"))
    assert fig < rule < table < details < html_text.index("<b>A 0 is:</b>") < html_text.index("</details>")
    first_table = html_text[table:html_text.index("</table>", table)]
    n_clauses = sum(len(d["clauses"]) for d in r["circuits"]["digits"])
    assert first_table.count("<tr>") == 1 + n_clauses
    for header in ("digit", "clause", "where", "margin", "controls", "specificity", "verdict"):
        assert header in first_table
    c = r["circuits"]["digits"][0]["clauses"][0]
    assert f"{-c['mean_ablation']['margin_drop']:+.2f}" in first_table and c["region"] in first_table
    with Image.open(report_dir / "figures" / "mechanism.png") as im:
        assert im.width >= 800


def test_report_html_passes_only_the_fixed_details_fold():
    from vision_interp.exercises.report import render_html

    out = render_html("<details><summary>numbers</summary>\n<script>x</script>\n<details><summary><b>x</b></summary>\n</details>")
    assert "<details><summary>numbers</summary>" in out and "</details>" in out
    assert "<script>" not in out and "&lt;script&gt;" in out and "<b>x</b>" not in out


def test_report_links_resolve_from_wherever_the_report_is_written(report_dir, tmp_path):
    """The cited pages (gallery, model card, per-digit graphs) are linked relative to the output folder, so
    `make demo`'s out/mnist_exercise links work as the committed report's do; a page that is not on this
    machine is named by the command that builds it, never a dead link."""
    from vision_interp.exercises.report import COMMITTED_LINKS, render_markdown, report_links

    committed = Path(__file__).resolve().parents[1] / "galleries" / "mnist_exercise"
    assert report_links(committed) == COMMITTED_LINKS
    deep = tmp_path / "a" / "b"
    links = report_links(deep)
    for key, rel in links.items():
        assert rel is not None and (deep / rel).resolve().is_file(), key
    for rel in re.findall(r"\]\(([^)#]+\.(?:html|md))\)", (report_dir / "report.md").read_text()):
        if not rel.startswith("figures/"):
            assert (report_dir / rel).resolve().is_file(), rel
    r = json.loads((report_dir / "results.json").read_text())
    md = render_markdown(r, {"gallery": None, "card": None, "graphs": None})
    assert "](../" not in md and "`vision-interp gallery --model mnist_cnn`" in md
