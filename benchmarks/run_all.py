"""Regenerate every table in docs/BENCHMARKS.md: run each benchmark script in turn (`make bench`).

Add a script by appending it to SCRIPTS. A failing script does not stop the others; the exit status
says whether all of them succeeded. bench_quality.py is not listed: it needs system packages (apt).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

# (script, extra arguments), run in this order.
SCRIPTS: list[tuple[str, list[str]]] = [
    ("bench_engines.py", []),
    ("bench_served.py", []),
    ("bench_ann.py", []),
    ("bench_scan.py", []),
    ("bench_library.py", []),
    ("bench_review.py", []),
    ("bench_scheduling.py", []),
]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    failed: list[str] = []
    for script, extra in SCRIPTS:
        start = time.monotonic()
        log.info("running %s %s", script, " ".join(extra))
        code = subprocess.call([sys.executable, str(HERE / script), *extra])
        log.info("%s finished with %d in %.0f s", script, code, time.monotonic() - start)
        if code != 0:
            failed.append(script)
    if failed:
        log.error("failed: %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
