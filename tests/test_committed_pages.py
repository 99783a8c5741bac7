"""Every committed HTML page under galleries/, as a reader opens it.

Pages are found by glob, so a page added later is covered without touching this file.
Statically (every page): every local link, script and image resolves to a file (no external reference);
every image file decodes with a non-zero size. In headless Chromium at 1280 px (every index, report and layer page, and the first and
last page of each folder of unit pages): no horizontal overflow, every image loads and is drawn with a
non-zero size, no console errors, every local link resolves.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from browser_support import BROWSER_MARKS, chromium_driver

GALLERIES = Path(__file__).resolve().parents[1] / "galleries"
REPO = GALLERIES.parent
PAGES = sorted(GALLERIES.rglob("*.html"))
WIDTH = 1280


def _browser_sample(pages: list[Path]) -> list[Path]:
    """Every page outside a ``units/<layer>/`` folder, plus the first and last page of each such folder."""
    out, folders = [], {}
    for p in pages:
        if p.parent.parent.name == "units":
            folders.setdefault(p.parent, []).append(p)
        else:
            out.append(p)
    for group in folders.values():
        out += sorted({group[0], group[-1]})
    return sorted(out)


BROWSER_PAGES = _browser_sample(PAGES)


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


class _Refs(HTMLParser):
    """The ``src`` of every <img>, the ``href`` of every <a> and <link>, and the ``src`` of every <script> of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag in ("a", "link") and a.get("href"):
            self.links.append(a["href"])
        elif tag == "script" and a.get("src"):
            self.links.append(a["src"])  # a vendored script (d3) is a local file like a link target


def _local_target(page: Path, ref: str) -> Path | None:
    """The file a relative reference points to (None for an in-page anchor); external references fail."""
    url = urlparse(ref)
    assert not url.scheme and not url.netloc, f"{_rel(page)}: external reference {ref!r} (committed pages must work offline)"
    if not url.path:
        return None
    return (page.parent / unquote(url.path)).resolve()


def test_pages_are_found():
    names = {_rel(p) for p in PAGES}
    assert {"galleries/mnist_exercise/report.html", "galleries/universality/index.html", "galleries/mnist_cnn/index.html"} <= names
    assert len(BROWSER_PAGES) < len(PAGES)  # the sample is a proper subset: unit folders are sampled, not skipped
    assert all(p in BROWSER_PAGES for p in PAGES if p.name in ("index.html", "report.html"))


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_and_images_resolve(page: Path):
    refs = _Refs()
    refs.feed(page.read_text(encoding="utf-8"))
    for href in refs.links:
        target = _local_target(page, href)
        assert target is None or target.is_file(), f"{_rel(page)}: broken link {href!r}"
    for src in refs.images:
        target = _local_target(page, src)
        assert target is not None and target.is_file(), f"{_rel(page)}: missing image {src!r}"
        with Image.open(target) as im:
            im.verify()
            assert im.width > 0 and im.height > 0, f"{_rel(page)}: empty image {src!r}"


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    yield from chromium_driver(tmp_path_factory, width=WIDTH)


_IMAGES = ("return Array.from(document.images).map(i => {const r = i.getBoundingClientRect(); "
           "return [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight, r.width, r.height];});")
# elements whose right edge passes the viewport (content cut off inside a clipping box shows up here too)
_WIDE = ("const w = document.documentElement.clientWidth; return Array.from(document.querySelectorAll('body *'))"
         ".filter(e => e.getBoundingClientRect().right > w + 1 && getComputedStyle(e).position !== 'fixed')"
         ".map(e => e.tagName + (e.className ? '.' + e.className : '') + ' right=' + Math.round(e.getBoundingClientRect().right)).slice(0, 5);")


@pytest.mark.parametrize("page", [pytest.param(p, marks=BROWSER_MARKS) for p in BROWSER_PAGES], ids=_rel)
def test_page_in_browser(driver, page: Path):
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    images = driver.execute_script(_IMAGES)
    broken = [s for s, ok, nw, nh, w, h in images if not (ok and nw > 0 and nh > 0 and w > 0 and h > 0)]
    assert not broken, f"{_rel(page)}: images not loaded or drawn with zero size: {broken[:5]}"
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"{_rel(page)}: console errors {errors[:3]}"
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    client = driver.execute_script("return document.documentElement.clientWidth")
    assert scroll <= client, f"{_rel(page)}: horizontal overflow at {WIDTH} px ({scroll} > {client})"
    wide = driver.execute_script(_WIDE)
    assert not wide, f"{_rel(page)}: wider than the page at {WIDTH} px: {wide}"
    for href in driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"):
        url = urlparse(href)
        assert url.scheme == "file", f"{_rel(page)}: external link {href}"
        assert Path(unquote(url.path)).is_file(), f"{_rel(page)}: broken link {href}"
