"""Ingestion benchmark: real documents through the HTTP API against the bare model's ceiling.

Question: how close does end-to-end ingestion (HTTP upload, auth, parse, token-aware chunking,
embedding, COPY into PostgreSQL, status updates) come to the embedding model alone on the same
chunks? Target: API chunks/s >= 95 % of the model-only ceiling.

The documents are split into ``--repeats`` rounds (default: one per 50 documents; short rounds
keep a change in the machine's load from landing on one side of a ratio only). Each round uploads
its documents through the API (``--concurrency`` uploads at a time, from a separate client
process so that the client does not compete with the server for the GIL), then embeds exactly the
chunks the server stored with the server's own model object, directly:

* ``ceiling``: one ``embed_sync`` call per document, the batches the server makes (length-sorted
  within the document, ``embedding.batch_size``), same threads, same session;
* ``pooled`` (with ``--pooled``): all of the round's chunks in one call, globally length-sorted:
  the least padding any batching could reach (for reference).

It prints per round and as medians over rounds: chunks/s for each, API / ceiling, and the share
of API wall time spent inside the model. ``--tune`` instead sweeps the model alone over batch
sizes and thread counts (interleaved rounds, medians) and measures the CPU that idle ONNX Runtime
threads burn after a query with spin-waiting on versus off.

Corpus (real text nobody here wrote, present on every machine): the Python reference topics in
``pydoc_data.topics``, Debian's ``/usr/share/doc/*/copyright`` files, and the docstrings of the
standard library's and the installed packages' modules (read with ``ast``, nothing imported).

    .venv/bin/python bench/ingest.py                       # 1,000 documents, 20 rounds (~10 min quiet)
    .venv/bin/python bench/ingest.py --documents 90 --repeats 3      # ~1-2 min smoke run
    .venv/bin/python bench/ingest.py --tune [--tune-chunks 192]      # model-only sweep
"""

from __future__ import annotations

import argparse
import ast
import glob
import multiprocessing
import os
import signal
import statistics
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkeep.config import EmbeddingConfig
from ragkeep.db.database import start_embedded
from ragkeep.embeddings.minilm import MiniLMProvider
from ragkeep.ingest.chunking import TokenChunker
from ragkeep.ingest.parsers import parse_document
from tests.support import ServerThread, make_settings, register


def python_docstrings(limit: int) -> list[tuple[str, str]]:
    """Each module's docstrings, from the standard library and the installed packages."""
    docs = []
    for root in (Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])):
        for path in sorted(root.rglob("*.py")):
            if {"test", "tests", "idlelib"} & set(path.parts) or (
                root.name != "site-packages" and "site-packages" in path.parts
            ):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            parts = [
                ast.get_docstring(node) or ""
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            ]
            text = "\n\n".join(p for p in parts if len(p) > 40)
            if len(text) > 300:
                docs.append((f"{path.relative_to(root)}.txt", text))
            if len(docs) >= limit:
                return docs
    return docs


def corpus(n: int, max_chars: int) -> list[tuple[str, str]]:
    """``n`` distinct documents, each cut to ``max_chars`` so the run stays in minutes."""
    import pydoc_data.topics

    docs = [(f"topic-{k}.txt", v) for k, v in sorted(pydoc_data.topics.topics.items())]
    docs.extend(
        (f"{Path(path).parent.name}-copyright.txt", Path(path).read_text(encoding="utf-8", errors="replace"))
        for path in sorted(glob.glob("/usr/share/doc/*/copyright"))
    )
    docs += python_docstrings(2 * n)
    # Identical licences are shipped by many packages: keep one of each, as the server would.
    seen, unique = set(), []
    for name, text in docs:
        text = text[:max_chars].strip()
        if len(text) > 300 and text not in seen:
            seen.add(text)
            unique.append((name, text))
    return unique[:n]


#: Documents uploaded and embedded before timing starts (not counted).
WARM_UP = 8


# --- the client process ---------------------------------------------------------------------


def _upload_all(base_url: str, token: str, docs: list[tuple[str, str]], concurrency: int) -> tuple[float, list[str]]:
    """Runs in a child process: wall seconds for all uploads, and the failures."""
    failures: list[str] = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=600) as client:

        def upload(doc: tuple[str, str]) -> None:
            name, text = doc
            r = client.post("/v3/documents", files={"file": (name, text.encode(), "text/plain")})
            if r.status_code >= 300:
                failures.append(f"{name}: {r.status_code} {r.text[:200]}")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(upload, docs))
        return time.perf_counter() - t0, failures


# --- end to end versus the ceiling ----------------------------------------------------------


def run(server: ServerThread, docs: list[tuple[str, str]], concurrency: int, repeats: int, pooled_too: bool) -> None:
    user = register(server.base_url, "bench")
    token = user.client.headers["Authorization"].split()[1]
    services = server.services
    embedder = services.embedder
    chunker: TokenChunker = services.ingestor.chunker
    print(
        f"model {embedder.model_name}: batch_size {embedder.batch_size}, threads {embedder.threads or 'all cores'}, "
        f"chunk_size {chunker.chunk_size} tokens, overlap {chunker.overlap}; load average {os.getloadavg()[0]:.1f}"
    )
    ctx = multiprocessing.get_context("spawn")
    warm, docs = docs[:WARM_UP], docs[WARM_UP:]
    rows: list[dict[str, float]] = []
    token_counts: list[int] = []
    with ctx.Pool(1) as client:
        # Untimed: first calls grow ONNX Runtime's arena, fill PostgreSQL's caches, open connections.
        client.apply(_upload_all, (server.base_url, token, warm, concurrency))
        for _, text in warm:
            embedder.embed_sync(chunker.chunks(text))
        for r in range(repeats):
            part = docs[r::repeats]
            busy0 = embedder.busy_seconds
            wall, failures = client.apply(_upload_all, (server.base_url, token, part, concurrency))
            busy = embedder.busy_seconds - busy0
            for f in failures[:5]:
                print("FAILED", f)
            # The very chunks the server stored: same parser, same chunker (deterministic).
            per_doc = [chunker.chunks(parse_document(t.encode(), n, "text/plain").text) for n, t in part]
            per_doc = [c for c in per_doc if c]
            n_chunks = sum(len(c) for c in per_doc)
            token_counts += chunker.count([c for chunks in per_doc for c in chunks])
            t0 = time.perf_counter()
            for chunks in per_doc:
                embedder.embed_sync(chunks)
            ceiling = time.perf_counter() - t0
            pooled = float("nan")
            if pooled_too:
                flat = [c for chunks in per_doc for c in chunks]
                t0 = time.perf_counter()
                embedder.embed_sync(flat)
                pooled = time.perf_counter() - t0
            row = {
                "docs": len(part) - len(failures),
                "chunks": n_chunks,
                "api": n_chunks / wall,
                "ceiling": n_chunks / ceiling,
                "pooled": n_chunks / pooled,
                "model_share": busy / wall,
                "wall": wall,
            }
            rows.append(row)
            print(
                f"  round {r + 1}: {row['docs']} documents, {n_chunks} chunks in {wall:.1f} s; chunks/s API "
                f"{row['api']:.2f}, ceiling {row['ceiling']:.2f}, pooled {row['pooled']:.2f}; API/ceiling "
                f"{row['api'] / row['ceiling']:.3f}; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )

    def med(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    ratio = statistics.median(row["api"] / row["ceiling"] for row in rows)
    pooled_ratio = statistics.median(row["api"] / row["pooled"] for row in rows) if pooled_too else float("nan")
    steps = dict(services.ingestor.step_seconds)
    print()
    print(f"documents ingested         {sum(int(r['docs']) for r in rows)} of {len(docs)}")
    print(
        f"chunks                     {sum(int(r['chunks']) for r in rows)}: tokens per chunk median "
        f"{statistics.median(token_counts)}, max {max(token_counts)} (window {embedder.max_tokens})"
    )
    print(f"chunks/s, API end to end   {med('api'):.2f}   "
          f"(median of {len(rows)} rounds, {concurrency} concurrent uploads)")
    print(f"chunks/s, model ceiling    {med('ceiling'):.2f}   (same chunks, same per-document batches, same threads)")
    print(f"chunks/s, model pooled     {med('pooled'):.2f}   (all of a round's chunks length-sorted together)")
    print(f"API / ceiling              {ratio:.3f}   target >= 0.95")
    print(f"API / pooled               {pooled_ratio:.3f}")
    print(f"time in model              {100 * med('model_share'):.1f} % of API wall time")
    print("step totals, seconds (overlapping across concurrent uploads):")
    for name in ("parse", "chunk", "embed", "store"):
        print(f"  {name:<8} {steps.get(name, 0.0):8.1f}")
    print(f"query cache                {embedder.query_cache_hits} hits, {embedder.query_cache_misses} misses")


# --- --tune: the model alone ----------------------------------------------------------------


def tune(docs: list[tuple[str, str]], n_chunks: int, repeats: int, batches: list[int], threads: list[int]) -> None:
    """Model-only chunks/s per (batch size, threads), interleaved rounds, medians; then spinning."""
    probe = MiniLMProvider(threads=1)
    chunker = TokenChunker(probe.tokenizer(), 256, 32)
    chunks = [c for _, t in docs for c in chunker.chunks(t)][:n_chunks]
    probe.close()
    default = EmbeddingConfig()
    configs = [(b, t) for t in threads for b in batches]
    if (default.batch_size, default.threads) not in configs:
        configs.insert(0, (default.batch_size, default.threads))
    print(f"{len(chunks)} chunks of <= 256 tokens; {repeats} interleaved rounds; load {os.getloadavg()[0]:.1f}")
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for _ in range(repeats):
        for c in configs:
            # One session at a time: each ONNX Runtime session keeps its peak memory in an arena.
            p = MiniLMProvider(threads=c[1], batch_size=c[0], query_cache_size=0)
            p.embed_sync(chunks[: c[0]])  # warm up at this batch's shape
            t0 = time.perf_counter()
            p.embed_sync(chunks)
            rates[c].append(len(chunks) / (time.perf_counter() - t0))
            p.close()
    base = statistics.median(rates[(default.batch_size, default.threads)])
    print(f"{'batch':>6} {'threads':>8} {'chunks/s':>10} {'vs default':>10}   "
          f"(default: batch_size {default.batch_size}, threads {default.threads or 'all'})")
    for c in configs:
        m = statistics.median(rates[c])
        print(f"{c[0]:>6} {c[1] or 'all':>8} {m:>10.2f} {m / base:>10.2f}")

    # Idle CPU after one query: what a spinning thread pool takes from the rest of the server.
    print("\nCPU seconds the process uses in the 1.0 s after one query (median of repeats):")
    for spin in (False, True):
        p = MiniLMProvider(threads=0, allow_spinning=spin, query_cache_size=0)
        p.embed_sync(["warm up"])
        burned = []
        for i in range(max(repeats, 3)):
            p.embed_sync([f"how do I configure the thread pool {i}"])
            c0 = time.process_time()
            time.sleep(1.0)
            burned.append(time.process_time() - c0)
        t0 = time.perf_counter()
        for i in range(20):
            p.embed_sync([f"query number {i} about interrupts"])
        per_query = (time.perf_counter() - t0) / 20
        p.close()
        print(f"  allow_spinning={'1' if spin else '0'}: {statistics.median(burned):.3f} CPU-s idle; "
              f"{1000 * per_query:.1f} ms per query")


def main() -> None:
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the embedded PostgreSQL is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=0,
                    help="rounds (API then ceiling on the same documents); 0 = one per 50 documents")
    ap.add_argument("--pooled", action="store_true", help="also embed each round's chunks all together")
    ap.add_argument("--threads", type=int, default=None,
                    help="embedding.threads for the server (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=None, help="embedding.batch_size for the server")
    ap.add_argument("--max-chars", type=int, default=3000, help="cut each document to this many characters")
    ap.add_argument("--tune", action="store_true", help="sweep batch size and threads on the model alone")
    ap.add_argument("--tune-chunks", type=int, default=192)
    ap.add_argument("--tune-batches", default="4,8,16,32,64", help="batch sizes to sweep")
    ap.add_argument("--tune-threads", default="0,1", help="intra-op thread counts to sweep (0 = all cores)")
    args = ap.parse_args()

    started = time.perf_counter()
    docs = corpus(args.documents + (0 if args.tune else WARM_UP), args.max_chars)
    print(f"corpus: {len(docs)} documents, {sum(len(t) for _, t in docs) / 1e6:.1f} MB of text")
    if args.tune:
        batches = [int(b) for b in args.tune_batches.split(",")]
        tune(docs, args.tune_chunks, args.repeats or 3, batches, [int(t) for t in args.tune_threads.split(",")])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            url, pg = start_embedded(make_settings(home / "pg", None))
            try:
                chosen = {"threads": args.threads, "batch_size": args.batch_size}
                settings = make_settings(home, url, embedding={k: v for k, v in chosen.items() if v is not None})
                server = ServerThread(settings).start()
                try:
                    run(server, docs, args.concurrency, args.repeats or max(len(docs) // 50, 3), args.pooled)
                finally:
                    server.stop()
            finally:
                pg.stop()  # type: ignore[attr-defined]
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
