"""Ingestion benchmark: >= 1,000 real documents through the HTTP API.

Prints documents/s, chunks/s, and where the wall time went: inside the embedding model versus
everything else (parsing, chunking, HTTP, database writes). The target is >= 80 % of wall time
in the model, i.e. the rest of the pipeline is no bottleneck. As a baseline from the same run,
it also embeds the same chunks with the bare model (same batching, same threads) and prints
API throughput as a share of that ceiling.

Corpus (real text nobody here wrote, present on every machine): the Python reference topics in
``pydoc_data.topics``, Debian's ``/usr/share/doc/*/copyright`` files, and the docstrings of the
standard library's and the installed packages' modules (read with ``ast``, nothing imported).

    .venv/bin/python bench/ingest.py [--documents 1000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import ast
import glob
import signal
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkeep.db.database import start_embedded  # noqa: E402
from ragkeep.ingest.chunking import chunk_text  # noqa: E402
from tests.support import ServerThread, make_settings, register  # noqa: E402


def python_docstrings(limit: int) -> list[tuple[str, str]]:
    """Each module's docstrings, from the standard library and the installed packages."""
    docs = []
    for root in (Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])):
        for path in sorted(root.rglob("*.py")):
            if {"test", "tests", "idlelib"} & set(path.parts) or (root.name != "site-packages" and "site-packages" in path.parts):
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
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        docs.append((f"{Path(path).parent.name}-copyright.txt", Path(path).read_text(encoding="utf-8", errors="replace")))
    docs += python_docstrings(2 * n)
    # Identical licences are shipped by many packages: keep one of each, as the server would.
    seen, unique = set(), []
    for name, text in docs:
        text = text[:max_chars].strip()
        if len(text) > 300 and text not in seen:
            seen.add(text)
            unique.append((name, text))
    return unique[:n]


def main() -> None:
    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the embedded PostgreSQL is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-chars", type=int, default=3000, help="cut each document to this many characters")
    args = ap.parse_args()

    docs = corpus(args.documents, args.max_chars)
    print(f"corpus: {len(docs)} documents, {sum(len(t) for _, t in docs) / 1e6:.1f} MB of text")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url, pg = start_embedded(make_settings(home / "pg", None))
        try:
            settings = make_settings(home, url)
            server = ServerThread(settings).start()
            try:
                run(server, settings, docs, args.concurrency)
            finally:
                server.stop()
        finally:
            pg.stop()  # type: ignore[attr-defined]


def run(server: ServerThread, settings, docs: list[tuple[str, str]], concurrency: int) -> None:  # type: ignore[no-untyped-def]
    user = register(server.base_url, "bench")
    services = server.services
    embedder = services.embedder
    ingestor = services.ingestor
    failures: list[str] = []

    def upload(doc: tuple[str, str]) -> None:
        name, text = doc
        r = user.client.post("/v3/documents", files={"file": (name, text.encode(), "text/plain")})
        if r.status_code >= 300:
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")

    busy0 = embedder.busy_seconds
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for i, _ in enumerate(pool.map(upload, docs), 1):
            if i % 100 == 0:
                print(f"  {i}/{len(docs)} documents, {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    busy = embedder.busy_seconds - busy0
    with httpx.Client(base_url=server.base_url, headers=user.client.headers) as c:
        total_chunks = sum(
            d["chunk_count"]
            for offset in range(0, len(docs), 1000)
            for d in c.get("/v3/documents", params={"limit": 1000, "offset": offset}).json()["results"]
        )

    # Baseline in the same run: the bare model on the same chunks, same batching and threads.
    cfg = settings.ingestion
    chunks = [c for _, text in docs for c in chunk_text(text, cfg.chunk_size, cfg.chunk_overlap)]
    t1 = time.perf_counter()
    for i in range(0, len(chunks), 256):
        embedder.embed_sync(chunks[i : i + 256])
    ceiling = time.perf_counter() - t1

    steps = dict(ingestor.step_seconds)
    print()
    print(f"documents ingested      {len(docs) - len(failures)} ({len(failures)} failed)")
    print(f"chunks                  {total_chunks} (bare-model baseline embedded {len(chunks)})")
    print(f"wall time               {wall:.1f} s with {concurrency} concurrent uploads")
    print(f"documents/s             {(len(docs) - len(failures)) / wall:.1f}")
    print(f"chunks/s (API)          {total_chunks / wall:.1f}")
    print(f"chunks/s (bare model)   {len(chunks) / ceiling:.1f}")
    print(f"API / bare model        {total_chunks / wall / (len(chunks) / ceiling):.2f}")
    print(f"time in model           {busy:.1f} s = {100 * busy / wall:.1f} % of wall time (target >= 80 %)")
    print("step totals (overlapping across concurrent uploads):")
    for name in ("parse", "chunk", "embed", "store"):
        print(f"  {name:<8} {steps.get(name, 0.0):8.1f} s")
    print(f"  other (HTTP, auth, claims, status updates) = wall - model = {wall - busy:.1f} s")
    for f in failures[:10]:
        print("FAILED", f)


if __name__ == "__main__":
    main()
