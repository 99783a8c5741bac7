"""Static HTML for a gallery, written from its manifest alone (works offline from the file system).

Pages, like OpenAI Microscope's: ``index.html`` (model and checkpoint hash, links, layers,
settings), ``layers/<slug>.html`` (every unit's visualization beside its top dataset examples,
label and activation range; filter by unit number or label text) and
``units/<slug>/<channel>.html`` (visualizations, activation histogram, class histogram of the top
activations, top and bottom examples, the unit's weights, connections aggregated per connected
unit, label and note). Charts are inline SVG; the only scripts are the layer filter and the
arrow-key pager, so every page reads without JavaScript too.

Every string that comes from a model or a user goes through :func:`esc`; links use relative
paths built from file-system-safe slugs, so the site can be moved or opened from a zip.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from .. import io as vio

__all__ = ["write_site", "esc", "unit_label"]

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
a:focus-visible, input:focus-visible { outline: 3px solid #fb8f44; outline-offset: 2px; }
.skip { position: absolute; left: -999px; top: 0; background: #fff; color: var(--accent); padding: 6px 10px; }
.skip:focus { left: 8px; z-index: 10; }
main { max-width: 1200px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 26px; margin: 4px 0 4px; font-weight: 600; overflow-wrap: anywhere; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); font-weight: 600; }
h3 { font-size: 14px; margin: 12px 0 6px; color: var(--muted); font-weight: 600; }
.sub { color: var(--muted); margin: 0 0 12px; overflow-wrap: anywhere; }
a { color: var(--accent); }
table.kv { border-collapse: collapse; font-size: 14px; }
table.kv td, table.kv th { padding: 4px 14px 4px 0; text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
table.kv th { color: var(--muted); font-weight: 500; white-space: nowrap; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--panel); padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
img.px { image-rendering: pixelated; }
img { background: #eee; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--thumb, 150px), 1fr)); gap: 12px; }
.units { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 12px; }
.card { display: block; text-decoration: none; color: var(--fg); border: 1px solid var(--line); border-radius: 6px;
        padding: 6px; background: #fff; transition: box-shadow .1s; }
.card:hover, .card:focus-visible { box-shadow: 0 2px 8px rgba(0,0,0,.18); border-color: #afb8c1; }
.card img.vis { width: 100%; aspect-ratio: 1 / 1; display: block; border-radius: 3px; }
.ucard { display: grid; grid-template-columns: 112px 1fr; gap: 8px; align-items: start; }
.ucard img.vis { width: 112px; height: 112px; }
.ucard .ex { display: grid; grid-template-columns: repeat(2, 1fr); gap: 3px; }
.ucard .ex img { width: 100%; aspect-ratio: 1 / 1; display: block; border-radius: 2px; border: 1px solid #8c959f; }
.ucard .meta { grid-column: 1 / -1; font-size: 13px; display: flex; justify-content: space-between; gap: 8px; font-variant-numeric: tabular-nums; }
.ucard { min-width: 0; }  /* a long label must not widen the grid track */
.ucard .meta > span:first-child { min-width: 0; flex: 1 1 auto; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ucard .meta .label { color: var(--fg); font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ucard .meta .range { color: var(--muted); white-space: nowrap; }
.card .name { font-size: 13px; margin-top: 4px; text-align: center; font-variant-numeric: tabular-nums; }
.card .label { color: var(--muted); }
.filter { margin: 8px 0 16px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.filter input { font-size: 15px; padding: 5px 9px; width: 330px; border: 1px solid var(--line); border-radius: 6px; }
.filter .count { color: var(--muted); font-size: 13px; }
.hero { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.hero figure { margin: 0; }
.hero .big { width: 280px; height: 280px; border-radius: 6px; border: 1px solid var(--line); }
.labelbox { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; max-width: 560px; }
.labelbox .lname { font-weight: 600; font-size: 16px; }
figure.vis { margin: 0; text-align: center; }
figure.vis figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; font-variant-numeric: tabular-nums; }
.row { display: flex; gap: 12px; flex-wrap: wrap; }
.row .med { width: 150px; height: 150px; border-radius: 4px; border: 1px solid var(--line); }
.row .small { width: 96px; height: 96px; border-radius: 3px; border: 1px solid var(--line); }
.charts { display: flex; gap: 32px; flex-wrap: wrap; }
svg text { font: 11px -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; fill: var(--muted); }
.weights img { width: 100%; max-width: 360px; height: auto; image-rendering: pixelated; border: 1px solid var(--line); }
table.conns { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; margin-bottom: 8px; }
table.conns th, table.conns td { padding: 3px 10px 3px 0; text-align: right; border-bottom: 1px solid var(--line); vertical-align: middle; }
table.conns th:first-child, table.conns td:first-child { text-align: left; }
table.conns img { width: 32px; height: 32px; border: 1px solid var(--line); vertical-align: middle; }
table.conns .pos { color: #b3261e; } table.conns .neg { color: #0550ae; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 24px; }
.pager { display: flex; justify-content: space-between; margin-top: 36px; font-size: 14px; }
.note { color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 16px; }
"""

FILTER_JS = """\
(function () {
  var input = document.getElementById('unit-filter'), count = document.getElementById('unit-count');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.units .card'));
  function numbers(q) {  // "5", "1,4,9", "10-20": unit numbers; anything else is label text
    var parts = q.split(','), sets = [];
    for (var i = 0; i < parts.length; i++) {
      var p = parts[i].trim(); if (!p) continue;
      var m = /^(\\d+)\\s*-\\s*(\\d+)$/.exec(p);
      if (m) sets.push([+m[1], +m[2]]); else if (/^\\d+$/.test(p)) sets.push([+p, +p]); else return null;
    }
    return sets;
  }
  function apply() {
    var q = input.value.trim(), sets = q ? numbers(q) : [], text = q.toLowerCase(), shown = 0;
    cards.forEach(function (c) {
      var ok = !q;
      if (q && sets) { var n = +c.getAttribute('data-channel'); for (var i = 0; i < sets.length && !ok; i++) ok = n >= sets[i][0] && n <= sets[i][1]; }
      else if (q) ok = (c.getAttribute('data-label') || '').toLowerCase().indexOf(text) >= 0;
      c.style.display = ok ? '' : 'none'; if (ok) shown++;
    });
    count.textContent = shown + ' of ' + cards.length + ' units';
  }
  input.addEventListener('input', apply); apply();
})();
"""

PAGER_JS = """\
document.addEventListener('keydown', function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey || /input|textarea/i.test(e.target.tagName)) return;
  var a = document.getElementById(e.key === 'ArrowLeft' ? 'prev' : e.key === 'ArrowRight' ? 'next' : '');
  if (a) { window.location.href = a.href; }
});
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
        '<a class="skip" href="#content">Skip to content</a>\n'
        f'<header><a class="brand" href="{root}index.html">vision_interp gallery</a><nav class="crumbs">{crumb_html}</nav></header>\n'
        f'<main id="content">\n{body}\n</main>\n'
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
    return f'<img class="{classes.strip()}" src="{root}{_url(src)}" alt="{esc(alt)}"{t}>'


def unit_label(manifest: dict, entry: dict) -> dict:
    """{"name", "note"} of a unit: the labels file's entry, else the class name of a logit unit."""
    given = (manifest.get("labels") or {}).get(entry["unit"]) or {}
    name = given.get("name") or (f"class {entry['label']}" if entry.get("label") else None)
    return {"name": name, "note": given.get("note")}


def _unit_title(manifest: dict, entry: dict) -> str:
    name = unit_label(manifest, entry)["name"]
    return entry["unit"] + (f" · {name}" if name else "")


def _examples(entry: dict, kind: str = "top") -> list[dict]:
    ex = entry.get("examples")
    if isinstance(ex, dict):
        return ex.get(kind) or []
    return []


# --- index --------------------------------------------------------------------------------------


def _settings_rows(s: dict) -> str:
    rows = []
    for k, v in s.items():
        shown = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
        rows.append(f"<tr><th>{esc(k)}</th><td><code>{esc(shown)}</code></td></tr>")
    return "\n".join(rows)


def _index(manifest: dict) -> str:
    m, s = manifest["model"], manifest["settings"]
    total = sum(l["units"] for l in manifest["layers"])
    rows = "\n".join(
        f'<tr><td><a href="{_url(l["page"])}">{esc(l["name"])}</a></td><td><code>{esc(l["path"])}</code></td>'
        f'<td>{esc(" x ".join(map(str, l["shape"])))}</td><td>{l["units"]}</td></tr>'
        for l in manifest["layers"]
    )
    units = manifest["units"]
    thumbs = []
    for l in manifest["layers"]:
        entries = [e for e in units.values() if e["layer"] == l["name"]]
        if not entries:
            continue
        # the layer's most strongly activated visualization represents it (not simply unit 0)
        entry = max(entries, key=lambda e: ((e.get("activations") or {}).get("main") or 0.0, -e["channel"]))
        thumbs.append(
            f'<a class="card" href="{_url(l["page"])}">{_img(entry["files"]["main"], "", l["name"] + " (" + entry["unit"] + ")", "vis", _is_small(manifest))}'
            f'<div class="name">{esc(l["name"])} <span class="label">· {l["units"]} units</span></div></a>'
        )
    ck = m.get("checkpoint_sha256")
    facts = [f'<tr><th>model</th><td>{esc(m["name"])} (<code>{esc(m["class"])}</code>), input {esc(" x ".join(map(str, m["input_shape"])) or "?")}</td></tr>',
             f"<tr><th>checkpoint sha256</th><td><code>{esc(ck) if ck else 'not recorded (no checkpoint file given)'}</code></td></tr>",
             f'<tr><th>weights fingerprint</th><td><code>{esc(m["weights_sha256"])}</code> (sha256 over the state dict)</td></tr>']
    ds = manifest.get("dataset")
    if ds:
        facts.append(f"<tr><th>dataset</th><td>{esc(ds['name'])}: {ds['size']} images{', labelled' if ds.get('labelled') else ''}</td></tr>")
    labels = manifest.get("labels") or {}
    facts.append(f"<tr><th>labelled units</th><td>{len(labels)} of {total}</td></tr>")
    for title, href in manifest.get("links") or []:
        facts.append(f'<tr><th>see also</th><td><a href="{esc(href)}">{esc(title)}</a></td></tr>')
    body = f"""
<h1>{esc(m["name"])}</h1>
<p class="sub">{len(manifest["layers"])} layers · {total} units</p>
<table class="kv">
{chr(10).join(facts)}
</table>
<h2>Layers</h2>
<div class="grid" style="--thumb: 170px">
{"".join(thumbs)}
</div>
<table class="kv" style="margin-top:16px">
<tr><th>layer</th><th>module</th><th>output shape</th><th>units</th></tr>
{rows}
</table>
<h2>Settings</h2>
<table class="kv">
{_settings_rows(s)}
</table>
<p class="note">Each unit is rendered by feature visualization (maximising {_objective_phrase(s.get("objective"))}), in fixed chunks of
{esc(s["batch"])} units with seeds derived from the base seed, so sharded, resumed or Ray-executed runs give identical pictures.
Every file is listed with its sha256 in manifest.json.</p>
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


def _layer_card(manifest: dict, e: dict, px: bool) -> str:
    lab = unit_label(manifest, e)
    search = " ".join(t for t in (str(e["channel"]), e["unit"], lab["name"] or "", lab["note"] or "") if t)
    crops = [x.get("patch") or x["image"] for x in _examples(e, "top")[:4]]
    ex_html = "".join(_img(c, "../", f"top example {k + 1} of {e['unit']}", "", px) for k, c in enumerate(crops))
    rng = e.get("range")
    range_html = f'<span class="range" title="activation range over the dataset">{_fmt(rng[0])} … {_fmt(rng[1])}</span>' if rng else ""
    label_html = f'<span class="label">{esc(lab["name"])}</span>' if lab["name"] else '<span class="label"></span>'
    return (f'<a class="card ucard" data-channel="{e["channel"]}" data-label="{esc(search)}" href="../{_url(e["files"]["page"])}">'
            f'{_img(e["files"]["main"], "../", e["unit"] + " visualization", "vis", px)}'
            f'<div class="ex">{ex_html}</div>'
            f'<div class="meta"><span>{e["channel"]} {label_html}</span>{range_html}</div></a>')


def _layer_page(manifest: dict, layer: dict) -> str:
    m = manifest["model"]
    px = _is_small(manifest)
    entries = [e for e in manifest["units"].values() if e["layer"] == layer["name"]]
    live = [e for e in entries if not e.get("dead")]  # a unit never active on the dataset is listed apart
    dead = [e for e in entries if e.get("dead")]
    cards = "\n".join(_layer_card(manifest, e, px) for e in live)
    dead_section = (f'<h2>Dead units ({len(dead)})</h2>\n<p class="note">Never active on the dataset: nothing to show '
                    'but the optimised picture.</p>\n<div class="units">\n'
                    + "\n".join(_layer_card(manifest, e, px) for e in dead) + "\n</div>\n") if dead else ""
    rf = layer.get("receptive_field")
    whole = bool(rf and rf.get("whole_image"))
    rf_note = (f" · examples are whole images ({esc(rf.get('reason', ''))})" if whole else
               f" · receptive field {rf['height']}x{rf['width']} px" if rf else "")
    has_examples = any(_examples(e) for e in entries)
    explain = ("Each card: the unit's feature visualization, its four top dataset examples "
               + ("(receptive-field crops of the most active position), " if rf and not whole else "")
               + "its label, and its activation range over the dataset (lowest … highest).") if has_examples else \
        "Each card: the unit's feature visualization and its label (no dataset examples in this gallery)."
    body = f"""
<h1>{esc(layer["name"])}</h1>
<p class="sub">{esc(m["name"])} · module <code>{esc(layer["path"])}</code> · output {esc(" x ".join(map(str, layer["shape"])))} · {layer["units"]} units{rf_note}</p>
<p class="note">{explain}</p>
<div class="filter"><label for="unit-filter">Filter units</label>
<input id="unit-filter" type="text" placeholder="unit numbers (5, 0-7, 1,4,9) or label text" autocomplete="off">
<span class="count" id="unit-count" aria-live="polite"></span></div>
<div class="units">
{cards}
</div>
{dead_section}"""
    return _page(f"{layer['name']} · {m['name']}", [(m["name"], "../index.html"), (layer["name"], None)], body, "../", FILTER_JS)


# --- unit pages ---------------------------------------------------------------------------------


def _histogram_svg(hist: dict, title: str) -> str:
    counts = hist["counts"]
    w, h, pad = 360, 120, 18
    top = max(counts) or 1
    bw = (w - 2) / len(counts)
    bars = "".join(
        f'<rect x="{1 + k * bw:.1f}" y="{h - pad - (h - 2 * pad) * c / top:.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{(h - 2 * pad) * c / top:.1f}" fill="#57606a"><title>{c}</title></rect>'
        for k, c in enumerate(counts)
    )
    return (f'<figure class="vis"><svg role="img" aria-label="{esc(title)}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">'
            f'<text x="0" y="11">{esc(top)} images</text>{bars}'
            f'<line x1="0" y1="{h - pad}" x2="{w}" y2="{h - pad}" stroke="#8c959f"/>'
            f'<text x="0" y="{h - 3}">{esc(_fmt(hist["min"]))}</text><text x="{w}" y="{h - 3}" text-anchor="end">{esc(_fmt(hist["max"]))}</text>'
            f'</svg><figcaption>{esc(title)}</figcaption></figure>')


def _class_svg(ch: dict) -> str:
    items = ch["counts"][:10]
    w, row = 360, 16
    h = row * len(items) + 4
    top = max((c for _, c in items), default=1) or 1
    rows = "".join(
        f'<text x="0" y="{4 + k * row + 11}">{esc(str(name)[:18])}</text>'
        f'<rect x="110" y="{4 + k * row + 2}" width="{200 * c / top:.1f}" height="{row - 5}" fill="#d1242f"><title>{c}</title></rect>'
        f'<text x="{114 + 200 * c / top:.1f}" y="{4 + k * row + 11}">{c}</text>'
        for k, (name, c) in enumerate(items)
    )
    more = f", {len(ch['counts']) - 10} more classes" if len(ch["counts"]) > 10 else ""
    title = f"true classes of the top {ch['of_top']} images{more}"
    return (f'<figure class="vis"><svg role="img" aria-label="{esc(title)}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">{rows}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


def _example_row(examples: list[dict], r: str, px: bool, what: str) -> str:
    figs = []
    for e in examples:
        pic = e.get("patch") or e["image"]
        cap = _fmt(e["value"]) + (f' · “{esc(e["label"])}”' if e.get("label") is not None else "")
        alt = f"{what} example: dataset image {e['index']}"
        figs.append(f'<figure class="vis"><a href="{r}{_url(e["image"])}">{_img(pic, r, alt, "small", px, title="dataset image " + str(e["index"]))}</a>'
                    f"<figcaption>{cap}</figcaption></figure>")
    return f'<div class="row">{"".join(figs)}</div>'


def _connections_html(entry: dict, manifest: dict, px: bool) -> str:
    conns = entry.get("connections") or {}
    units = manifest["units"]
    blocks = []
    for direction, title in (("inputs", "Inputs: units that feed this one"), ("outputs", "Outputs: units this one feeds")):
        d = conns.get(direction)
        if not d or not d.get("rows"):
            continue
        lines = []
        for row in d["rows"]:
            target = units.get(row["unit"])
            thumb = _img(target["files"]["main"], "../../", row["unit"] + " visualization", "", px) if target else ""
            name = (f'<a href="../../{_url(target["files"]["page"])}">{esc(row["unit"])}</a>' if target
                    else f'<span title="not in this gallery">{esc(row["unit"])}</span>')
            lab = unit_label(manifest, target)["name"] if target else None
            name += f' <span class="note">{esc(lab)}</span>' if lab else ""
            lines.append(f"<tr><td>{thumb} {name}</td><td>{_img(row['picture'], '../../', 'kernel of ' + row['unit'], '', True)}</td>"
                         f"<td>{_fmt(row['net'])}</td><td class=\"pos\">+{_fmt(row['positive'])}</td><td class=\"neg\">{_fmt(row['negative'])}</td></tr>")
        kh, kw = d.get("kernel", ["?", "?"])
        blocks.append(f"<div><h3>{title} ({esc(d['layer'])}, {kh}x{kw} kernels)</h3>"
                      "<table class=\"conns\"><tr><th>unit</th><th>kernel</th><th>net</th><th>positive</th><th>negative</th></tr>"
                      f"{''.join(lines)}</table></div>")
    if not blocks:
        note = entry.get("connections_note")
        return f'<h2>Connections</h2>\n<p class="note">{esc(note)}</p>' if note else ""
    return ('<h2>Connections</h2>\n<p class="note">Expanded weights from the circuit inspectors, one row per connected unit '
            "(a spatial kernel usually has both signs): net = sum of the kernel, positive and negative = the sums of its "
            "positive and negative entries, ranked by total mass. The kernel picture shows where it excites (red) and inhibits "
            "(blue), on one scale per table.</p>\n"
            f'<div class="two">{"".join(blocks)}</div>')


def _unit_page(manifest: dict, entry: dict, prev_e: dict | None, next_e: dict | None) -> str:
    m = manifest["model"]
    px = _is_small(manifest)
    layer = next(l for l in manifest["layers"] if l["name"] == entry["layer"])
    files, values, acts = entry["files"], entry["values"], entry.get("activations") or {}
    r = "../../"
    title = _unit_title(manifest, entry)
    lab = unit_label(manifest, entry)
    hero = [f'<figure class="vis">{_img(files["main"], r, title + " visualization", "big", px)}'
            f'<figcaption>maximises {esc(entry["unit"])} · activation {_fmt(acts.get("main"))}</figcaption></figure>']
    if files.get("negative"):
        hero.append(f'<figure class="vis">{_img(files["negative"], r, title + " negative", "big", px)}'
                    f'<figcaption>negative (minimises) · activation {_fmt(acts.get("negative"))}</figcaption></figure>')
    if lab["name"] or lab["note"]:
        hero.append('<div class="labelbox"><div class="lname">' + esc(lab["name"] or "unnamed") + "</div>"
                    + (f'<p class="note">{esc(lab["note"])}</p>' if lab["note"] else "") + "</div>")
    sections = [f'<div class="hero">{"".join(hero)}</div>']
    if files.get("diverse"):
        figs = "".join(
            f'<figure class="vis">{_img(f, r, f"{title} diverse {d}", "med", px)}<figcaption>activation {_fmt(a)}</figcaption></figure>'
            for d, (f, a) in enumerate(zip(files["diverse"], acts.get("diverse") or [None] * len(files["diverse"])))
        )
        sections.append(f'<h2>Diverse visualizations</h2>\n<p class="note">Rendered together with a diversity objective '
                        f'(Gram-matrix dissimilarity), showing different things the unit responds to.</p>\n<div class="row">{figs}</div>')
    spatial = len(layer["shape"]) == 3
    charts = []
    if entry.get("histogram"):
        ds = manifest.get("dataset") or {}
        charts.append(_histogram_svg(entry["histogram"], f"activation over the {ds.get('size', '')} dataset images" + (" (each image's maximum over positions)" if spatial else "")))
    if entry.get("class_histogram"):
        charts.append(_class_svg(entry["class_histogram"]))
    if charts:
        sections.append(f'<h2>Activations over the dataset</h2>\n<div class="charts">{"".join(charts)}</div>')
    top, bottom = _examples(entry, "top"), _examples(entry, "bottom")
    rf = layer.get("receptive_field")
    if rf and rf.get("whole_image"):
        crop = f" Pictures are whole images: {esc(rf.get('reason', ''))}."
    else:
        crop = f" Pictures are the {rf['height']}x{rf['width']} px receptive-field crops (zero-padded at borders) of the extreme position; click for the whole image." if rf else ""
    if top:
        sections.append(f'<h2>Top dataset examples</h2>\n<p class="note">The {len(top)} dataset images with the highest activation of this unit'
                        + (" (maximum over positions)" if spatial else "") + f"; numbers are activations, quotes the true labels.{crop}</p>\n{_example_row(top, r, px, 'top')}")
    if bottom:
        sections.append(f'<h2>Bottom dataset examples</h2>\n<p class="note">The {len(bottom)} dataset images with the lowest activation'
                        + (" (minimum over positions)" if spatial else "") + f": what this unit is most negative on.{crop}</p>\n{_example_row(bottom, r, px, 'bottom')}")
    elif entry.get("bottom_note"):
        sections.append(f'<h2>Bottom dataset examples</h2>\n<p class="note">{esc(entry["bottom_note"])}</p>')
    if files.get("weights"):
        sections.append(f'<h2>Weights</h2>\n<p class="note">{esc(entry.get("weights_caption") or "")}</p>\n'
                        f'<div class="weights">{_img(files["weights"], r, "weights of " + entry["unit"], "", True)}</div>')
    sections.append(_connections_html(entry, manifest, px))
    nav_prev = f'<a id="prev" href="../../{_url(prev_e["files"]["page"])}">← {esc(prev_e["unit"])}</a>' if prev_e else "<span></span>"
    nav_next = f'<a id="next" href="../../{_url(next_e["files"]["page"])}">{esc(next_e["unit"])} →</a>' if next_e else "<span></span>"
    rng = entry.get("range")
    range_txt = f" · dataset range {_fmt(rng[0])} … {_fmt(rng[1])}" if rng else ""
    body = f"""
<h1>{esc(title)}</h1>
<p class="sub">{esc(m["name"])} · layer <a href="../../{_url(layer["page"])}">{esc(layer["name"])}</a> · channel {entry["channel"]} of {layer["units"]} · objective {_fmt(values.get("main"))}{range_txt}</p>
{"".join(s + chr(10) for s in sections if s)}
<div class="pager">{nav_prev}<a href="../../{_url(layer["page"])}">all units of {esc(layer["name"])}</a>{nav_next}</div>
<p class="note">Keyboard: ← and → move to the previous and next unit.</p>
"""
    crumbs = [(m["name"], "../../index.html"), (layer["name"], f"../../{_url(layer['page'])}"), (str(entry["channel"]), None)]
    return _page(f"{title} · {m['name']}", crumbs, body, r, PAGER_JS)


def write_site(out_dir: str | Path, manifest: dict) -> list[Path]:
    """Write every page of the gallery (atomically) from ``manifest``; returns the paths written."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        from ..checks import InputTypeError

        raise InputTypeError(f"manifest: expected the gallery manifest (a dict with a 'layers' list), got {type(manifest).__name__}")
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
