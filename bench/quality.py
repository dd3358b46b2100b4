"""Retrieval quality benchmark: nDCG@10, recall@10 and MRR of full-text, semantic and hybrid search.

Question: on real documentation nobody here wrote, how good are ragkeep's three kinds of search
through the API? Target: hybrid >= semantic >= full-text on nDCG@10. Full-text is the baseline
measured in the same run; the other kinds are also printed as ratios to it.

Dataset (docs/quality.md): the reStructuredText sources of the Linux kernel documentation that
Debian ships in the package ``linux-doc-6.1``. Section headings are removed from the ingested
text and become the queries; the chunks overlapping a heading's section are its relevant set.
The package is fetched with ``apt-get download`` into ``--cache`` (outside the repository) when
missing. ``--pydoc`` runs the same construction on the Python reference topics instead (what
``tests/quality`` uses, with a subset), so the regression test's thresholds come from a run.

    .venv/bin/python bench/quality.py                    # the default subset of linux-doc (~4 min)
    .venv/bin/python bench/quality.py --dirs locking     # ~1 min smoke run
    .venv/bin/python bench/quality.py --dirs ALL         # all English documentation (hours on 2 cores)
    .venv/bin/python bench/quality.py --pydoc            # the Python reference topics
    .venv/bin/python bench/quality.py --pydoc --subset   # what tests/quality checks (~2 min)
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragkeep.db.database import start_embedded
from tests.quality.dataset import (
    PYDOC_TEST_TOPICS,
    Document,
    build_queries,
    parse_rst,
    pydoc_documents,
    relevant,
)
from tests.quality.evaluate import KINDS, evaluate, ingest
from tests.support import ServerThread, make_settings, register

PACKAGE = "linux-doc-6.1"
DOC_ROOT = Path("usr/share/doc") / PACKAGE / "Documentation"
#: Subsystems with prose documentation, ~2 MB of text: an ingestion of minutes, not hours.
DEFAULT_DIRS = "process,core-api,locking,scheduler,RCU"


def fetch(cache: Path) -> Path:
    """The unpacked package under ``cache``, downloaded with apt-get the first time."""
    root = cache / "x" / DOC_ROOT
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    print(f"fetching {PACKAGE} with apt-get download into {cache} ...", flush=True)
    subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, check=True)
    deb = sorted(cache.glob(f"{PACKAGE}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(cache / "x")], check=True)
    return root


def linux_docs(root: Path, dirs: str) -> list[Document]:
    if dirs == "ALL":
        paths = [p for p in sorted(root.rglob("*.rst.gz")) if "translations" not in p.parts]
    else:
        paths = [p for d in dirs.split(",") for p in sorted((root / d).rglob("*.rst.gz"))]
    docs = []
    for p in paths:
        text = gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace")
        doc = parse_rst(str(p.relative_to(root)).removesuffix(".gz"), text)
        if doc.text.strip():
            docs.append(doc)
    return docs


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ragkeep-bench" / PACKAGE)
    ap.add_argument("--dirs", default=DEFAULT_DIRS, help="comma-separated Documentation/ folders, or ALL")
    ap.add_argument("--pydoc", action="store_true", help="use the Python reference topics instead")
    ap.add_argument("--subset", action="store_true", help="with --pydoc: only the topics tests/quality uses")
    ap.add_argument("--max-queries", type=int, default=0, help="evaluate at most this many queries (0 = all)")
    args = ap.parse_args()

    started = time.perf_counter()
    if args.pydoc:
        docs = pydoc_documents(PYDOC_TEST_TOPICS if args.subset else None)
    else:
        docs = linux_docs(fetch(args.cache), args.dirs)
    queries = build_queries(docs)
    if args.max_queries:
        queries = queries[:: max(len(queries) // args.max_queries, 1)][: args.max_queries]
    if args.pydoc:
        source = "pydoc_data.topics" + (" (the tests/quality subset)" if args.subset else "")
    else:
        source = f"{PACKAGE} Documentation/{{{args.dirs}}}"
    print(
        f"dataset: {source}: {len(docs)} documents, {sum(len(d.text) for d in docs) / 1e6:.2f} MB of text, "
        f"{sum(len(d.sections) for d in docs)} sections, {len(queries)} queries; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        url, pg = start_embedded(make_settings(home / "pg", None))
        try:
            server = ServerThread(make_settings(home, url)).start()
            try:
                user = register(server.base_url, "quality")
                t0 = time.perf_counter()
                spans = ingest(user.client, docs)
                n_chunks = sum(len(v) for v in spans.values())
                print(f"ingested {n_chunks} chunks in {time.perf_counter() - t0:.0f} s", flush=True)
                t0 = time.perf_counter()
                results = evaluate(user.client, queries, spans)
                print(f"searched {len(queries)} queries x {len(KINDS)} kinds in {time.perf_counter() - t0:.0f} s")
            finally:
                server.stop()
        finally:
            pg.stop()  # type: ignore[attr-defined]

    sizes = [len(relevant(q, spans)) for q in queries]
    print(f"relevant chunks per query: median {statistics.median(sizes)}, max {max(sizes)}; "
          f"{sum(1 for s in sizes if s == 0)} queries with none")
    base = results["full-text"][0]
    print()
    print("| kind      | nDCG@10 | recall@10 |   MRR | nDCG / full-text | queries with a hit in top 10 |")
    print("|-----------|--------:|----------:|------:|-----------------:|-----------------------------:|")
    for kind, (m, per) in results.items():
        hits = sum(1 for s in per if s.mrr > 0)
        ratio = m.ndcg / base.ndcg if base.ndcg else float("inf")
        print(f"| {kind:<9} | {m.ndcg:7.3f} | {m.recall:9.3f} | {m.mrr:5.3f} | {ratio:16.2f} | "
              f"{hits:>4} of {len(per):<4} ({100 * hits / len(per):4.1f} %) |")
    nd = {k: v[0].ndcg for k, v in results.items()}
    verdict = "met" if nd["hybrid"] >= nd["semantic"] >= nd["full-text"] else "NOT met"
    print(f"\ntarget hybrid >= semantic >= full-text on nDCG@10: {verdict}")
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s; "
          f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
