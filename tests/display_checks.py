"""Checks that a rich display renders: the HTML parses with balanced tags, fetches nothing, runs no script,
and every inline picture decodes. Shared by the display, notebook and browser tests."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

from PIL import Image

VOID = {"img", "br", "hr", "meta", "link", "input", "col", "area", "base", "source", "wbr"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.errors.append("a <script> element")
        for key in ("src", "href"):
            v = a.get(key)
            if v and not v.startswith(("data:", "#")):
                self.errors.append(f"{tag} {key}={v[:60]!r} points outside the page")
        if tag == "img":
            self.images.append(a)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def decode_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "PNG" and im.width > 0 and im.height > 0
    return im


def check_html(html: str) -> tuple[list[Image.Image], str]:
    """Assert the HTML is well formed and self-contained; return its decoded pictures and its visible text."""
    assert isinstance(html, str) and html.strip(), "empty HTML"
    c = _Checker()
    c.feed(html)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed tags: {c.stack[:5]}"
    assert not re.search(r"https?://", html), "the HTML names a network address"
    pics = []
    for a in c.images:
        src = a.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:40]
        im = decode_png(base64.b64decode(src.split(",", 1)[1], validate=True))
        if a.get("width"):  # drawn at its own pixel size (enlarging happens in the PNG, nearest-neighbour)
            assert (int(a["width"]), int(a["height"])) == im.size, (a["width"], a["height"], im.size)
        pics.append(im)
    return pics, " ".join(" ".join(c.text).split())
