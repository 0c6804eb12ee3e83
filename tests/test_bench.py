"""The benchmark suite runs end to end at its smoke size and reports every figure.

Only that it runs and what it reports are checked here, never how fast anything is: timings
on a shared CI machine prove nothing. The real figures come from ``python -m bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES = {
    "1": ["cold start"],
    "2": ["p50", "p99"],
    "3": ["requests per task", "clip on disk", "clips delivered"],
    "4": ["clips delivered", "busiest second", "RSS growth", "event loop"],
    "5": ["throughput", "peak RSS", "read back"],
    "6": ["3 workers", "with webhooks", "success", "clips delivered", "wake-up"],
}


def test_smoke_benchmark_reports_every_figure(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "smoke", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    for number, words in FIGURES.items():
        figures = " ".join(row[1] for row in rows if row[0] == f"| {number}")
        for word in words:
            assert word in figures, f"figure {number} lacks {word!r}:\n{run.stdout}"
    document = output.read_text()
    assert run.stdout.strip() in document
    assert "CPUs, Python" in document and "<!-- notes" in document
