"""Unchanged rescan of a made library of edited copies (tests/integration/client/test_edited_copies.py):
how long a scan plus grouping takes when nothing changed, where stored verification verdicts matter.

Prints the first pass and the median of --repeat unchanged passes (scan walk + grouping), and how many
pairs each pass verified. Usage: bench_rescan.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration" / "client")]


def main() -> None:
    from test_edited_copies import build

    from photodedup.client.index import Index
    from photodedup.client.scan import grouping_config, load_groups, run_scan
    from photodedup.client.verify import GeometricVerifier
    from photodedup.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    verified = 0
    real = GeometricVerifier.verdict

    def counted(self: GeometricVerifier, *a: object) -> object:
        nonlocal verified
        verified += 1
        return real(self, *a)  # type: ignore[arg-type]

    GeometricVerifier.verdict = counted  # type: ignore[method-assign]
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / "lib")
        times = []
        with Index(Path(tmp) / "index.sqlite3") as index:
            for k in range(args.repeat + 1):
                verified, t0 = 0, time.perf_counter()
                summary = run_scan([str(Path(tmp) / "lib")], settings, index, mode="none", progress=False)
                load_groups(index, summary.roots, summary.model_id, grouping_config(settings))
                times.append(time.perf_counter() - t0)
                print(f"pass {k}: {times[-1]:.2f} s, {verified} pairs verified")
    print(f"first scan {times[0]:.2f} s; unchanged rescan median {statistics.median(times[1:]):.2f} s")


if __name__ == "__main__":
    main()
