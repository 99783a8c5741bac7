"""Static HTML for a gallery, written from its manifest alone (works offline from the file system).

Pages: ``index.html`` (model, layers, settings), ``layers/<slug>.html`` (a filterable grid of all
units) and ``units/<slug>/<channel>.html`` (visualizations, dataset examples, connections).
Every string that comes from a model or a user goes through :func:`esc`; links use relative
paths built from file-system-safe slugs, so the site can be moved or opened from a zip.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from .. import io as vio

__all__ = ["write_site", "esc"]

CSS = """\
:root { --fg: #1f2328; --muted: #59636e; --line: #d8dee4; --bg: #ffffff; --panel: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #24292f; color: #fff; padding: 10px 24px; display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
header a { color: #fff; text-decoration: none; }
header .crumbs a:hover { text-decoration: underline; }
header .crumbs span.sep { color: #8c959f; margin: 0 6px; }
header .brand { font-weight: 600; letter-spacing: .02em; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 26px; margin: 4px 0 4px; font-weight: 600; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); font-weight: 600; }
.sub { color: var(--muted); margin: 0 0 12px; }
a { color: var(--accent); }
table.kv { border-collapse: collapse; font-size: 14px; }
table.kv td, table.kv th { padding: 4px 14px 4px 0; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); }
table.kv th { color: var(--muted); font-weight: 500; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--panel); padding: 1px 4px; border-radius: 4px; }
img.px { image-rendering: pixelated; }
img { background: #eee; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--thumb, 120px), 1fr)); gap: 12px; }
.card { display: block; text-decoration: none; color: var(--fg); border: 1px solid var(--line); border-radius: 6px;
        padding: 6px; background: #fff; transition: box-shadow .1s; }
.card:hover { box-shadow: 0 2px 8px rgba(0,0,0,.15); border-color: #afb8c1; }
.card img { width: 100%; aspect-ratio: 1 / 1; display: block; border-radius: 3px; }
.card .name { font-size: 13px; margin-top: 4px; text-align: center; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); }
.filter { margin: 8px 0 16px; display: flex; gap: 10px; align-items: center; }
.filter input { font-size: 15px; padding: 5px 9px; width: 220px; border: 1px solid var(--line); border-radius: 6px; }
.filter .count { color: var(--muted); font-size: 13px; }
.hero { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.hero figure { margin: 0; }
.hero .big { width: 320px; height: 320px; border-radius: 6px; border: 1px solid var(--line); }
figure.vis { margin: 0; text-align: center; }
figure.vis figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; font-variant-numeric: tabular-nums; }
.row { display: flex; gap: 12px; flex-wrap: wrap; }
.row .med { width: 150px; height: 150px; border-radius: 4px; border: 1px solid var(--line); }
.row .small { width: 96px; height: 96px; border-radius: 3px; border: 1px solid var(--line); }
.conns { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 18px; }
.conns h3 { font-size: 14px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
.conn { display: flex; align-items: center; gap: 8px; font-size: 13px; margin: 3px 0; font-variant-numeric: tabular-nums; }
.conn .unit { width: 110px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.conn .bar { height: 8px; border-radius: 2px; }
.conn .bar.pos { background: #d1242f; } .conn .bar.neg { background: #0969da; }
.conn img { width: 28px; height: 28px; border: 1px solid var(--line); }
.pager { display: flex; justify-content: space-between; margin-top: 36px; font-size: 14px; }
.note { color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 16px; }
"""

FILTER_JS = """\
(function () {
  var input = document.getElementById('unit-filter'), count = document.getElementById('unit-count');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.grid .card'));
  function wanted(q) {  // "5", "1,4,9", "10-20" (numbers only)
    var parts = q.split(','), sets = [];
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i].trim(); if (!p) continue;
      var m = /^(\\d+)\\s*-\\s*(\\d+)$/.exec(p);
      if (m) sets.push([+m[1], +m[2]]); else if (/^\\d+$/.test(p)) sets.push([+p, +p]); else return null;
    }
    return sets;
  }
  function apply() {
    var q = input.value.trim(), sets = q ? wanted(q) : [], shown = 0;
    input.style.borderColor = sets === null ? '#d1242f' : '';
    cards.forEach(function (c) {
      var n = +c.getAttribute('data-channel'), ok = !q || sets === null;
      if (sets) for (var i = 0; i < sets.length && !ok; i++) ok = n >= sets[i][0] && n <= sets[i][1];
      c.style.display = ok ? '' : 'none'; if (ok) shown++;
    });
    count.textContent = shown + ' of ' + cards.length + ' units';
  }
  input.addEventListener('input', apply); apply();
})();
"""


def esc(value: Any) -> str:
    """HTML-escape any value (text and attribute values, quotes included)."""
    return html.escape(str(value), quote=True)


def _url(path: str) -> str:
    """A relative URL from a manifest path (slugs are safe; quote anyway for odd dataset names)."""
    return quote(path, safe="/._-")


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _page(title: str, crumbs: Iterable[tuple[str, str | None]], body: str, root: str, script: str = "") -> str:
    crumb_html = '<span class="sep">/</span>'.join(
        f'<a href="{esc(href)}">{esc(text)}</a>' if href else f"<span>{esc(text)}</span>" for text, href in crumbs
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n"
        f'<link rel="stylesheet" href="{root}static/gallery.css">\n</head>\n<body>\n'
        f'<header><a class="brand" href="{root}index.html">vision_interp gallery</a><nav class="crumbs">{crumb_html}</nav></header>\n'
        f"<main>\n{body}\n</main>\n"
        '<footer>Generated by <code>vision-interp gallery</code>; every unit is listed in '
        f'<a href="{root}manifest.json">manifest.json</a>.</footer>\n'
        + (f"<script>\n{script}</script>\n" if script else "")
        + "</body>\n</html>\n"
    )


def _is_small(manifest: dict) -> bool:
    """Small inputs (MNIST) are shown enlarged with crisp pixels."""
    size = manifest["settings"].get("size") or 0
    return size < 96


def _img(src: str, root: str, alt: str, cls: str, px: bool, title: str | None = None) -> str:
    classes = f"{cls} px" if px else cls
    t = f' title="{esc(title)}"' if title else ""
    return f'<img class="{classes}" src="{root}{_url(src)}" alt="{esc(alt)}"{t}>'


def _unit_title(entry: dict) -> str:
    return entry["unit"] + (f" · class {entry['label']}" if entry.get("label") else "")


# --- index --------------------------------------------------------------------------------------


def _index(manifest: dict) -> str:
    m, s = manifest["model"], manifest["settings"]
    total = sum(l["units"] for l in manifest["layers"])
    rows = "\n".join(
        f'<tr><td><a href="{_url(l["page"])}">{esc(l["name"])}</a></td><td><code>{esc(l["path"])}</code></td>'
        f'<td>{esc(" x ".join(map(str, l["shape"])))}</td><td>{l["units"]}</td></tr>'
        for l in manifest["layers"]
    )
    first = manifest["units"]
    thumbs = []
    for l in manifest["layers"]:
        entry = next((e for e in first.values() if e["layer"] == l["name"]), None)
        if entry:
            thumbs.append(
                f'<a class="card" href="{_url(l["page"])}">{_img(entry["files"]["main"], "", l["name"], "", _is_small(manifest))}'
                f'<div class="name">{esc(l["name"])} <span class="label">· {l["units"]} units</span></div></a>'
            )
    settings_rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in s.items())
    body = f"""
<h1>{esc(m["name"])}</h1>
<p class="sub">{esc(m["class"])} · input {esc(" x ".join(map(str, m["input_shape"])) or "?")} · {len(manifest["layers"])} layers · {total} units ·
weights sha256 <code>{esc(m["weights_sha256"][:16])}</code></p>
<h2>Layers</h2>
<div class="grid" style="--thumb: 150px">
{"".join(thumbs)}
</div>
<table class="kv" style="margin-top:16px">
<tr><th>layer</th><th>module</th><th>output shape</th><th>units</th></tr>
{rows}
</table>
<h2>Settings</h2>
<table class="kv">
{settings_rows}
</table>
<p class="note">Each unit is rendered by feature visualization (maximising {_objective_phrase(s.get("objective"))}), in fixed chunks of
{esc(s["batch"])} units with seeds derived from the base seed, so sharded or resumed runs give identical pictures.</p>
"""
    return _page(f"{m['name']} gallery", [(m["name"], None)], body, "")


def _objective_phrase(objective: str | None) -> str:
    """How the settings' objective reads in prose (None = featvis's per-model default)."""
    if objective == "channel":
        return "the channel's mean activation"
    if objective == "neuron":
        return "the channel's centre neuron"
    return "featvis's default objective for the model: the centre neuron for small inputs, the channel mean for large ones"


# --- layer pages --------------------------------------------------------------------------------


def _layer_page(manifest: dict, layer: dict) -> str:
    m = manifest["model"]
    px = _is_small(manifest)
    entries = [e for e in manifest["units"].values() if e["layer"] == layer["name"]]
    cards = "\n".join(
        f'<a class="card" data-channel="{e["channel"]}" href="../{_url(e["files"]["page"])}">'
        f'{_img(e["files"]["main"], "../", e["unit"], "", px)}'
        f'<div class="name">{e["channel"]}' + (f' <span class="label">{esc(e["label"])}</span>' if e.get("label") not in (None, str(e["channel"])) else "") + "</div></a>"
        for e in entries
    )
    rf = layer.get("receptive_field")
    rf_note = f" · receptive field {rf['height']}x{rf['width']} px" if rf else ""
    body = f"""
<h1>{esc(layer["name"])}</h1>
<p class="sub">{esc(m["name"])} · module <code>{esc(layer["path"])}</code> · output {esc(" x ".join(map(str, layer["shape"])))} · {layer["units"]} units{rf_note}</p>
<div class="filter"><label for="unit-filter">Filter units</label>
<input id="unit-filter" type="text" inputmode="numeric" placeholder="e.g. 5 or 0-7 or 1,4,9" autocomplete="off">
<span class="count" id="unit-count"></span></div>
<div class="grid">
{cards}
</div>
"""
    return _page(f"{layer['name']} · {m['name']}", [(m["name"], "../index.html"), (layer["name"], None)], body, "../", FILTER_JS)


# --- unit pages ---------------------------------------------------------------------------------


def _connections_html(entry: dict, manifest: dict, px: bool) -> str:
    conns = entry.get("connections")
    if not conns:
        return ""
    units = manifest["units"]
    blocks = []
    for direction, title in (("inputs", "Strongest inputs"), ("outputs", "Strongest outputs")):
        d = conns.get(direction)
        if not d:
            continue
        for sign, cls in (("excitatory", "pos"), ("inhibitory", "neg")):
            items = d.get(sign) or []
            if not items:
                continue
            top = max(abs(float(s)) for _, s in items) or 1.0
            lines = []
            for unit, strength in items:
                target = units.get(unit)
                thumb = _img(target["files"]["main"], "../../", unit, "", px) if target else ""
                name = (f'<a class="unit" href="../../{_url(target["files"]["page"])}">{esc(unit)}</a>' if target
                        else f'<span class="unit" title="not in this gallery">{esc(unit)}</span>')
                width = max(2, int(round(120 * abs(float(strength)) / top)))
                lines.append(f'<div class="conn">{thumb}{name}<span class="bar {cls}" style="width:{width}px"></span>'
                             f"<span>{_fmt(float(strength))}</span></div>")
            blocks.append(f"<div><h3>{title} · {sign}</h3>{''.join(lines)}</div>")
    if not blocks:
        return ""
    return ('<h2>Connections</h2>\n<p class="note">Weight-based connection strengths from the circuit inspectors '
            "(red excites, blue inhibits); linked units are in this gallery.</p>\n"
            f'<div class="conns">{"".join(blocks)}</div>')


def _unit_page(manifest: dict, entry: dict, prev_e: dict | None, next_e: dict | None) -> str:
    m = manifest["model"]
    px = _is_small(manifest)
    layer = next(l for l in manifest["layers"] if l["name"] == entry["layer"])
    files, values, acts = entry["files"], entry["values"], entry.get("activations") or {}
    r = "../../"
    title = _unit_title(entry)
    hero = [f'<figure class="vis">{_img(files["main"], r, title + " visualization", "big", px)}'
            f'<figcaption>maximises {esc(entry["unit"])} · activation {_fmt(acts.get("main"))}</figcaption></figure>']
    if files.get("negative"):
        hero.append(f'<figure class="vis">{_img(files["negative"], r, title + " negative", "big", px)}'
                    f'<figcaption>negative (minimises) · activation {_fmt(acts.get("negative"))}</figcaption></figure>')
    sections = [f'<div class="hero">{"".join(hero)}</div>']
    if files.get("diverse"):
        figs = "".join(
            f'<figure class="vis">{_img(f, r, f"{title} diverse {d}", "med", px)}<figcaption>activation {_fmt(a)}</figcaption></figure>'
            for d, (f, a) in enumerate(zip(files["diverse"], acts.get("diverse") or [None] * len(files["diverse"])))
        )
        sections.append(f'<h2>Diverse visualizations</h2>\n<p class="note">Rendered together with a diversity objective '
                        f'(Gram-matrix dissimilarity), showing different things the unit responds to.</p>\n<div class="row">{figs}</div>')
    examples = entry.get("examples")
    if examples:
        figs = "".join(
            f'<figure class="vis">{_img(e["image"], r, "dataset example " + str(e["index"]), "small", px, title="test image " + str(e["index"]))}'
            f'<figcaption>{_fmt(e["value"])}' + (f' · “{esc(e["label"])}”' if e.get("label") is not None else "") + "</figcaption></figure>"
            for e in examples
        )
        where = " (its maximum over positions)" if any(e.get("position") for e in examples) else ""
        sections.append(f'<h2>Top-activating dataset examples</h2>\n<p class="note">The {len(examples)} dataset images with the highest '
                        f"activation of this unit{where}; numbers are activations, quotes the true labels.</p>\n<div class=\"row\">{figs}</div>")
        patches = [e for e in examples if e.get("patch")]
        if patches:
            figs = "".join(
                f'<figure class="vis">{_img(e["patch"], r, "receptive-field patch " + str(e["index"]), "small", px)}'
                f'<figcaption>{_fmt(e["value"])} @ {esc(e["position"][0])},{esc(e["position"][1])}</figcaption></figure>'
                for e in patches
            )
            rf = layer.get("receptive_field") or {}
            sections.append(f'<h2>Receptive-field patches</h2>\n<p class="note">The {esc(rf.get("height", "?"))}x{esc(rf.get("width", "?"))} px '
                            f"input region seen by the most active position in each example (zero-padded at borders).</p>\n<div class=\"row\">{figs}</div>")
    sections.append(_connections_html(entry, manifest, px))
    nav_prev = f'<a href="../../{_url(prev_e["files"]["page"])}">← {esc(prev_e["unit"])}</a>' if prev_e else "<span></span>"
    nav_next = f'<a href="../../{_url(next_e["files"]["page"])}">{esc(next_e["unit"])} →</a>' if next_e else "<span></span>"
    objective = f'objective {_fmt(values.get("main"))}'
    body = f"""
<h1>{esc(title)}</h1>
<p class="sub">{esc(m["name"])} · layer <a href="../../{_url(layer["page"])}">{esc(layer["name"])}</a> · channel {entry["channel"]} of {layer["units"]} · {objective}</p>
{"".join(s + chr(10) for s in sections if s)}
<div class="pager">{nav_prev}<a href="../../{_url(layer["page"])}">all units of {esc(layer["name"])}</a>{nav_next}</div>
"""
    crumbs = [(m["name"], "../../index.html"), (layer["name"], f"../../{_url(layer['page'])}"), (str(entry["channel"]), None)]
    return _page(f"{title} · {m['name']}", crumbs, body, r)


def write_site(out_dir: str | Path, manifest: dict) -> list[Path]:
    """Write every page of the gallery (atomically) from ``manifest``; returns the paths written."""
    out = Path(out_dir)
    written = [vio.atomic_write_text(out / "static" / "gallery.css", CSS), vio.atomic_write_text(out / "index.html", _index(manifest))]
    for layer in manifest["layers"]:
        written.append(vio.atomic_write_text(out / layer["page"], _layer_page(manifest, layer)))
        entries = [e for e in manifest["units"].values() if e["layer"] == layer["name"]]
        for k, e in enumerate(entries):
            prev_e = entries[k - 1] if k > 0 else None
            next_e = entries[k + 1] if k + 1 < len(entries) else None
            written.append(vio.atomic_write_text(out / e["files"]["page"], _unit_page(manifest, e, prev_e, next_e)))
    return written

