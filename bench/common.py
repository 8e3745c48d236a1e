"""What the benchmark scripts share: timing a step several times, and Markdown tables.

Every number a script prints is a median over the runs it states, measured in the same run as
its peer, so that a noisy machine moves both alike (compare the ratios).
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a source checkout


def timed_runs(function, runs):
    """Seconds taken by each of ``runs`` calls of ``function()``, and its last result."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def median(times):
    return statistics.median(times)


def table(header, rows):
    """A Markdown table: ``header`` a list of column titles (a title ending in ``:`` is
    right-aligned), ``rows`` lists of cells."""
    titles = [h.rstrip(":") for h in header]
    rules = ["---:" if h.endswith(":") else "---" for h in header]
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
