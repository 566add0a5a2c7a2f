"""Plain text and Markdown parsed into unstructured elements without per-paragraph NLP.

Why: unstructured tells a paragraph of txt, md (and html) apart as NarrativeText, Title or Text with
spaCy (``is_possible_narrative_text`` -> ``sentence_count`` and ``contains_verb``): ~12 ms per short
paragraph, measured 37 of the 41 ms ``partition_md`` takes per SciFact abstract, where converting the
Markdown to HTML takes 1 ms. That dominated build time, and peers run no NLP on simple formats.

What stays the same as unstructured, on purpose, so that chunks (and so retrieval) do not change:

- Markdown goes through the same converter (python-markdown, extensions ``tables`` and ``fenced_code``),
  and its HTML is walked by the rules of unstructured's HTML parser: headings are ``Title`` with
  ``category_depth`` (h1 -> 0), list items ``ListItem`` with their list depth, code blocks
  ``CodeSnippet`` (whitespace kept), tables ``Table`` with ``text_as_html``, paragraphs
  ``NarrativeText`` or ``Text``. Only headings make a Title, as in unstructured, so the sections that
  ``chunk_by_title`` cuts are the same. ``.markdown`` files are Markdown here (unstructured reads them
  as plain text).
- Plain text is cut into paragraphs by unstructured's own regex cleaners (``auto_paragraph_grouper``:
  blank-line or line-per-paragraph files), and bullets and numbered lines become ``ListItem``.
- Metadata is applied by unstructured's own post-processing (``apply_metadata``): filename,
  file_directory, filetype, languages, last_modified, hash ids, and ``parent_id`` from each element to
  the Title of its section.

What differs: the NarrativeText/Text/Title choice for a paragraph is made by cheap rules on its
shape (see ``_looks_like_title``, ``_looks_narrative``) instead of a sentence model. In Markdown that
only changes a category that chunking ignores; in plain text it decides which short lines are titles.
Front matter (YAML ``---`` or TOML ``+++`` at the top of a Markdown file) is metadata, not text: only
its ``title`` is kept, as the document's Title, as static-site generators show it. Likewise the syntax
documentation sites add to Markdown (MkDocs, Material, pymdownx, Docusaurus, MDX) is read as those sites
show it, not as text (``strip_site_syntax``): heading attributes (``{ #anchor }``), admonition and tab
fences (``!!! note``, ``/// tip``, ``:::tip``) keep their title and body, include directives
(``{* file *}``, ``{!> file !}``, ``--8<--``) and MDX ``import`` lines go.

reStructuredText (.rst) is read by docutils into the same kinds of elements (``rag.ingest.rst``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import markdown
import yaml
from lxml import etree
from unstructured.cleaners.core import auto_paragraph_grouper, clean_bullets
from unstructured.documents.elements import (
    Address,
    CodeSnippet,
    Element,
    ElementMetadata,
    EmailAddress,
    Image,
    ListItem,
    NarrativeText,
    Table,
    Text,
    Title,
)
from unstructured.file_utils.encoding import detect_file_encoding
from unstructured.file_utils.model import FileType
from unstructured.nlp.patterns import (
    EMAIL_ADDRESS_PATTERN_RE,
    NUMBERED_LIST_RE,
    PARAGRAPH_PATTERN,
    UNICODE_BULLETS_RE,
    US_CITY_STATE_ZIP_RE,
)
from unstructured.partition.common.metadata import apply_metadata, get_last_modified_date

from rag.ingest.quality import decode_utf16

#: file suffixes parsed here (with ``pipeline.text_parser: builtin``); everything else goes to unstructured
MARKDOWN_SUFFIXES = {".md", ".markdown"}
TEXT_SUFFIXES = {".txt"}
RST_SUFFIXES = {".rst"}
SUFFIXES = MARKDOWN_SUFFIXES | TEXT_SUFFIXES | RST_SUFFIXES

# The extensions unstructured's partition_md uses: the same HTML, so the same blocks.
_MARKDOWN_EXTENSIONS = ["tables", "fenced_code"]
# Its title test allows 12 words; a longer line is a sentence however it ends.
_TITLE_MAX_WORDS = 12
# A sentence ends at . ! or ? (maybe closed by a quote or bracket) before a space and a capital or digit.
# Last words of a line that the next line continues: wrapped prose, not a heading.
_CONTINUED_BY = frozenset(
    "a an the and or nor but of to in on at by for with from into onto as than that which who whom whose "
    "is are was were be been has have had his her its their our my your this these those when where while "
    "if not so very".split()
)
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_FRONT_MATTER = {
    "---": re.compile(r"\A---[ \t]*\r?\n(.*?)^(?:---|\.\.\.)[ \t]*$\r?\n?", re.M | re.S),
    "+++": re.compile(r"\A\+\+\+[ \t]*\r?\n(.*?)^\+\+\+[ \t]*$\r?\n?", re.M | re.S),
}

# -- how unstructured's HTML parser sees each tag (unstructured/partition/html/parser.py) --
_HEADING_DEPTH = {"h1": 0, "h2": 1, "h3": 2, "h4": 3, "h5": 4, "h6": 5}
_LISTS = {"ul", "ol", "dl"}
_LIST_ITEMS = {"li", "dd"}
# Blocks whose text becomes a paragraph of its own; any tag not named here is phrasing (inline).
_FLOW = {"address", "article", "aside", "blockquote", "body", "center", "div", "footer", "header", "hgroup",
         "main", "section", "html", "p", "dt", "pre", "img", "table", *_HEADING_DEPTH, *_LISTS, *_LIST_ITEMS}
# Boilerplate (navigation, forms, rules): nothing of it is text.
_REMOVED_BLOCKS = {"details", "figure", "hr", "nav", "template", "form", "input", "summary"}
# Inline tags whose content is not shown as text; their tail is.
_REMOVED_PHRASING = {"button", "label", "audio", "canvas", "datalist", "dialog", "head", "iframe", "noembed",
                     "noframes", "object", "select", "svg", "textarea", "title", "video", "xml", "ix:header"}
_STRIPPED = ["del", "link", "meta", "noscript", "script", "style"]


def read_text_file(path: Path) -> tuple[str, str | None]:
    """A text file's content and last-modified time, decoded as unstructured decodes it.

    UTF-16 (with or without a BOM) is decoded first; anything else is decoded as unstructured does
    (BOM, strict UTF-8, then character-set detection). ``rag.ingest.rst`` reads .rst files with it.

    Raises:
        UnprocessableEntityError: the bytes decode in no known encoding (not text).
    """
    data = path.read_bytes()
    text = decode_utf16(data)
    if text is None:
        text = detect_file_encoding(file=data)[1]
    return text, get_last_modified_date(str(path))


def parse_text_file(path: Path) -> list[Element]:
    """The elements of a .txt, .md or .markdown file, with the metadata unstructured gives them.

    (.rst files are read by ``rag.ingest.rst.parse_rst_file``, which builds on this module's rules.)

    Raises:
        ValueError: the suffix is not one of ``MARKDOWN_SUFFIXES`` or ``TEXT_SUFFIXES``.
        UnprocessableEntityError: the bytes decode in no known encoding (not text).
    """
    suffix = path.suffix.lower()
    if suffix not in MARKDOWN_SUFFIXES | TEXT_SUFFIXES:
        raise ValueError(f"{path.name}: not a plain-text or Markdown file")
    text, modified = read_text_file(path)
    if suffix in MARKDOWN_SUFFIXES:
        return partition_markdown(text, filename=str(path), metadata_last_modified=modified)
    return partition_plain_text(text, filename=str(path), metadata_last_modified=modified)


def partition_plain_text(text: str, *, filename: str | None = None,
                         metadata_last_modified: str | None = None) -> list[Element]:
    """Plain text as paragraph elements: ListItem for bullets and numbered lines, Title for a short
    heading-like line, NarrativeText for prose, Text for the rest; languages ``["eng"]``."""
    return _plain_text_elements(text, filename=filename, languages=["eng"],
                                metadata_last_modified=metadata_last_modified)


def partition_markdown(text: str, *, filename: str | None = None,
                       metadata_last_modified: str | None = None) -> list[Element]:
    """Markdown as elements: headings Title (with depth), list items ListItem, code blocks CodeSnippet,
    tables Table, paragraphs NarrativeText or Text, front matter's ``title`` a Title; languages ``["eng"]``.
    Documentation sites' syntax is read as they show it (``strip_site_syntax``)."""
    return _markdown_elements(text, filename=filename, languages=["eng"],
                              metadata_last_modified=metadata_last_modified)


# apply_metadata reads filename, languages and metadata_last_modified from these signatures.
@apply_metadata(FileType.TXT)
def _plain_text_elements(text: str, *, filename: str | None, languages: list[str],
                         metadata_last_modified: str | None) -> list[Element]:
    if not text.strip():
        return []
    elements: list[Element] = []
    for paragraph in re.split(PARAGRAPH_PATTERN, auto_paragraph_grouper(text).strip()):
        paragraph = paragraph.strip()
        if not paragraph or (len(paragraph) == 1 and UNICODE_BULLETS_RE.match(paragraph)):
            continue  # blank, or a bullet with nothing after it
        elements.append(_plain_text_element(paragraph))
    return elements


@apply_metadata(FileType.MD)
def _markdown_elements(text: str, *, filename: str | None, languages: list[str],
                       metadata_last_modified: str | None) -> list[Element]:
    title, body = _split_front_matter(text)
    html = markdown.markdown(strip_site_syntax(body), extensions=_MARKDOWN_EXTENSIONS)
    elements = list(_HtmlWalker().elements(html))
    if title and not (elements and elements[0].category == "Title" and _same_words(elements[0].text, title)):
        elements.insert(0, Title(title, metadata=ElementMetadata(category_depth=0)))
    return elements


# -- paragraphs --------------------------------------------------------------------------------------


# unstructured.partition.text_type's regex tests, restated on the same patterns: importing that module
# imports spaCy and torch (~3 s, for a sentence model this parser exists to avoid).
# tests/ingest/test_text_parsing.py checks they agree with unstructured's on real paragraphs.


def is_bulleted_text(text: str) -> bool:
    return UNICODE_BULLETS_RE.match(text.strip()) is not None


def is_email_address(text: str) -> bool:
    return EMAIL_ADDRESS_PATTERN_RE.match(text.strip()) is not None


def is_us_city_state_zip(text: str) -> bool:
    return US_CITY_STATE_ZIP_RE.match(text.strip()) is not None


def is_possible_numbered_list(text: str) -> bool:
    return NUMBERED_LIST_RE.match(text.strip()) is not None


def under_non_alpha_ratio(text: str, threshold: float = 0.5) -> bool:
    """More than ``threshold`` of the non-space characters are not letters (rules, numbers, symbols)."""
    counted = [char.isalpha() for char in text if not char.isspace()]
    return bool(counted) and sum(counted) / len(counted) < threshold


def _plain_text_element(text: str) -> Element:
    """The element for one plain-text paragraph; the order of tests is unstructured's ``element_from_text``."""
    if is_bulleted_text(text):
        return ListItem(clean_bullets(text))
    if is_email_address(text):
        return EmailAddress(text)
    if is_us_city_state_zip(text):
        return Address(text)
    if is_possible_numbered_list(text):
        return ListItem(text)
    if _looks_like_title(text):
        return Title(text)
    if _looks_narrative(text):
        return NarrativeText(text)
    return Text(text)


def _paragraph_class(text: str) -> type[Element] | None:
    """The class of a Markdown paragraph, as unstructured's ``derive_element_type_from_text`` decides it
    but without a sentence model; None for a paragraph it drops (one character)."""
    if is_bulleted_text(text):
        return ListItem
    if is_us_city_state_zip(text):
        return Address
    if is_email_address(text):
        return EmailAddress
    if len(text) < 2:
        return None
    return NarrativeText if _looks_narrative(text) else Text


def paragraph_elements(text: str) -> Iterator[Element]:
    """The element of a paragraph outside headings and lists (none for one character): NarrativeText,
    Text, or ListItem (depth 0) when it starts with a bullet character, as unstructured's HTML parser
    makes it; its whitespace is collapsed."""
    text = " ".join(text.split())
    cls = _paragraph_class(text) if text else None
    if cls is ListItem:
        text = clean_bullets(text)
    if cls is not None and text:
        yield cls(text, metadata=ElementMetadata(category_depth=0 if cls is ListItem else None))


def _looks_like_title(text: str) -> bool:
    """A line that reads as a heading: short, one sentence, capitalised, not ending like a sentence.

    unstructured's test (``is_possible_title`` after ``is_possible_narrative_text`` fails) asks a
    part-of-speech tagger whether the line has a verb. Here the line's end stands in for that: a heading
    does not end in . , ; ! or ? (a colon, as in "Important points:", is allowed), and a line of wrapped
    prose, which starts in lower case or ends in a word like "the" or "and", is not one.
    """
    words = text.split()
    if not words or len(words) > _TITLE_MAX_WORDS or "\n" in text:
        return False
    first = next((char for char in text if char.isalpha()), "")
    if not first.isupper() or not (text[0].isalnum() or text[0] in "\"'\u201c\u2018"):
        return False  # "[13] Roberts broke through": a reference mark starts a sentence, not a heading
    if text.isnumeric() or under_non_alpha_ratio(text) or words[-1].casefold() in _CONTINUED_BY:
        return False
    return not text.rstrip("\"'\u201d\u2019)]").endswith((".", ",", ";", "!", "?"))


def _looks_narrative(text: str) -> bool:
    """Prose rather than a label or a fragment: mostly letters, and sentences or enough lower-case words.

    Stands in for unstructured's ``is_possible_narrative_text``: not numeric, at least half letters,
    and not a capitalised one-liner ("Annual Report 2024"); a one-sentence text needs three words.
    """
    if text.isnumeric() or under_non_alpha_ratio(text):
        return False
    words = [word for word in text.split() if any(char.isalpha() for char in word)]
    if len(_SENTENCE_END.findall(text)) >= 1:
        return True
    if len(words) < 3 or text.isupper():
        return False
    capitalised = sum(1 for word in words if word[0].isupper())
    return capitalised / len(words) <= 0.5


def _same_words(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _split_front_matter(text: str) -> tuple[str | None, str]:
    """(front matter's ``title``, the Markdown after it). Text that only looks like front matter (not a
    YAML or TOML mapping) is left to Markdown, where ``---`` is a rule or a setext underline."""
    text = text.removeprefix("\ufeff")
    for fence, pattern in _FRONT_MATTER.items():
        match = pattern.match(text)
        if match is None:
            continue
        try:
            data = yaml.safe_load(match.group(1)) if fence == "---" else tomllib.loads(match.group(1))
        except (yaml.YAMLError, tomllib.TOMLDecodeError):
            return None, text
        if not isinstance(data, dict):
            return None, text
        title = data.get("title")
        title = " ".join(title.split()) if isinstance(title, str) else None
        return title or None, text[match.end():]
    return None, text


# -- what documentation sites add to Markdown -------------------------------------------------------------

_CODE_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
# {* ../docs_src/app.py hl[3] *} (FastAPI), {!> ../docs_src/app.py !} (markdown-include), --8<-- "f.md" (snippets),
# and lines that are only a directive: [TOC], {% include "f.md" %} (Jinja: mkdocs-macros)
_INCLUDE = re.compile(r"^[ \t]*(?:\{\*.*\*\}|\{!.*!\}|-{2}8<-{2}.*|\[TOC\]|\{%.*%\})[ \t]*$")
# /// tip | Title ... /// (pymdownx.blocks; //// nests), :::tip Title ... ::: and :::note[Title] (Docusaurus)
_BLOCK_FENCE = re.compile(r"^[ \t]*(?:/{3,}|:{3,})[ \t]*(?:\{[^}]*\}|([\w-]+)?[ \t]*(?:\|[ \t]*(.*?)|\[(.*)\]|(.*?)))?[ \t]*$")
# !!! note "Title", ??? note, ???+ note (python-markdown admonition, pymdownx.details): the body is indented
# and === "Tab title" (pymdownx.tabbed; the quotes tell it from a setext heading's underline)
_ADMONITION = re.compile(r"^([ \t]*)(?:(?:!!!|\?\?\?\+?)[ \t]*([\w-]+)?(?:[ \t]+[\w-]+)*(?:[ \t]*\"(.*)\")?"
                         r"|===[!+]*[ \t]+\"(.*)\")[ \t]*$")
_ATTRIBUTE = r"(?:[#.][\w:-]+|[\w-]+=(?:\"[^\"]*\"|'[^']*'|[^\s}]*))"
# { #anchor }, {: .class }, {#id} (attr_list, Docusaurus): at a line's end or right after a link or image
_ATTRIBUTES = re.compile(
    rf"(?:[ \t]*\{{:?[ \t]*{_ATTRIBUTE}(?:[ \t]+{_ATTRIBUTE})*[ \t]*\}}[ \t]*$|(?<=[)\]])\{{:?[ \t]*{_ATTRIBUTE}"
    rf"(?:[ \t]+{_ATTRIBUTE})*[ \t]*\}})", re.M
)
# MDX: import/export lines and {/* comments */}
_MDX_LINE = re.compile(r"^(?:import[ \t]+.*[ \t]from[ \t]+['\"].*['\"];?|import[ \t]+['\"].*['\"];?|export[ \t]+"
                       r"(?:const|let|default|function)\b.*)[ \t]*$")
_MDX_COMMENT = re.compile(r"\{/\*.*?\*/\}", re.S)


def strip_site_syntax(text: str) -> str:
    """Markdown as a documentation site shows it: MkDocs, Material, pymdownx and Docusaurus syntax read.

    Heading and link attributes go; admonitions and tabs (``!!! note "Title"``, ``=== "Tab"``, ``/// tip |
    Title``, ``:::tip Title``) become their title (or type) as a paragraph followed by their body, dedented
    where the syntax indents it; include directives (``{* file *}``, ``{!> file !}``, ``--8<--``,
    ``{% include %}``), ``[TOC]`` and MDX imports go (their files are not read). Code blocks are left
    alone, but for include lines in them (FastAPI puts ``{!> file !}`` in fences).
    """
    out: list[str] = []
    fence: str | None = None  # the open code fence's marker
    bodies: list[int] = []  # the indents of open admonition bodies
    for line in _MDX_COMMENT.sub("", text).split("\n"):
        if _INCLUDE.match(line):
            continue
        if bodies and line.strip():
            while bodies and _indent(line) < bodies[-1]:
                bodies.pop()
        if bodies:
            line = _dedent(line, 4 * len(bodies))
        if fence is not None:
            closing = line.strip()
            if len(closing) >= len(fence) and set(closing) == {fence[0]}:
                fence = None
            out.append(line)
            continue
        if opened := _CODE_FENCE.match(line):
            fence = opened.group(1)
            out.append(line)
            continue
        if admonition := _ADMONITION.match(line):
            out.extend(_block_title(admonition.group(3) or admonition.group(4), admonition.group(2)))
            bodies.append(4 * len(bodies) + _indent(admonition.group(1)) + 4)
            continue
        if block := _BLOCK_FENCE.match(line):
            kind, *titles = block.groups()
            out.extend(_block_title(next((t for t in titles if t), None), kind))
            continue
        if _MDX_LINE.match(line):
            continue
        out.append(_ATTRIBUTES.sub("", line))
    return "\n".join(out)


def _block_title(title: str | None, kind: str | None) -> list[str]:
    """The lines standing for a block's opening fence: its title, or its type, as a paragraph."""
    shown = (title or "").strip().strip("\"'") or (kind or "").replace("-", " ").strip().capitalize()
    return ["", shown, ""] if shown else [""]


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _dedent(line: str, columns: int) -> str:
    expanded = line.expandtabs(4)
    return expanded[min(columns, _indent(expanded)):]


# -- the HTML that python-markdown writes, walked as unstructured's HTML parser walks it ----------------


class _HtmlWalker:
    """Elements from HTML in document order, by the rules of unstructured's v1 HTML parser (which this
    mirrors for the HTML python-markdown writes, raw HTML blocks included), but with
    ``_paragraph_class`` in place of its sentence-model classifier."""

    def elements(self, html: str) -> Iterator[Element]:
        """Every element of the document."""
        if not html.strip():
            return
        parser = etree.HTMLParser(remove_comments=True, remove_pis=True)
        try:
            root = etree.fromstring(html, parser)
        except ValueError:  # a str with an XML encoding declaration: lxml wants bytes then
            root = etree.fromstring(html.encode("utf-8"), parser)
        if root is None:
            return
        etree.strip_elements(root, _STRIPPED, with_tail=False)
        main = root.find(".//main")
        if main is None:
            main = root.find(".//body")
        yield from self._block(root if main is None else main)

    def _block(self, node: etree._Element) -> Iterator[Element]:
        tag = _tag(node)
        if tag in _REMOVED_BLOCKS:
            return
        if tag == "table":
            yield from _table(node)
        elif tag == "img":
            yield from _image(node)
        elif tag == "pre":
            text = _pre_text(node)
            if text:
                yield CodeSnippet(text)
        elif tag in _HEADING_DEPTH:
            yield from self._runs(node, Title)
        elif tag in _LIST_ITEMS:
            yield from self._list_item(node)
        else:
            yield from self._runs(node, None)

    def _list_item(self, node: etree._Element) -> Iterator[Element]:
        # A loose Markdown list wraps each item's text in a <p>: the item is still one ListItem.
        if len(node) == 1 and not (node.text or "").strip():
            child = node[0]
            if (_tag(child) in _FLOW - {"pre", "img", "table", *_HEADING_DEPTH, *_LISTS, *_LIST_ITEMS}
                    and not (child.tail or "").strip()
                    and all(_tag(d) not in _FLOW for d in child.iterdescendants())):
                yield from self._runs(child, ListItem, depth_of=node)
                return
        yield from self._runs(node, ListItem)

    def _runs(self, node: etree._Element, cls: type[Element] | None,
              depth_of: etree._Element | None = None) -> Iterator[Element]:
        """Paragraphs of a block: its text and inline children up to each nested block, which is walked
        in turn. Text after a nested block is classified by its content, as unstructured does."""
        run = _Run(node if depth_of is None else depth_of, cls)
        run.add(node.text)
        for child in node:
            if _is_phrasing(child):
                yield from self._phrasing(child, run)
            else:
                yield from run.flush()
                yield from self._block(child)
                run.cls = None
            run.add(child.tail)
        yield from run.flush()

    def _phrasing(self, node: etree._Element, run: _Run) -> Iterator[Element]:
        tag = _tag(node)
        if tag == "br":
            run.add("\n")
            return
        if tag in _REMOVED_PHRASING:
            return
        run.add(node.text)
        for child in node:
            if _is_phrasing(child):
                yield from self._phrasing(child, run)
            else:  # a block inside inline markup (an image in a link): a paragraph of its own
                yield from run.flush()
                yield from self._block(child)
            run.add(child.tail)


class _Run:
    """The text segments of one paragraph under construction, and what it will become."""

    def __init__(self, owner: etree._Element, cls: type[Element] | None):
        self.owner, self.cls, self.parts = owner, cls, []

    def add(self, text: str | None) -> None:
        if text:
            self.parts.append(text)

    def flush(self) -> Iterator[Element]:
        text = " ".join("".join(self.parts).split())
        self.parts = []
        if not text:
            return
        if self.cls is None:
            yield from paragraph_elements(text)
        else:
            yield self.cls(text, metadata=ElementMetadata(category_depth=self._depth(self.cls)))

    def _depth(self, cls: type[Element]) -> int | None:
        if cls is Title:
            return _HEADING_DEPTH.get(_tag(self.owner), 0)
        if cls is ListItem:
            if _tag(self.owner) not in _LIST_ITEMS:
                return 0
            return sum(1 for ancestor in self.owner.iterancestors() if _tag(ancestor) in _LISTS)
        return None


def _tag(node: etree._Element) -> str:
    return node.tag.lower() if isinstance(node.tag, str) else ""


def _is_phrasing(node: etree._Element) -> bool:
    tag = _tag(node)
    return tag not in _FLOW and tag not in _REMOVED_BLOCKS


def _pre_text(node: etree._Element) -> str:
    """A <pre>'s text with its whitespace, less one leading and one trailing newline."""
    parts: list[str] = []

    def gather(element: etree._Element) -> None:
        if _tag(element) == "br":
            parts.append("\n")
        elif _tag(element) not in _REMOVED_PHRASING:
            parts.append(element.text or "")
            for child in element:
                gather(child)
                parts.append(child.tail or "")

    gather(node)
    text = "".join(parts)
    return text[1 if text.startswith("\n") else 0 : -1 if text.endswith("\n") else len(text)]


def _image(node: etree._Element) -> Iterator[Element]:
    source = (node.get("data-src") or "").strip() or (node.get("src") or "").strip()
    if source:
        yield Image(text=(node.get("alt") or "").strip(), metadata=ElementMetadata(image_url=source))


#: a table's cells: (``th`` or ``td``, its text) per cell, a list of them per row
TableRows = list[list[tuple[str, str]]]


def _table(node: etree._Element) -> Iterator[Element]:
    """The Table of an HTML <table> (unstructured's ``TableBlock``): its caption and row groups."""
    captions: list[str] = []
    groups: list[tuple[str | None, TableRows]] = []

    def row(tr: etree._Element) -> list[tuple[str, str]]:
        return [(_tag(c), " ".join(t for t in (t.strip() for t in c.itertext()) if t))
                for c in tr if _tag(c) in ("th", "td")]

    for child in node:
        tag = _tag(child)
        if tag == "caption":
            captions.append(" ".join(t for t in (t.strip() for t in child.itertext()) if t))
        elif tag == "tr":
            groups.append((None, [row(child)]))
        elif tag in ("thead", "tbody", "tfoot"):
            groups.append((tag, [row(tr) for tr in child if _tag(tr) == "tr"]))
    yield from table_elements(captions, groups)


def table_elements(captions: list[str], groups: list[tuple[str | None, TableRows]]) -> Iterator[Element]:
    """A Table whose text is its captions and rows, cells joined by spaces, and whose ``text_as_html``
    is the bare table (unstructured's ``TableBlock``); none for a table without text.

    Args:
        captions: the caption texts.
        groups: the rows, each group in a ``thead``, ``tbody`` or ``tfoot`` (or None: bare rows).
    """
    import html as html_lib

    def markup(tag: str, text: str) -> str:
        body = " ".join("<br/>".join(html_lib.escape(text).split("\n")).split())
        return f"<{tag}>{body}</{tag}>" if body else f"<{tag}/>"

    captions = [caption for caption in captions if caption]
    parts, rows = ["<table>", *(markup("caption", caption) for caption in captions)], []
    for tag, group in groups:
        parts.append(f"<{tag}>" if tag else "")
        for cells in group:
            rows.append(" ".join(text for _, text in cells if text))
            if cells:
                parts.extend(("<tr>", "".join(markup(cell, text) for cell, text in cells), "</tr>"))
        parts.append(f"</{tag}>" if tag else "")
    if not " ".join(rows).strip():
        return
    parts.append("</table>")
    yield Table(" ".join(captions + rows).strip(), metadata=ElementMetadata(text_as_html="".join(parts)))
