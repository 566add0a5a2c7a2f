"""reStructuredText read with docutils (its reference parser) into the elements rag.ingest.text gives Markdown.

Why: unstructured reads .rst by running pandoc in a subprocess to make HTML, then its HTML partitioner
with a sentence model per paragraph: ~1 s per PEP on a quiet machine, more than embedding its chunks
(bench/rst.py). docutils parses it in-process, in a few tens of milliseconds.

The elements are those of the Markdown reader and of pandoc + unstructured, so chunks and sections stay
what they were: section titles are ``Title`` with ``category_depth`` (the outermost section 0, as pandoc's
h1), list items, definitions, fields and footnotes ``ListItem`` with their list depth, literal and doctest
blocks ``CodeSnippet`` (whitespace kept), tables ``Table`` with ``text_as_html``, paragraphs
``NarrativeText`` or ``Text`` by their shape, images ``Image``. Admonitions give their label ("Note", or
their title) as a paragraph before their body.

Documents are untrusted: docutils reads no other file and no URL (``include``, ``raw``, ``csv-table
:file:`` and the like are refused), reads no configuration file, and writes no report anywhere. What it
does not know is kept as text rather than failing the document: Sphinx's and extensions' directives keep
their arguments and content (``code-block`` is a code block; ``toctree`` and ``literalinclude``, which
only point at other files, are dropped), their roles their text as Sphinx shows it (``:meth:`~a.b``` is
``b``), and markup docutils cannot parse (an inconsistent title level, a malformed table) its source text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from docutils import frontend, nodes, utils
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, Parser, directives, roles
from docutils.parsers.rst.languages import en
from unstructured.documents.elements import CodeSnippet, Element, ElementMetadata, Image, ListItem, Title
from unstructured.file_utils.model import FileType
from unstructured.partition.common.metadata import apply_metadata

from rag.errors import DocumentError
from rag.ingest.text import TableRows, paragraph_elements, read_text_file, table_elements

_SETTINGS = {
    # Hostile documents: no other file, URL or raw output is read or passed through.
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "_disable_config": True,  # no docutils.conf from the working directory, the home or DOCUTILSCONFIG
    # Errors and worse stay in the tree (their source text is kept); nothing is written out, nothing halts,
    # and an exception is raised rather than turned into sys.exit.
    "report_level": 3,
    "halt_level": 5,
    "warning_stream": False,
    "traceback": True,
    # The document as written: sections keep their levels (pandoc's h1 is the outermost section), a
    # leading field list stays text, quotes stay as typed, code is not tokenised for highlighting.
    "doctitle_xform": False,
    "docinfo_xform": False,
    "sectsubtitle_xform": False,
    "smart_quotes": False,
    "syntax_highlight": "none",
}
# Message level of an error: a construct docutils could not parse, whose source text it keeps.
_ERROR = 3
# Lists whose items are ListItems, nested as Markdown's ul/ol/dl are.
_LISTS = (nodes.bullet_list, nodes.enumerated_list, nodes.definition_list, nodes.field_list, nodes.option_list)
# Nothing of these is text: link targets, substitution definitions, comments, unresolved transforms.
_SKIPPED = (nodes.target, nodes.substitution_definition, nodes.comment, nodes.pending, nodes.raw,
            nodes.transition, nodes.decoration, nodes.colspec, nodes.label)
_DIRECTIVE_NAME = re.compile(r"^[ \t]*\.\.[ \t]+([A-Za-z0-9][\w:.+-]*?)[ \t]*::", re.M)
_ROLE_NAME = re.compile(r"(?<![\w`\\]):([A-Za-z0-9][\w.+-]*(?::[A-Za-z0-9][\w.+-]*)*):`")
# Sphinx's version directives, shown as "Added in version 3.12: ..." as Sphinx shows them.
_VERSION_LABELS = {"versionadded": "Added in version", "versionchanged": "Changed in version",
                   "deprecated": "Deprecated since version", "versionremoved": "Removed in version"}


def partition_rst(text: str, *, filename: str | None = None,
                  metadata_last_modified: str | None = None) -> list[Element]:
    """reStructuredText as elements: section titles Title (with depth), list items, definitions and fields
    ListItem, literal blocks CodeSnippet, tables Table, paragraphs NarrativeText or Text; languages
    ``["eng"]``.

    Raises:
        DocumentError: docutils failed on the document (nested past Python's recursion limit, or a
            docutils bug); the reason says where to look.
    """
    return _rst_elements(text, filename=filename, languages=["eng"], metadata_last_modified=metadata_last_modified)


@apply_metadata(FileType.RST)
def _rst_elements(text: str, *, filename: str | None, languages: list[str],
                  metadata_last_modified: str | None) -> list[Element]:
    if not text.strip():
        return []
    _know_extensions(text)
    try:
        return list(_Walker().blocks(publish_doctree(text, settings_overrides=_SETTINGS), lists=0))
    except RecursionError:
        raise DocumentError("parse", "reStructuredText nested too deeply for docutils (indentation or lists "
                            "hundreds of levels deep); not indexed: fix the markup or exclude the file") from None
    except Exception as exc:  # docutils' own failures on a document are this document's
        raise DocumentError("parse", f"not readable as reStructuredText "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); not indexed: "
                            "check the markup, or set pipeline.text_parser: unstructured") from None


# -- the document tree as elements ----------------------------------------------------------------------


class _Walker:
    """Elements of a docutils document tree in document order."""

    def blocks(self, node: nodes.Element, lists: int) -> Iterator[Element]:
        for child in node.children:
            yield from self.block(child, lists)

    def block(self, node: nodes.Node, lists: int) -> Iterator[Element]:
        """The elements of one body node; ``lists`` is how many lists it is inside."""
        if isinstance(node, nodes.Text):
            yield from paragraph_elements(node.astext())
        elif isinstance(node, _SKIPPED):
            return
        elif isinstance(node, nodes.section):
            if "system-messages" not in node["classes"]:  # docutils' own appendix of messages
                yield from self.blocks(node, lists)
        elif isinstance(node, nodes.title) and isinstance(node.parent, nodes.section):
            text = _collapse(_inline(node))
            if text:
                depth = sum(1 for _ in _ancestors(node, nodes.section)) - 1
                yield Title(text, metadata=ElementMetadata(category_depth=depth))
        elif isinstance(node, (nodes.paragraph, nodes.title, nodes.subtitle, nodes.rubric, nodes.caption,
                               nodes.attribution, nodes.term, nodes.math_block)):
            yield from paragraph_elements(_inline(node))
        elif isinstance(node, nodes.line_block):
            yield from paragraph_elements(node.astext())
        elif isinstance(node, (nodes.literal_block, nodes.doctest_block)):
            code = node.astext()
            if code.strip():
                yield CodeSnippet(code)
        elif isinstance(node, (nodes.bullet_list, nodes.enumerated_list)):
            for item in node.children:
                yield from self.item(item, lists + 1)
        elif isinstance(node, nodes.definition_list):
            yield from self.definitions(node, lists + 1)
        elif isinstance(node, nodes.field_list):
            for field in node.children:  # field_name, field_body
                name, body = _collapse(_inline(field[0])), field[1]
                if body.astext().strip():  # ":orphan:" and the like are flags, not text
                    yield from self.item(body, lists + 1, lead=f"{name}: ")
        elif isinstance(node, nodes.option_list):
            for item in node.children:  # option_group, description
                yield from self.item(item[1], lists + 1, lead=f"{_options(item[0])}: ")
        elif isinstance(node, (nodes.footnote, nodes.citation)):
            label = node[0].astext() if node.children and isinstance(node[0], nodes.label) else ""
            yield from self.item(node, lists + 1, lead=f"[{label}] " if label else "")
        elif isinstance(node, nodes.Admonition):
            yield from self.admonition(node, lists)
        elif isinstance(node, nodes.table):
            yield from _table(node)
        elif isinstance(node, nodes.image):
            if node.get("uri"):
                yield Image(text=node.get("alt", ""), metadata=ElementMetadata(image_url=node["uri"]))
        elif isinstance(node, nodes.topic) and "contents" in node["classes"]:
            return  # a table of contents: the section titles again
        elif isinstance(node, nodes.system_message):
            if node["level"] >= _ERROR:  # markup docutils could not parse: its source text, not the complaint
                for source in node.findall(nodes.literal_block):
                    yield from self.block(source, lists)
        elif isinstance(node, nodes.Element):  # block quotes, topics, sidebars, figures, containers...
            yield from self.blocks(node, lists)

    def item(self, node: nodes.Element, lists: int, lead: str = "") -> Iterator[Element]:
        """A list item (or definition, field body, footnote): its first paragraph, with ``lead`` before
        it, is a ListItem at depth ``lists``; the blocks after it are walked as they are."""
        children = [child for child in node.children if not isinstance(child, nodes.label)]
        rest = children
        if children and isinstance(children[0], nodes.paragraph):
            text, rest = _collapse(lead + _inline(children[0])), children[1:]
        else:
            text = _collapse(lead).removesuffix(":")
        if text:
            yield ListItem(text, metadata=ElementMetadata(category_depth=lists))
        for child in rest:
            yield from self.block(child, lists)

    def definitions(self, node: nodes.definition_list, lists: int) -> Iterator[Element]:
        for entry in node.children:  # term, classifier..., definition
            term = " : ".join(_collapse(_inline(part)) for part in entry.children
                              if isinstance(part, (nodes.term, nodes.classifier)))
            yield from paragraph_elements(term)
            for definition in entry.children:
                if isinstance(definition, nodes.definition):
                    yield from self.item(definition, lists)

    def admonition(self, node: nodes.Element, lists: int) -> Iterator[Element]:
        """Its label ("Note", or a generic admonition's title) as a paragraph, then its body."""
        title = next((child for child in node.children if isinstance(child, nodes.title)), None)
        label = _collapse(_inline(title)) if title is not None else node.tagname.capitalize()
        yield from paragraph_elements(label)
        for child in node.children:
            if child is not title:
                yield from self.block(child, lists)


def _table(node: nodes.table) -> Iterator[Element]:
    captions = [_collapse(_inline(child)) for child in node.children if isinstance(child, nodes.title)]
    groups: list[tuple[str | None, TableRows]] = []
    for tgroup in (child for child in node.children if isinstance(child, nodes.tgroup)):
        for part in tgroup.children:
            if isinstance(part, (nodes.thead, nodes.tbody)):
                cell = "th" if isinstance(part, nodes.thead) else "td"
                groups.append((part.tagname, [[(cell, _collapse(entry.astext())) for entry in row.children]
                                              for row in part.children]))
    yield from table_elements(captions, groups)


def _inline(node: nodes.Element) -> str:
    """The text of inline markup as shown: footnote references as ``[1]``, no images or messages."""
    parts: list[str] = []
    for child in node.children:
        if isinstance(child, nodes.Text):
            parts.append(child.astext())
        elif isinstance(child, (nodes.footnote_reference, nodes.citation_reference)):
            parts.append(f"[{child.astext()}]")
        elif isinstance(child, (nodes.image, nodes.system_message, nodes.raw, nodes.substitution_definition)):
            continue
        elif isinstance(child, nodes.Element):
            parts.append(_inline(child))
    return "".join(parts)


def _options(group: nodes.Element) -> str:
    """``-o FILE, --output=FILE`` of an option list's option group."""
    shown = []
    for option in group.children:
        text = ""
        for part in option.children:
            delimiter = part.get("delimiter", "") if isinstance(part, nodes.option_argument) else ""
            text += delimiter + part.astext()
        shown.append(text)
    return ", ".join(shown)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _ancestors(node: nodes.Node, kind: type[nodes.Node]) -> Iterator[nodes.Node]:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, kind):
            yield parent
        parent = parent.parent


# -- what docutils does not know: Sphinx's and extensions' directives and roles --------------------------


class _AnyOptions(dict):
    """Every option is accepted, as text: an option docutils does not know fails the whole directive."""

    def __missing__(self, key: str):
        return directives.unchanged


class _Lenient(Directive):
    """A directive taking any argument, options and content, as Sphinx's and extensions' directives do."""

    optional_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = _AnyOptions()


class _Kept(_Lenient):
    """A directive docutils does not know (Sphinx's, an extension's): its arguments and content as text."""

    def run(self) -> list[nodes.Node]:
        container = nodes.container()
        label = _VERSION_LABELS.get(self.name.lower())
        argument = " ".join(self.arguments)
        if label:  # "3.12 what changed" (Sphinx's second argument) -> "Changed in version 3.12: what changed"
            version, *change = argument.split(None, 1) or [""]
            argument = " ".join([f"{label} {version}".strip() + ":", *change])
        if argument:
            inline, messages = self.state.inline_text(argument, self.lineno)
            container += nodes.paragraph(argument, "", *inline, *messages)
        if self.content:
            self.state.nested_parse(self.content, self.content_offset, container)
        if label and len(container) > 1 and isinstance(container[1], nodes.paragraph):
            # "Added in version 3.12: what was added", in one paragraph as Sphinx shows it
            container[0] += [nodes.Text(" "), *container[1].children]
            del container[1]
        return [container]


class _Code(_Lenient):
    """Sphinx's ``code-block`` and its kind: a literal block of its content, whatever its options."""

    def run(self) -> list[nodes.Node]:
        code = "\n".join(self.content)
        return [nodes.literal_block(code, code)] if code.strip() else []


class _Dropped(_Lenient):
    """Directives that read other files (refused: a document must not pull a file of this machine into
    the index) or that only point at other documents or set rendering options."""

    def run(self) -> list[nodes.Node]:
        return []


_OWN_DIRECTIVES = {
    **dict.fromkeys(("include", "literalinclude", "raw", "toctree", "highlight", "index", "tabularcolumns",
                     "sectionauthor", "moduleauthor", "codeauthor", "currentmodule"), _Dropped),
    **dict.fromkeys(("code-block", "sourcecode", "doctest", "testcode", "testoutput", "testsetup",
                     "testcleanup", "ipython", "jupyter-execute", "prompt", "productionlist", "graphviz",
                     "digraph", "graph", "mermaid", "plantuml"), _Code),
    **dict.fromkeys(_VERSION_LABELS, _Kept),
}
_known: set[str] = set()  # directive and role names already looked up (and registered if unknown)


def _sphinx_role(name: str, rawtext: str, text: str, lineno: int, inliner, options=None, content=None):
    """Any role docutils does not know, shown as Sphinx shows a cross-reference: ``title <target>`` is
    ``title``, ``~a.b.c`` is ``c``, a leading ``!`` goes."""
    shown = utils.unescape(text)
    explicit = re.fullmatch(r"(?s)(.*?\S)\s*<([^<>]*)>", shown)
    if explicit:
        shown = explicit.group(1)
    else:
        shown = shown.lstrip("!")
        if shown.startswith("~"):
            shown = shown[1:].rsplit(".", 1)[-1]
    return [nodes.literal(rawtext, shown)], []


def _numbered_role(prefix: str):
    """``:pep:``/``:rfc:`` as Sphinx reads them: ``8``, ``8#anchor`` or ``title <8#anchor>`` (docutils
    takes a bare number only)."""

    def role(name: str, rawtext: str, text: str, lineno: int, inliner, options=None, content=None):
        shown = utils.unescape(text)
        explicit = re.fullmatch(r"(?s)(.*?\S)\s*<([^<>]*)>", shown)
        if explicit:
            shown = explicit.group(1)
        else:
            shown = f"{prefix} {shown.split('#', 1)[0].strip()}"
        return [nodes.inline(rawtext, shown)], []

    return role


def _know_extensions(text: str) -> None:
    """Register what docutils lacks for the directives and roles this document names, before parsing it.

    docutils fails an unknown directive or role (dropping its content, or showing its markup): this
    registers Sphinx's common ones and a catch-all for the rest, each once per process. It changes
    docutils' registry for the whole process, which only this reader uses.
    """
    if not _known:
        for name, directive in _OWN_DIRECTIVES.items():
            directives.register_directive(name, directive)
        roles.register_local_role("pep", _numbered_role("PEP"))
        roles.register_local_role("rfc", _numbered_role("RFC"))
        _known.update(_OWN_DIRECTIVES)
        _known.update(("pep", "rfc"))
    names = {name.lower() for name in _DIRECTIVE_NAME.findall(text)} - _known
    role_names = {name.lower() for name in _ROLE_NAME.findall(text)} - _known
    if not names and not role_names:
        return
    probe = utils.new_document("<probe>", frontend.get_default_settings(Parser))
    probe.reporter.stream = False
    for name in names:
        if directives.directive(name, en, probe)[0] is None:
            directives.register_directive(name, _Kept)
    for name in role_names:
        if roles.role(name, en, 0, probe.reporter)[0] is None:
            roles.register_local_role(name, _sphinx_role)
    _known.update(names | role_names)


def parse_rst_file(path: Path) -> list[Element]:
    """The elements of a .rst file, decoded as ``rag.ingest.text`` decodes text, with unstructured's metadata.

    Raises:
        UnprocessableEntityError: the bytes decode in no known encoding (not text).
    """
    text, modified = read_text_file(path)
    return partition_rst(text, filename=str(path), metadata_last_modified=modified)
