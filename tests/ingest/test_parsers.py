"""Parsing every supported file type, and the errors users see for bad files.

Fixtures are built inside the tests from real text nobody here wrote: the Python language
reference topics shipped in the standard library (``pydoc_data.topics``) and the licence
texts Debian installs under /usr/share/common-licenses (topics stand in when those are
missing). PDFs are made with fpdf2 and Word files with python-docx.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import json
import re
from pathlib import Path
from pydoc_data.topics import topics

import docx
import pytest
from fpdf import FPDF

from ragkeep.ingest.parsers import (
    SUPPORTED_TYPES,
    DocumentParseError,
    ParsedDocument,
    UnsupportedDocumentType,
    detect_type,
    parse_document,
)

LICENCE_DIR = Path("/usr/share/common-licenses")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def licence(name: str) -> str:
    path = LICENCE_DIR / name
    return path.read_text(encoding="utf-8") if path.is_file() else topics["execmodel"]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs with their whitespace collapsed, as HTML renders them."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def normalised(text: str) -> str:
    """What the parser promises for plain text, computed independently."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\x00", "").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip()


def words(text: str) -> list[str]:
    return text.split()


_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def latin1(text: str) -> str:
    """What fpdf2's core fonts can draw (the licences are ASCII; the fallback topics are not)."""
    return text.translate(_TYPOGRAPHIC).encode("latin-1", "replace").decode("latin-1")


GPL = licence("GPL-3")
MPL = licence("MPL-2.0")
APACHE = licence("Apache-2.0")
# The topics contain curly quotes, dashes, "°" and "ß": real text beyond ASCII.
UNICODE_TOPIC = next(t for t in topics.values() if "\u201c" in t and "\u2014" in t)


# --- fixture builders ---------------------------------------------------------------------


def make_pdf(paras: list[str], title: str | None = None, unicode_font: bool = False) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.add_page()
    if unicode_font:
        pdf.add_font("DejaVu", fname=str(DEJAVU))
        pdf.set_font("DejaVu", size=10)
    else:
        pdf.set_font("Helvetica", size=10)  # core fonts are latin-1 only
    for p in paras:
        pdf.multi_cell(0, 5, p, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
    return bytes(pdf.output())


def make_docx(heading: str, paras: list[str], rows: list[list[str]], title: str | None = None) -> bytes:
    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading(heading, level=1)
    for p in paras:
        document.add_paragraph(p)
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="{charset}">
  <title>{title}</title>
  <style>body {{ font-family: serif; }} p.note::before {{ content: "styleonlytext"; }}</style>
  <script>window.dataLayer = [{{"event": "scriptonlytext"}}];</script>
</head>
<body>
  <nav><a href="/">navonlytext</a> | <a href="/licenses/">licences</a></nav>
  <h1>{heading}</h1>
  <!-- commentonlytext -->
  {body}
  <noscript>noscriptonlytext</noscript>
  <script src="/analytics.js"></script>
</body>
</html>
"""


def make_html(title: str, heading: str, paras: list[str], charset: str = "utf-8") -> str:
    body = []
    for i, p in enumerate(paras):
        escaped = html.escape(p)
        if i % 3 == 1:  # inline markup must not break words or lines
            first, _, rest = escaped.partition(" ")
            escaped = f"<strong>{first}</strong> <a href='#p{i}'>{rest}</a>" if rest else escaped
        body.append(f"<p class='note'>\n    {escaped}\n  </p>")
    return HTML_TEMPLATE.format(charset=charset, title=title, heading=heading, body="\n  ".join(body))


# --- plain text and markdown ----------------------------------------------------------------


def test_txt_is_decoded_and_normalised() -> None:
    doc = parse_document(GPL.encode(), "GPL-3.txt", "text/plain")
    assert doc == ParsedDocument(text=normalised(GPL), document_type="txt", title="GPL-3")


def test_crlf_and_blank_line_runs_are_normalised() -> None:
    messy = MPL.replace("\n\n", "\n   \n\n\n\n").replace("\n", "\r\n")
    doc = parse_document(messy.encode(), "mpl.txt")
    assert "\r" not in doc.text and "\n\n\n" not in doc.text
    assert doc.text == normalised(MPL)


def test_a_nul_in_text_is_refused_with_its_offset() -> None:
    """Text holds no NUL: one means a binary file (or UTF-16 without a BOM); it used to be dropped silently."""
    with pytest.raises(DocumentParseError, match="NUL character \\(at byte offset 7\\)"):
        parse_document(b"Covered\x00 Software", "mpl.txt")


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_byte_order_marks_select_the_encoding(codec: str) -> None:
    data = UNICODE_TOPIC.encode(codec)
    if codec == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    doc = parse_document(data, "topic.txt")
    assert doc.text == normalised(UNICODE_TOPIC)
    assert not doc.text.startswith("\ufeff")


def test_invalid_utf8_names_the_offset() -> None:
    data = bytearray(GPL.encode())
    data[1234:1234] = b"\xff"
    with pytest.raises(DocumentParseError, match=r"not valid UTF-8 .*0xff at offset 1234"):
        parse_document(bytes(data), "gpl.txt")


def test_invalid_byte_offset_counts_the_byte_order_mark() -> None:
    data = codecs.BOM_UTF8 + GPL.encode()[:500] + b"\xc3(" + GPL.encode()[500:]
    with pytest.raises(DocumentParseError, match=r"invalid byte 0xc3 at offset 503"):
        parse_document(data, "gpl.txt")
    data = UNICODE_TOPIC.encode("utf-16")[:-1]  # an odd number of bytes
    with pytest.raises(DocumentParseError, match=rf"not valid UTF-16 text .* at offset {len(data) - 1}"):
        parse_document(data, "topic.txt")


def test_legacy_code_page_is_refused_not_guessed() -> None:
    data = UNICODE_TOPIC.encode("cp1252", errors="replace")
    with pytest.raises(DocumentParseError, match="UTF-8"):
        parse_document(data, "topic.txt")


def test_markdown_title_is_the_first_heading_outside_code() -> None:
    name = "assert"
    body = topics[name].split("\n", 2)[2]  # drop the reST title and its underline
    text = f"```\n# {topics['for'].splitlines()[0]}\n```\n\n# The {name} statement\n\n{body}"
    doc = parse_document(text.encode(), "README.markdown")
    assert doc.document_type == "md"
    assert doc.title == f"The {name} statement"
    assert doc.text == normalised(text)


# --- html ---------------------------------------------------------------------------------


def test_html_keeps_paragraphs_and_drops_scripts_styles_and_navigation() -> None:
    paras = paragraphs(MPL)
    page = make_html("Mozilla Public License 2.0", paras[0], paras[1:])
    doc = parse_document(page.encode(), "mpl.html", "text/html")
    assert doc.document_type == "html"
    assert doc.title == "Mozilla Public License 2.0"
    markers = ["styleonlytext", "scriptonlytext", "navonlytext", "commentonlytext", "noscriptonlytext", "dataLayer"]
    for hidden in markers:
        assert hidden not in doc.text
    assert doc.text.split("\n\n") == paras


def test_html_lists_line_breaks_and_tables() -> None:
    # HTML collapses runs of spaces, so compare with the lines' spaces collapsed too.
    lines = [" ".join(line.split()) for line in topics["operator-summary"].splitlines() if line.strip()][:12]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines[:4])
    verse = "<br>".join(html.escape(line) for line in lines[4:8])
    pairs = list(zip(lines[8:10], lines[10:12], strict=True))
    cells = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in pairs)
    page = f"<ul>{items}</ul><p>{verse}</p><table>{cells}</table>"
    doc = parse_document(page.encode(), "summary.htm")
    assert doc.document_type == "htm"
    assert doc.title == "summary"
    blocks = doc.text.split("\n\n")
    assert blocks[0].split("\n") == lines[:4]
    assert blocks[1].split("\n") == lines[4:8]
    assert blocks[2].split("\n") == [f"{a} {b}" for a, b in pairs]


def test_html_without_title_uses_first_heading() -> None:
    paras = paragraphs(APACHE)
    page = make_html("", paras[0], paras[1:4]).replace("<title></title>", "")
    assert parse_document(page.encode(), "apache.html").title == paras[0]


def test_html_in_a_declared_legacy_charset() -> None:
    paras = paragraphs(UNICODE_TOPIC)
    page = make_html("Topic", paras[0], paras[1:], charset="windows-1252")
    doc = parse_document(page.encode("cp1252"), "topic.html")
    assert doc.text.split("\n\n") == paras


def test_html_with_only_script_has_no_text() -> None:
    page = "<html><head><script>" + html.escape(topics["pass"]) + "</script></head><body> </body></html>"
    with pytest.raises(DocumentParseError, match="document contains no text"):
        parse_document(page.encode(), "empty.html")


# --- json, csv, tsv -------------------------------------------------------------------------


def test_json_becomes_dotted_key_value_lines() -> None:
    names = ["assert", "pass", "del"]
    data = {
        "title": "Python language reference topics",
        "count": len(names),
        "complete": False,
        "editor": None,
        "topics": {name: {"text": topics[name], "lines": len(topics[name].splitlines())} for name in names},
        "licences": [{"name": "GPL-3", "first": first_line(GPL)}, [first_line(APACHE)]],
    }
    doc = parse_document(json.dumps(data, indent=2).encode(), "topics.json")
    assert doc.document_type == "json"
    assert doc.title == "Python language reference topics"
    blocks = doc.text.split("\n\n")
    assert blocks[0] == "title: Python language reference topics\ncount: 3\ncomplete: false\neditor: null"
    assert f"\n\ntopics.assert.text: {normalised(topics['assert'])}\ntopics.assert.lines: " in doc.text
    assert f"topics.del.lines: {len(topics['del'].splitlines())}" in doc.text
    assert blocks[-1] == (
        f"licences[0].name: GPL-3\nlicences[0].first: {first_line(GPL)}\n"
        f"licences[1][0]: {first_line(APACHE)}"
    )


def test_json_top_level_list_of_records_gives_one_paragraph_per_record() -> None:
    records = [{"topic": name, "heading": topics[name].splitlines()[0]} for name in list(topics)[:5]]
    doc = parse_document(json.dumps(records).encode(), None, "application/json")
    assert doc.title is None
    expected = [f"[{i}].topic: {r['topic']}\n[{i}].heading: {r['heading']}" for i, r in enumerate(records)]
    assert doc.text.split("\n\n") == expected


def test_json_nul_and_lone_surrogates_become_storable() -> None:
    doc = parse_document(b'{"licence": "GPL\\u0000-3", "broken": "\\ud800"}', "x.json")
    assert doc.text == "licence: GPL-3\nbroken: \ufffd"
    doc.text.encode("utf-8")


def test_invalid_json_names_line_and_column() -> None:
    text = json.dumps({"first": first_line(GPL), "second": first_line(MPL)}, indent=2)
    broken = text.replace('",\n', '"\n', 1)  # drop the comma after the first value
    with pytest.raises(DocumentParseError, match=r"invalid JSON at line 3, column 3: Expecting ',' delimiter"):
        parse_document(broken.encode(), "broken.json")


@pytest.mark.parametrize("text", ["{}", "[]", '{"licences": []}'])
def test_json_without_values_has_no_text(text: str) -> None:
    with pytest.raises(DocumentParseError, match="document contains no text"):
        parse_document(text.encode(), "empty.json")


def test_csv_rows_become_column_value_paragraphs() -> None:
    names = list(topics)[:6]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["topic", "heading", "opening"])
    for name in names:
        lines = topics[name].splitlines()
        writer.writerow([name, lines[0], " ".join(lines[3:6])])  # commas, quotes and all
    writer.writerow(["", "", ""])
    doc = parse_document(buf.getvalue().encode(), "topics.csv")
    expected = []
    for name in names:
        lines = topics[name].splitlines()
        opening = " ".join(lines[3:6]).strip()
        rows = [f"topic: {name}", f"heading: {lines[0]}"] + ([f"opening: {opening}"] if opening else [])
        expected.append("\n".join(rows))
    assert doc.text.split("\n\n") == expected
    assert doc.title == "topics"


def test_tsv_with_more_cells_than_headers() -> None:
    first = first_line(GPL)
    data = f"licence\n\tGPL-3\t{first}\n".encode()
    doc = parse_document(data, "licences.tsv")
    assert doc.text == f"column 2: GPL-3\ncolumn 3: {first}"


# --- pdf ----------------------------------------------------------------------------------


def gpl_pdf() -> tuple[bytes, list[str]]:
    paras = [latin1(p) for p in paragraphs(GPL)[:40]]
    return make_pdf(paras, title="GNU General Public License v3"), paras


def test_pdf_text_and_metadata_title() -> None:
    data, paras = gpl_pdf()
    doc = parse_document(data, "gpl.pdf", "application/pdf")
    assert doc.document_type == "pdf"
    assert doc.title == "GNU General Public License v3"
    assert words(doc.text) == words(" ".join(paras))
    assert doc.text.count("\n\n") >= 2, "pages are separated by blank lines"


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu font not installed")
def test_pdf_with_unicode_text() -> None:
    paras = paragraphs(UNICODE_TOPIC)
    doc = parse_document(make_pdf(paras, unicode_font=True), "topic.pdf")
    assert words(doc.text) == words(" ".join(paras))
    assert doc.title == "topic"  # no metadata title: the file name


def test_pdf_password_protected() -> None:
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="reader")
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 5, latin1(paragraphs(GPL)[2]))
    with pytest.raises(DocumentParseError, match="password-protected"):
        parse_document(bytes(pdf.output()), "secret.pdf")


def test_pdf_with_only_an_owner_password_is_read() -> None:
    para = latin1(paragraphs(GPL)[2])
    pdf = FPDF()
    pdf.set_encryption(owner_password="owner")
    pdf.add_page()
    pdf.set_font("Helvetica", size=10)
    pdf.multi_cell(0, 5, para)
    assert words(parse_document(bytes(pdf.output()), "restricted.pdf").text) == words(para)


def test_pdf_needing_aes_without_the_cryptography_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """pypdf reaches AES-128 only when extracting text; without `cryptography` it raises this."""
    from pypdf import PageObject
    from pypdf.errors import DependencyError

    def needs_aes(*args: object, **kwargs: object) -> str:
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PageObject, "extract_text", needs_aes)
    with pytest.raises(DocumentParseError, match="encrypted with AES"):
        parse_document(gpl_pdf()[0], "aes.pdf")


def test_pdf_without_text_may_be_scanned() -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 170, 250)
    pdf.line(20, 20, 190, 270)
    with pytest.raises(DocumentParseError, match=r"no extractable text.*scanned"):
        parse_document(bytes(pdf.output()), "scan.pdf")


@pytest.mark.parametrize("damage", ["truncated", "text with a pdf header", "not a pdf", "zeroed streams"])
def test_corrupted_pdf(damage: str) -> None:
    data, _ = gpl_pdf()
    bad = {
        "truncated": data[: len(data) // 2],
        "text with a pdf header": b"%PDF-1.7\n" + GPL.encode(),
        "not a pdf": MPL.encode(),
        "zeroed streams": data[:3000] + b"\x00" * 2000 + data[5000:],
    }[damage]
    with pytest.raises(DocumentParseError, match="PDF"):
        parse_document(bad, "damaged.pdf")


# --- docx ---------------------------------------------------------------------------------


def apache_docx(title: str | None = None) -> tuple[bytes, list[str], list[list[str]]]:
    paras = paragraphs(APACHE)[1:12]
    rows = [["Licence", "First line"]]
    rows += [[name, first_line(licence(name))] for name in ("GPL-3", "MPL-2.0", "BSD")]
    return make_docx(paragraphs(APACHE)[0], paras, rows, title=title), paras, rows


def test_docx_paragraphs_tables_and_heading_title() -> None:
    data, paras, rows = apache_docx(title="Apache License 2.0 (metadata)")
    doc = parse_document(data, "apache.docx")
    assert doc.document_type == "docx"
    assert doc.title == paragraphs(APACHE)[0]  # the first heading wins over metadata
    expected = [paragraphs(APACHE)[0], *paras, *(" | ".join(cell for cell in row if cell) for row in rows)]
    assert doc.text.split("\n\n") == expected


def test_docx_merged_cells_appear_once() -> None:
    document = docx.Document()
    document.core_properties.title = "GPL preamble"
    table = document.add_table(rows=2, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 2))
    merged.text = paragraphs(GPL)[2]
    for c, word in enumerate(paragraphs(GPL)[3].split()[:3]):
        table.cell(1, c).text = word
    buf = io.BytesIO()
    document.save(buf)
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    doc = parse_document(buf.getvalue(), None, mime)
    assert doc.title == "GPL preamble"  # no heading: the metadata title
    assert doc.text == paragraphs(GPL)[2] + "\n\n" + " | ".join(paragraphs(GPL)[3].split()[:3])


@pytest.mark.parametrize("damage", ["truncated zip", "not a zip", "zip without a document"])
def test_corrupted_docx(damage: str) -> None:
    data, _, _ = apache_docx()
    if damage == "truncated zip":
        bad = data[: len(data) // 2]
    elif damage == "not a zip":
        bad = APACHE.encode()
    else:
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("LICENSE", APACHE)
        bad = buf.getvalue()
    with pytest.raises(DocumentParseError, match=r"not a valid \.docx"):
        parse_document(bad, "apache.docx")


# --- type detection and generic errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "expected"),
    [
        ("GPL-3.TXT", None, "txt"),
        ("notes.md", "application/octet-stream", "md"),
        ("C:\\Users\\me\\Licences\\apache.DOCX", None, "docx"),
        ("report.pdf", "text/plain", "pdf"),  # the extension wins
        ("index.htm", None, "htm"),
        (None, "application/pdf", "pdf"),
        ("GPL-3", "text/plain; charset=utf-8", "txt"),
        ("licence.v2", "text/html", "html"),  # an unknown extension falls back to the MIME type
        (None, "application/ld+json", "json"),
        ("table.csv", None, "csv"),
    ],
)
def test_detect_type(filename: str | None, content_type: str | None, expected: str) -> None:
    assert detect_type(filename, content_type) == expected
    assert expected in SUPPORTED_TYPES


@pytest.mark.parametrize(
    ("filename", "content_type", "message"),
    [
        ("notes.xyz", None, r"unsupported file type '\.xyz'; supported: \.txt, \.md, .*\.pdf, \.docx"),
        ("archive.tar.gz", "application/octet-stream", r"unsupported file type '\.gz'"),
        ("legacy.doc", None, r"unsupported file type '\.doc'"),
        (None, "application/zip", r"unsupported content type 'application/zip'; supported file types: \.txt"),
        ("LICENSE", None, r"cannot tell the file type.*supported: \.txt"),
        (None, None, r"cannot tell the file type"),
    ],
)
def test_unsupported_types_say_what_is_supported(
    filename: str | None, content_type: str | None, message: str
) -> None:
    with pytest.raises(UnsupportedDocumentType, match=message):
        detect_type(filename, content_type)
    with pytest.raises(UnsupportedDocumentType, match=message):
        parse_document(GPL.encode(), filename, content_type)


@pytest.mark.timeout(60)
def test_long_runs_of_spaces_take_linear_time() -> None:
    """Regression: the trailing-space and heading patterns once rescanned a run per character."""
    spaces = " " * 2_000_000
    data = f"# {first_line(GPL)}{spaces}#\n\n{GPL}{spaces}{first_line(MPL)}{spaces}\n".encode()
    doc = parse_document(data, "gpl.md")
    assert doc.title == first_line(GPL)
    assert doc.text.endswith(f"{spaces}{first_line(MPL)}")
    assert all(line == line.rstrip() for line in doc.text.split("\n"))


def test_errors_are_value_errors() -> None:
    assert issubclass(UnsupportedDocumentType, ValueError)
    assert issubclass(DocumentParseError, ValueError)


@pytest.mark.parametrize("doc_type", SUPPORTED_TYPES)
def test_empty_file(doc_type: str) -> None:
    with pytest.raises(DocumentParseError, match="document contains no text"):
        parse_document(b"", f"empty.{doc_type}")


def test_whitespace_only_text_file() -> None:
    with pytest.raises(DocumentParseError, match="document contains no text"):
        parse_document(b" \n\t\r\n\n", "blank.txt")


def test_every_type_rejects_the_other_types_with_a_parse_error() -> None:
    """No parser may let a library exception (a 500) escape on foreign bytes."""
    pdf, _ = gpl_pdf()
    docx_bytes, _, _ = apache_docx()
    samples = {"pdf": pdf, "docx": docx_bytes, "html": make_html("t", "h", paragraphs(MPL)[:3]).encode()}
    for doc_type in SUPPORTED_TYPES:
        for source, data in samples.items():
            try:
                doc = parse_document(data, f"file.{doc_type}")
            except DocumentParseError:
                continue
            assert doc.text, (doc_type, source)  # text types may legitimately read HTML
