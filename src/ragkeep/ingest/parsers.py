"""Turn uploaded bytes into plain text for chunking and embedding.

Every failure is a :class:`DocumentParseError` or :class:`UnsupportedDocumentType` (both
``ValueError``) whose message is shown to the API user as a 4xx detail, so it says what was
wrong with the file and what would be accepted. Parsers of binary formats catch every
exception: a corrupted upload must be the uploader's error, never a 500.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, cast

import docx
from bs4 import BeautifulSoup, CData, Tag, UnicodeDammit
from bs4.element import NavigableString, PreformattedString
from docx.text.paragraph import Paragraph
from lxml import etree
from pypdf import PdfReader
from pypdf.errors import DependencyError

from ragkeep.filetypes import SUPPORTED_TYPES, UnsupportedDocumentType, detect_type

__all__ = [
    "DEFAULT_LIMITS",
    "SUPPORTED_TYPES",
    "DocumentParseError",
    "ParseLimitExceeded",
    "ParseLimits",
    "ParsedDocument",
    "UnsupportedDocumentType",
    "detect_type",
    "parse_document",
]

_MAX_TITLE = 300
_MAX_DETAIL = 200


class DocumentParseError(ValueError):
    """The file claims a supported type but its content cannot be turned into text (HTTP 400/422)."""


class ParseLimitExceeded(DocumentParseError):
    """The file is beyond a parsing limit (size once decompressed, elements, pages, time, memory)."""


@dataclass(frozen=True)
class ParseLimits:
    """What one parse may cost; the message of a refusal names the setting ([ingestion])."""

    #: Bytes a .docx's zip members may inflate to, all together.
    max_decompressed_bytes: int = 256 * 1024 * 1024
    #: XML/HTML elements, JSON values or CSV rows in one document.
    max_elements: int = 1_000_000
    #: Pages of a PDF.
    max_pages: int = 5_000


DEFAULT_LIMITS = ParseLimits()


def _over(what: str, limit: int, setting: str) -> ParseLimitExceeded:
    return ParseLimitExceeded(
        f"the document exceeds the limit on {what} ({limit:,}{' bytes' if 'size' in what else ''}; "
        f"setting ingestion.{setting}); "
        "split it into smaller documents"
    )


@dataclass(frozen=True)
class ParsedDocument:
    """Normalised text ready for :func:`~ragkeep.ingest.chunking.chunk_text`.

    ``title`` is None only when the file has no heading or metadata title and no name.
    """

    text: str
    document_type: str
    title: str | None


def _stem(filename: str | None) -> str | None:
    if not filename:
        return None
    return PurePosixPath(filename.replace("\\", "/")).stem or None


# --- normalisation ------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n\n\n+")  # a literal prefix: much faster to find than \n{3,}
_SPACE_RUN = re.compile(r"\s+")


def _normalise(text: str) -> str:
    """Make text storable and chunkable.

    PostgreSQL ``text`` rejects NUL, and lone surrogates (e.g. from a JSON ``"\\ud800"``)
    cannot be encoded as UTF-8; a single blank line is all the paragraph signal the chunker
    needs, so longer runs are noise.
    """
    text = text.replace("\x00", "")
    text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Per line rather than with [^\S\n]+$, which rescans a long run of spaces that is not at
    # a line end from each of its characters: quadratic time on a hostile file.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip()


def _clean_title(title: object) -> str | None:
    if not isinstance(title, str):
        return None
    title = _SPACE_RUN.sub(" ", _SURROGATE.sub("\ufffd", title.replace("\x00", ""))).strip()
    return title[:_MAX_TITLE].rstrip() or None


def _detail(exc: BaseException) -> str:
    detail = str(exc).strip() or type(exc).__name__
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 3] + "..."


# --- text ---------------------------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def _decode(data: bytes) -> str:
    """UTF-8, or UTF-16/32 when a byte-order mark says so; anything else is refused.

    Guessing a legacy code page would silently store mojibake that no search can find.
    """
    bom, encoding = next(((b, e) for b, e in _BOMS if data.startswith(b)), (b"", "utf-8"))
    try:
        text = data[len(bom) :].decode(encoding)
    except UnicodeDecodeError as e:
        offset = len(bom) + e.start
        name = encoding.upper().removesuffix("-LE").removesuffix("-BE")
        raise DocumentParseError(
            f"the file is not valid {name} text (invalid byte 0x{data[offset]:02x} at offset "
            f"{offset}); save it as UTF-8 (or UTF-16 with a byte-order mark) and upload it again"
        ) from None
    if (nul := text.find("\x00")) >= 0:
        # Text has no NUL; one means a binary file, or UTF-16 without its byte-order mark.
        where = f"byte offset {nul}" if not bom else f"character {nul}"
        raise DocumentParseError(
            f"the file is not text: it contains a NUL character (at {where}); upload text as UTF-8 "
            "(UTF-16 needs a byte-order mark), or a binary document as .pdf or .docx"
        )
    return text


_ATX_HEADING = re.compile(r" {0,3}#{1,6}[ \t]+(.*)")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _markdown_title(text: str) -> str | None:
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := _ATX_HEADING.match(line)):
            heading = m.group(1).rstrip()
            closed = heading.rstrip("#")  # an optional closing sequence: "## Title ##"
            if closed != heading and (not closed or closed[-1] in " \t"):
                heading = closed.rstrip()
            if heading:
                return heading
    return None


def _parse_txt(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    return _decode(data), None


def _parse_md(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    text = _decode(data)
    return text, _markdown_title(text)


# --- html ---------------------------------------------------------------------------------

# Private-use sentinels for breaks, stripped from the input first. <br> is kept apart from
# the edges of line-level tags: two <br> in a row mean a blank line, </li><li> does not.
_PARA = "\ue000"
_LINE = "\ue001"
_BR = "\ue002"
_SENTINELS = re.compile("[\ue000-\ue002]")
_DROP_TAGS = frozenset({
    "script", "style", "nav", "noscript", "template", "svg", "iframe",
    "object", "embed", "canvas", "title", "meta", "link", "base",
})  # fmt: skip
_BLOCK_TAGS = [
    "address", "article", "aside", "blockquote", "body", "caption", "details", "dialog",
    "div", "dl", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hgroup", "hr", "html", "main", "ol", "p", "pre",
    "section", "summary", "table", "ul",
]  # fmt: skip
#: What a tag puts around its text; a space keeps adjacent table cells' words apart.
_TAG_BREAKS = (
    dict.fromkeys(_BLOCK_TAGS, _PARA)
    | dict.fromkeys(["li", "dt", "dd", "tr", "option"], _LINE)
    | {"td": " ", "th": " "}
)
_PRE_TAGS = ("pre", "textarea")  # their line breaks are content
_SPACES = re.compile(" {2,}")
_SENTINEL_RUN = re.compile("[ \ue000-\ue002]*[\ue000-\ue002][ \ue000-\ue002]*")


def _html_breaks(match: re.Match[str]) -> str:
    run = match.group()
    return "\n\n" if _PARA in run or run.count(_BR) > 1 else "\n"


def _html_text(root: Any, max_elements: int) -> str:
    """Visible text with block structure, in one pass over the tree.

    Iterative, and without modifying the tree: BeautifulSoup's insert/decompose are linear
    in the number of siblings or descendants, which makes them quadratic on large pages.
    """
    out: list[str] = []
    in_pre = 0
    stack: list[tuple[Any, str | None]] = [(root, None)]
    seen = 0
    while stack:
        node, closing = stack.pop()
        seen += 1
        if seen > 2 * max_elements:  # each tag is visited twice (in and out) plus its strings
            raise _over("elements", max_elements, "max_elements")
        if closing is not None:  # leaving a tag
            out.append(closing)
            if node.name in _PRE_TAGS:
                in_pre -= 1
        elif isinstance(node, Tag):
            if node.name in _DROP_TAGS:
                continue
            if node.name == "br":
                out.append(_BR)
                continue
            brk = _TAG_BREAKS.get(node.name)
            if brk is not None and brk != " ":
                out.append(brk)
            if node.name in _PRE_TAGS:
                in_pre += 1
            if brk is not None or node.name in _PRE_TAGS:
                stack.append((node, brk or ""))
            stack.extend((child, None) for child in reversed(node.contents))
        elif isinstance(node, NavigableString) and (
            not isinstance(node, PreformattedString) or isinstance(node, CData)
        ):  # not a comment, doctype, declaration or processing instruction
            text = str(node)
            out.append(_SPACE_RUN.sub(" ", text.replace("\n", _BR) if in_pre else text))
    # Spaces first: a long run of them before no sentinel would make the next regex quadratic.
    return _SENTINEL_RUN.sub(_html_breaks, _SPACES.sub(" ", "".join(out)))


#: C0 control bytes that text never holds (tab, line feed, vertical tab, form feed, carriage
#: return and escape are left out: old pages and logs do carry them).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27))


def _looks_binary(data: bytes) -> bool:
    """More than 1 % control bytes in the first 64 KiB: random or compressed bytes have ~19 %,
    text in a legacy code page none (these bytes are not printable in any of them)."""
    head = data[:65536]
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return controls * 100 > len(head)


def _parse_html(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    try:
        markup = _decode(data)
    except DocumentParseError:
        if b"\x00" in data or _looks_binary(data):
            raise DocumentParseError(
                "the file is not HTML: its content is binary (it is not text in any encoding); "
                "upload HTML as text, or a binary document as .pdf or .docx"
            ) from None
        # Legacy pages declare their charset in <meta>; UnicodeDammit honours it and
        # otherwise falls back to windows-1252, as browsers do.
        guessed = UnicodeDammit(data, is_html=True).unicode_markup
        if guessed is None:
            raise
        markup = guessed
    try:
        # lxml, not html.parser: the standard library's parser is quadratic on some malformed
        # input (repeated "</": 4.5 s for 80 KB on Python 3.11.7), an easy way to stall a worker.
        soup = BeautifulSoup(_SENTINELS.sub("", markup), "lxml")
        title = soup.title.get_text() if soup.title else None
        if not _clean_title(title):
            heading = soup.find(["h1", "h2", "h3", "h4", "h5", "h6"])
            title = heading.get_text(" ") if heading else None
        return _html_text(soup, limits.max_elements), title
    except DocumentParseError:
        raise
    except Exception as e:  # the parser is lenient; this is for pathological input
        raise DocumentParseError(f"the HTML could not be parsed: {_detail(e)}") from e


# --- json ---------------------------------------------------------------------------------


def _json_scalar(value: Any) -> str:
    return value.strip() if isinstance(value, str) else json.dumps(value)


def _json_lines(path: str, value: Any, budget: list[int]) -> Iterator[str]:
    """Depth-first ``path: value`` lines; iterative, so deep nesting cannot overflow the stack.

    ``budget`` is ``[values left, limit]`` across the document (ingestion.max_elements)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        key, item = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise _over("JSON values", budget[1], "max_elements")
        if isinstance(item, dict):
            stack.extend(reversed([(f"{key}.{k}" if key else str(k), v) for k, v in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{key}[{i}]", v) for i, v in enumerate(item)]))
        elif key:
            yield f"{key}: {_json_scalar(item)}"
        else:
            yield _json_scalar(item)


def _parse_json(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    text = _decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DocumentParseError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise DocumentParseError("invalid JSON: nested too deeply to read") from None
    except ValueError as e:  # e.g. an integer with more digits than Python will convert
        raise DocumentParseError(f"invalid JSON: {_detail(e)}") from None

    if isinstance(value, dict):
        entries: list[tuple[str, Any]] = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        entries = [(f"[{i}]", v) for i, v in enumerate(value)]
    else:
        entries = [("", value)]
    # Each top-level record or object becomes its own paragraph so the chunker keeps it whole.
    paragraphs: list[str] = []
    scalars: list[str] = []
    budget = [limits.max_elements, limits.max_elements]
    for key, item in entries:
        lines = list(_json_lines(key, item, budget))
        if isinstance(item, dict | list):
            if scalars:
                paragraphs.append("\n".join(scalars))
                scalars = []
            if lines:
                paragraphs.append("\n".join(lines))
        else:
            scalars.extend(lines)
    if scalars:
        paragraphs.append("\n".join(scalars))
    title = value.get("title") if isinstance(value, dict) else None
    return "\n\n".join(paragraphs), title if isinstance(title, str) else None


# --- csv / tsv ----------------------------------------------------------------------------


def _parse_table(data: bytes, delimiter: str, limits: ParseLimits) -> tuple[str, str | None]:
    """One paragraph of ``column: value`` lines per row, so every value keeps its meaning."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[str] = []
    try:
        for row in reader:
            if reader.line_num > limits.max_elements:
                raise _over("rows", limits.max_elements, "max_elements")
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() or f"column {i + 1}" for i, cell in enumerate(row)]
                continue
            names = header + [f"column {i + 1}" for i in range(len(header), len(row))]
            lines = [f"{name}: {cell.strip()}" for name, cell in zip(names, row, strict=False) if cell.strip()]
            rows.append("\n".join(lines))
    except csv.Error as e:
        raise DocumentParseError(f"invalid CSV at line {reader.line_num}: {_detail(e)}") from None
    if header is not None and not rows:
        rows.append(" ".join(header))  # a header-only file is still text
    return "\n\n".join(rows), None


def _parse_csv(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    return _parse_table(data, ",", limits)


def _parse_tsv(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    return _parse_table(data, "\t", limits)


# --- pdf ----------------------------------------------------------------------------------


def _pdf_dependency(e: DependencyError) -> DocumentParseError:
    # pypdf decrypts RC4 by itself but needs the `cryptography` package for AES, which for
    # AES-128 it reaches only when the first string is decrypted, i.e. while extracting text.
    if "AES" in str(e):
        return DocumentParseError(
            "the PDF is encrypted with AES, which this server cannot decrypt; "
            "remove the encryption and upload it again"
        )
    return DocumentParseError(f"the PDF uses a feature this server cannot read: {_detail(e)}")


def _parse_pdf(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    try:
        reader = PdfReader(io.BytesIO(data))
        # Owner-only protection (printing, copying...) opens with the empty user password.
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentParseError(
                "the PDF is password-protected; remove the password and upload it again"
            )
        if len(reader.pages) > limits.max_pages:
            raise _over("pages", limits.max_pages, "max_pages")
        pages = list(reader.pages)
    except DocumentParseError:
        raise
    except DependencyError as e:
        raise _pdf_dependency(e) from None
    except Exception as e:
        raise DocumentParseError(
            f"the file could not be read as a PDF (it may be corrupted or not a PDF): {_detail(e)}"
        ) from e

    texts = []
    for number, page in enumerate(pages, 1):
        try:
            texts.append((page.extract_text() or "").strip())
        except DependencyError as e:
            raise _pdf_dependency(e) from None
        except Exception as e:
            raise DocumentParseError(
                f"page {number} of the PDF could not be read (it may be corrupted): {_detail(e)}"
            ) from e
    text = "\n\n".join(t for t in texts if t)
    if not _normalise(text):
        raise DocumentParseError(
            "the PDF contains no extractable text; it may consist of scanned images, "
            "and OCR is not supported"
        )
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a broken info dictionary must not lose an otherwise readable PDF
        title = None
    return text, title


# --- docx ---------------------------------------------------------------------------------


def _docx_blocks(container: Any, title: list[str], style_names: dict[str, str]) -> Iterator[str]:
    """Paragraphs and table rows in document order (headers, footers and text boxes are skipped)."""
    for item in container.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            if not title:
                # The style id from the XML, named by a map made once: Paragraph.style resolves
                # the default style by scanning every style, 2 ms a paragraph (minutes for a
                # long document with no heading).
                style = style_names.get(item._p.style or "", "")
                if style == "Title" or style.startswith("Heading"):
                    title.append(text)
            yield text
            continue
        for row in item.rows:
            seen: set[int] = set()
            cells = []
            for cell in row.cells:  # a merged cell is repeated once per grid column it spans
                if id(cell._tc) in seen:
                    continue
                seen.add(id(cell._tc))
                if cell_text := "\n".join(_docx_blocks(cell, title, style_names)).strip():
                    cells.append(cell_text)
            if cells:
                yield " | ".join(cells)


class _ElementCounter:
    """An lxml parser target that counts start tags and builds nothing."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def start(self, tag: str, attrib: Any) -> None:
        self.count += 1
        if self.count > self.limit:
            raise _over("XML elements", self.limit, "max_elements")

    def close(self) -> int:
        return self.count


def _check_docx_zip(data: bytes, limits: ParseLimits) -> None:
    """Refuse a zip bomb before python-docx inflates every part into memory: the sizes the
    central directory declares, then the bytes actually inflated, streamed and counted (a
    header can lie), with the main document's elements counted on the way (no tree built)."""
    cap = limits.max_decompressed_bytes
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise DocumentParseError(
            "the file is not a valid .docx document (it may be corrupted, or a legacy .doc, "
            f"which is not supported): {_detail(e)}"
        ) from e
    with archive:
        members = archive.infolist()
        if sum(m.file_size for m in members) > cap:
            raise _over("decompressed size", cap, "max_decompressed_bytes")
        inflated = 0
        for member in members:
            counter = None
            if member.filename == "word/document.xml":
                # lxml calls only the callbacks a target has (here start and close); the stubs'
                # protocol lists all five.
                target = cast("etree.ParserTarget", _ElementCounter(limits.max_elements))
                counter = etree.XMLParser(target=target, resolve_entities=False)
            try:
                with archive.open(member) as stream:
                    while block := stream.read(1 << 20):
                        inflated += len(block)
                        if inflated > cap:
                            raise _over("decompressed size", cap, "max_decompressed_bytes")
                        if counter is not None:
                            counter.feed(block)
                if counter is not None:
                    counter.close()
            except ParseLimitExceeded:
                raise
            except Exception as e:  # bad CRC, unsupported compression, broken XML
                raise DocumentParseError(
                    f"the .docx document could not be read (it may be corrupted): {member.filename}: {_detail(e)}"
                ) from e


def _parse_docx(data: bytes, limits: ParseLimits) -> tuple[str, str | None]:
    _check_docx_zip(data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:
        raise DocumentParseError(
            "the file is not a valid .docx document (it may be corrupted, or a legacy .doc, "
            f"which is not supported): {_detail(e)}"
        ) from e
    heading: list[str] = []
    try:
        style_names = {s.style_id: s.name or "" for s in document.styles if s.style_id}
        text = "\n\n".join(_docx_blocks(document, heading, style_names))
    except Exception as e:
        raise DocumentParseError(
            f"the .docx document could not be read (it may be corrupted): {_detail(e)}"
        ) from e
    try:
        metadata_title = document.core_properties.title
    except Exception:
        metadata_title = None
    return text, heading[0] if heading else metadata_title


_PARSERS: dict[str, Callable[[bytes, ParseLimits], tuple[str, str | None]]] = {
    "txt": _parse_txt,
    "md": _parse_md,
    "html": _parse_html,
    "htm": _parse_html,
    "json": _parse_json,
    "csv": _parse_csv,
    "tsv": _parse_tsv,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
}


def parse_document(
    data: bytes, filename: str | None = None, content_type: str | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedDocument:
    """Detect the type, extract normalised text and a title (heading, metadata or file name).

    Raises :class:`UnsupportedDocumentType` or :class:`DocumentParseError` (:class:`ParseLimitExceeded`
    beyond ``limits``). Time and memory are bounded by the caller: the server parses in a worker
    process (:mod:`ragkeep.ingest.isolation`).
    """
    document_type = detect_type(filename, content_type)
    if not data:
        raise DocumentParseError("document contains no text (the file is empty)")
    raw, title = _PARSERS[document_type](data, limits)
    text = _normalise(raw)
    if not text:
        raise DocumentParseError("document contains no text")
    title = _clean_title(title) or _clean_title(_stem(filename))
    return ParsedDocument(text=text, document_type=document_type, title=title)
