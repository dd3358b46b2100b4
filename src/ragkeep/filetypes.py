"""Which files ragkeep can ingest: the supported types, and a file's type from its name or MIME type.

A leaf (no ragkeep imports, no parser libraries): the server's upload route and parsers use it, and
so does the CLI, to skip unsupported files before uploading them, without loading the parsers.
"""

from __future__ import annotations

from pathlib import PurePosixPath

__all__ = ["SUPPORTED_TYPES", "UnsupportedDocumentType", "detect_type"]

SUPPORTED_TYPES: tuple[str, ...] = ("txt", "md", "html", "htm", "json", "csv", "tsv", "pdf", "docx")

#: Other spellings of a supported extension.
_ALIASES = {"markdown": "md", "text": "txt"}

_MIME_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "text/json": "json",
    "text/csv": "csv",
    "application/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}

class UnsupportedDocumentType(ValueError):
    """The file's type is not one ragkeep can parse (HTTP 415/400)."""


def _supported_list() -> str:
    return ", ".join(f".{t}" for t in SUPPORTED_TYPES)


def _extension(filename: str | None) -> str:
    if not filename:
        return ""
    # Browsers on Windows have been known to send the full client path.
    return PurePosixPath(filename.replace("\\", "/")).suffix.lower().lstrip(".")


def detect_type(filename: str | None, content_type: str | None) -> str:
    """Pick the parser from the file's extension, falling back to its MIME type.

    The extension wins because clients routinely send ``application/octet-stream`` or a
    guessed MIME type, while the name is what the user chose.
    """
    ext = _extension(filename)
    ext = _ALIASES.get(ext, ext)
    if ext in SUPPORTED_TYPES:
        return ext
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in _MIME_TYPES:
        return _MIME_TYPES[mime]
    if mime.endswith("+json"):
        return "json"
    if ext:
        raise UnsupportedDocumentType(f"unsupported file type '.{ext}'; supported: {_supported_list()}")
    if mime and mime != "application/octet-stream":
        raise UnsupportedDocumentType(
            f"unsupported content type '{mime}'; supported file types: {_supported_list()}"
        )
    raise UnsupportedDocumentType(
        "cannot tell the file type: give the file name an extension or send a content type; "
        f"supported: {_supported_list()}"
    )
