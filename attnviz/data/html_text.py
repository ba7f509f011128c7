"""HTML documentation pages to plain prose, with the standard library's `html.parser`.

Documentation generators (Sphinx, DocBook, Texinfo, AsciiDoc) wrap the text people wrote in
navigation, tables of contents, indices and code listings. `page_text` keeps the prose: each block
element (paragraph, heading, list item, table row) becomes one line, paragraphs are separated by a
blank line, and these are dropped:

- whole elements that are never prose: scripts, styles, <head>, <nav>, <footer>, forms, SVG;
- navigation and tables of contents, recognised by role, class or id (the names the generators
  above use: `sphinxsidebar`, `navheader`, Texinfo's `header` and `index-*` tables, ...);
- code listings (<pre>): they are code and console output, not prose. Inline <code> stays,
  since it is part of a sentence.

It also measures how much of the text is link text, so a caller can drop index pages (mostly
links) without knowing which generator made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

# Elements whose whole content is skipped.
SKIP_TAGS = frozenset(
    {
        "script", "style", "head", "nav", "header", "footer", "noscript", "template", "svg",
        "math", "form", "button", "select", "textarea", "pre",
    }
)  # fmt: skip
# Navigation, contents and index blocks, by the class names Sphinx (classic and Read the Docs
# themes), DocBook, Texinfo and AsciiDoc give them.
SKIP_CLASSES = frozenset(
    {
        "sphinxsidebar", "related", "footer", "headerlink", "toctree-wrapper", "contents",
        "shortcontents", "mobile-nav", "menu-wrapper", "rst-footer-buttons", "wy-nav-side",
        "wy-breadcrumbs", "navheader", "navfooter", "toc", "header", "nav-panel", "section-toc",
        "Contents_element", "Overview_element", "menu", "highlight", "linenodiv", "nav",
        "docnav",
    }
)  # fmt: skip
SKIP_CLASS_PREFIXES = ("index-", "highlight-")  # Texinfo index tables, Sphinx code wrappers
SKIP_IDS = frozenset(
    {"footer", "footer-text", "toc", "searchbox", "sidebar", "banner", "hd", "ft", "global-nav"}
)
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# A block whose text is nearly all links is a navigation bar or a list of contents even when
# nothing marks it as one (texi2html's unnamed [ << ] [ >> ] tables, in-page contents lists).
LINK_BLOCK = 0.8
SKIP_ROLES = frozenset({"navigation", "search", "contentinfo", "banner"})
# Elements that have no end tag: they never open a skipped region.
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
# Block elements: a line break before and after. Those in PARAGRAPH_TAGS end a paragraph (a blank
# line); list items, definition terms and table rows only end a line.
LINE_TAGS = frozenset({"li", "dt", "dd", "tr", "br", "caption", "figcaption"})
PARAGRAPH_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "aside", "blockquote", "address", "figure",
        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "dl", "ul", "ol", "table", "body",
    }
)  # fmt: skip


@dataclass
class PageText:
    """The prose of one page: blocks of text with the break (newlines) before each."""

    blocks: list[tuple[int, str]]
    """(newlines before the block: 1 or 2, the block's text with whitespace collapsed)."""
    link_chars: int = 0
    """Characters of text inside links, in all blocks read (the link-only ones included)."""
    read_chars: int = 0
    """Characters of all blocks read, the link-only ones that were dropped included."""

    @property
    def chars(self) -> int:
        return sum(len(text) for _, text in self.blocks)

    @property
    def link_fraction(self) -> float:
        """Near 1 for an index page or a table of contents."""
        return self.link_chars / max(self.read_chars, 1)

    @property
    def text(self) -> str:
        return "".join("\n" * breaks + text for breaks, text in self.blocks).lstrip("\n")


def _skipped(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    if tag in SKIP_TAGS:
        return True
    values = dict(attrs)
    if values.get("role") in SKIP_ROLES or values.get("id") in SKIP_IDS:
        return True
    classes = (values.get("class") or "").split()
    return any(c in SKIP_CLASSES or c.startswith(SKIP_CLASS_PREFIXES) for c in classes)


class _ProseParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = PageText(blocks=[])
        self._words: list[str] = []  # text of the block being read
        self._link_words = 0  # characters of link text in it
        self._pending_break = 0
        self._skip_tag: str | None = None  # the element being skipped, and how deep in it we are
        self._skip_depth = 0
        self._in_link = 0

    def _break(self, newlines: int, heading: bool = False) -> None:
        text = " ".join("".join(self._words).split())
        links = min(self._link_words, len(text))
        self.page.read_chars += len(text)
        self.page.link_chars += links
        if text and (heading or links < LINK_BLOCK * len(text)):  # headings may be links
            self.page.blocks.append((max(self._pending_break, 1), text))
            self._pending_break = 0
        self._words, self._link_words = [], 0
        self._pending_break = max(self._pending_break, newlines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            self._skip_depth += tag == self._skip_tag
            return
        if tag not in VOID_TAGS and _skipped(tag, attrs):
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in PARAGRAPH_TAGS:
            self._break(2)
        elif tag in LINE_TAGS:
            self._break(1)
        elif tag in ("td", "th"):
            self._words.append(" ")
        elif tag == "a" and dict(attrs).get("href"):
            self._in_link += 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        if tag in PARAGRAPH_TAGS:
            self._break(2, heading=tag in HEADINGS)
        elif tag in LINE_TAGS:
            self._break(1)
        elif tag == "a" and self._in_link:
            self._in_link -= 1

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None:
            self._words.append(data)
            if self._in_link:
                self._link_words += len(" ".join(data.split()))


def page_text(html: str) -> PageText:
    """The prose of an HTML page (see the module docstring for what is kept)."""
    parser = _ProseParser()
    parser.feed(html)
    parser.close()
    parser._break(2)
    return parser.page
