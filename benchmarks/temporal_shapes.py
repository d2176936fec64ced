"""Temporal Shape generator throughput: clips/s per domain in memory and written to disk.

Prints one table (clips/s and the ratio to 2dot, in memory and to disk), the time of a full
5,000-clip training set for 2dot and mnist-bg.

    .venv/bin/python benchmarks/temporal_shapes.py [--num 1000] [--full 5000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KINETOSCOPE_PLAIN", "1")

from kinetoscope.synth import DOMAINS, generate_temporal_shapes, temporal_shapes  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` runs (the machine is shared; the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000, help="clips per domain for the table")
    parser.add_argument("--full", type=int, default=5000, help="clips for the full-set timing")
    args = parser.parse_args()

    for domain in DOMAINS:  # warm caches (digit pools, noise textures) so the table measures generation
        temporal_shapes(2, domain)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for domain in DOMAINS:
            memory = timed(lambda d=domain: temporal_shapes(args.num, d, seed=1), repeat=3)
            disk = timed(
                lambda d=domain: generate_temporal_shapes(
                    Path(tmp) / d, d, num=args.num, seed=1, gifs=0, overwrite=True
                ),
                repeat=2,
            )
            rows.append((domain, args.num / memory, args.num / disk))

        base_memory, base_disk = rows[0][1], rows[0][2]
        print(f"\nTemporal Shapes, {args.num} clips of 20x64x64 per domain (2 shared CPU cores)")
        print(f"{'domain':<10} {'in-memory clips/s':>18} {'ratio':>7} {'to-disk clips/s':>16} {'ratio':>7}")
        for domain, memory, disk in rows:
            print(f"{domain:<10} {memory:>18,.0f} {memory / base_memory:>7.2f} {disk:>16,.0f} {disk / base_disk:>7.2f}")

        print(f"\nFull training set, {args.full} clips to disk (generate_temporal_shapes, split=trainval):")
        for domain in ("2dot", "mnist-bg"):
            seconds = timed(
                lambda d=domain: generate_temporal_shapes(
                    Path(tmp) / f"full-{d}", d, num=args.full, split="trainval", seed=0
                )
            )
            print(f"  {domain:<9} {seconds:6.2f} s  ({args.full / seconds:,.0f} clips/s)")


if __name__ == "__main__":
    main()
